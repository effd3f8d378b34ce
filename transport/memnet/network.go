package memnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// DefaultQueueLen is how many datagrams a Conn's receive queue holds unless
// SetQueueLen says otherwise.
const DefaultQueueLen = 1024

// batchSize is what Conn.BatchSize reports, as transport/udp's default.
const batchSize = 64

// Ephemeral ports (RFC 6335) that Listen on port 0 and Rebind pick from.
const (
	ephemeralFirst = 49152
	ephemeralCount = 65536 - ephemeralFirst
)

// Stats counts what a Network did with datagrams. Every datagram that was
// sent, and every duplicate, ends up in exactly one of Delivered, Lost,
// DroppedQueueFull, DroppedNoListener and DroppedFiltered, or is still
// InFlight.
type Stats struct {
	// Sent counts datagrams accepted by WriteTo and WriteBatch.
	Sent uint64
	// Delivered counts datagrams (duplicates included) put in a receive
	// queue.
	Delivered uint64
	// Lost counts datagrams dropped by LinkConfig.Loss.
	Lost uint64
	// Duplicated counts the extra copies made by LinkConfig.Duplicate.
	Duplicated uint64
	// Reordered counts copies held back by LinkConfig.Reorder.
	Reordered uint64
	// DroppedQueueFull counts datagrams that arrived at a full receive
	// queue.
	DroppedQueueFull uint64
	// DroppedNoListener counts datagrams that arrived at an address no
	// Conn is reachable at.
	DroppedNoListener uint64
	// DroppedFiltered counts datagrams a NAT dropped: arriving at its
	// public address without a live mapping or refused by its filtering,
	// sent to its own public address from inside when it does not
	// hairpin, or sent out when it had no free port or to another address
	// family.
	DroppedFiltered uint64
	// InFlight is how many datagrams are delayed and have not arrived yet.
	InFlight uint64
}

// Network is an in-memory network of Conns. Its methods may be called
// concurrently.
type Network struct {
	// mu guards the following.
	mu       sync.Mutex
	rng      *rand.Rand
	closed   bool
	defLink  LinkConfig
	links    map[hostPair]LinkConfig
	bound    map[netip.AddrPort]*Conn // by LocalAddr
	routes   map[netip.AddrPort]*Conn // by public address
	nats     map[netip.Addr]*NAT      // by public IP; nil until NewNAT
	queueLen int                      // for new Conns
	flights  flightHeap
	seq      uint64
	paths    map[path]pathState // paths with in-order datagrams in flight
	timer    *time.Timer        // created on the first delayed datagram
	timerAt  time.Time          // when timer fires; zero when not armed
	stats    Stats

	// freeMu guards free. It nests inside mu and inside no other lock.
	freeMu sync.Mutex
	free   []*buffer
}

// New returns an empty Network whose random decisions all come from a PCG
// generator seeded with seed. Its default link is perfect.
func New(seed uint64) *Network {
	return &Network{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		links:    make(map[hostPair]LinkConfig),
		bound:    make(map[netip.AddrPort]*Conn),
		routes:   make(map[netip.AddrPort]*Conn),
		paths:    make(map[path]pathState),
		queueLen: DefaultQueueLen,
	}
}

// SetDefaultLink sets the link between hosts that SetLink has not named.
// It applies to datagrams sent afterwards. An invalid cfg is an error and
// changes nothing.
func (n *Network) SetDefaultLink(cfg LinkConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	n.mu.Lock()
	n.defLink = cfg
	n.mu.Unlock()
	return nil
}

// SetLink sets the link between hosts a and b, in both directions (a may
// equal b). It applies to datagrams sent afterwards. An invalid cfg is an
// error and changes nothing.
func (n *Network) SetLink(a, b netip.Addr, cfg LinkConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w (link %v-%v)", err, a, b)
	}
	n.mu.Lock()
	n.links[makeHostPair(a.Unmap(), b.Unmap())] = cfg
	n.mu.Unlock()
	return nil
}

// SetQueueLen sets how many datagrams the receive queue of each Conn
// created afterwards holds; Conn.SetQueueLen changes one Conn.
func (n *Network) SetQueueLen(datagrams int) error {
	if datagrams < 1 {
		return fmt.Errorf("memnet: queue length %d not positive", datagrams)
	}
	n.mu.Lock()
	n.queueLen = datagrams
	n.mu.Unlock()
	return nil
}

// Stats returns the counters so far.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stats
	s.InFlight = uint64(len(n.flights))
	return s
}

// Listen returns a Conn bound to addr on the public network. Port 0 picks
// a free ephemeral port with the network's generator. The address must be
// a specific IPv4 or IPv6 address; an address in use, or a NAT's public
// address, is an error wrapping ErrAddrInUse.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	return n.listen(nil, addr)
}

// listen binds a Conn to addr in realm: behind that NAT, or on the public
// network when realm is nil.
func (n *Network) listen(realm *NAT, addr netip.AddrPort) (*Conn, error) {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		return nil, fmt.Errorf("memnet: listen %v: need a specific IP address", addr)
	}
	ap := netip.AddrPortFrom(ip, addr.Port())
	if realm != nil && (ip == realm.public || ip.Is4() != realm.public.Is4()) {
		return nil, fmt.Errorf("memnet: listen %v: need a private address of the family of NAT %v, other than it", ap, realm.public)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("memnet: listen %v: %w", ap, errClosed)
	}
	if realm == nil && n.nats[ip] != nil {
		return nil, fmt.Errorf("memnet: listen %v: a NAT's public address: %w", ap, ErrAddrInUse)
	}
	if ap.Port() == 0 {
		p, ok := n.pickPort(realm, ip)
		if !ok {
			return nil, fmt.Errorf("memnet: listen %v: %w", ap, ErrNoFreePort)
		}
		ap = p
	} else if n.taken(realm, ap) {
		return nil, fmt.Errorf("memnet: listen %v: %w", ap, ErrAddrInUse)
	}
	c := &Conn{net: n, nat: realm, local: ap, limit: n.queueLen}
	c.cond.L = &c.mu
	if realm != nil {
		realm.lan[ap] = c
		realm.hosts[ip] = struct{}{}
		return c, nil
	}
	c.public = ap
	n.bound[ap] = c
	n.routes[ap] = c
	return c, nil
}

// Close closes every Conn and drops the datagrams in flight. Listen on a
// closed Network fails.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	n.closed = true
	for _, c := range n.bound {
		c.closeLocked()
	}
	for _, nat := range n.nats {
		for _, c := range nat.lan {
			c.closeLocked()
		}
	}
	if n.timer != nil {
		n.timer.Stop()
		n.timerAt = time.Time{}
	}
	for len(n.flights) > 0 {
		n.putBuf(n.flights.pop().pkt.buf)
	}
	clear(n.paths)
	return nil
}

// taken reports whether ap is in use in realm: bound behind that NAT, or,
// on the public network (realm nil), bound or a public address. n.mu is
// held.
func (n *Network) taken(realm *NAT, ap netip.AddrPort) bool {
	if realm != nil {
		return realm.lan[ap] != nil
	}
	return n.bound[ap] != nil || n.routes[ap] != nil
}

// pickPort returns a free ephemeral address on ip in realm: a random port,
// then the next free one after it. n.mu is held.
func (n *Network) pickPort(realm *NAT, ip netip.Addr) (netip.AddrPort, bool) {
	start := n.rng.IntN(ephemeralCount)
	for i := range ephemeralCount {
		ap := netip.AddrPortFrom(ip, uint16(ephemeralFirst+(start+i)%ephemeralCount))
		if !n.taken(realm, ap) {
			return ap, true
		}
	}
	return netip.AddrPort{}, false
}

// link returns the configuration between hosts a and b. n.mu is held.
func (n *Network) link(a, b netip.Addr) LinkConfig {
	if len(n.links) > 0 {
		if l, ok := n.links[makeHostPair(a, b)]; ok {
			return l
		}
	}
	return n.defLink
}

// clock reads time.Now at most once per batch, and only for delayed
// datagrams.
type clock struct {
	t  time.Time
	ok bool
}

func (c *clock) now() time.Time {
	if !c.ok {
		c.t, c.ok = time.Now(), true
	}
	return c.t
}

// send puts b from c on its way to dst. n.mu is held.
func (n *Network) send(c *Conn, b []byte, dst netip.AddrPort, clk *clock) {
	n.stats.Sent++
	src, realm := c.public, (*NAT)(nil)
	if c.nat != nil {
		var ok bool
		if src, realm, ok = c.nat.route(c, dst, clk); !ok {
			n.stats.DroppedFiltered++
			return
		}
	}
	l := n.link(src.Addr(), dst.Addr())
	if l.Loss > 0 && n.rng.Float64() < l.Loss {
		n.stats.Lost++
		return
	}
	copies := 1
	if l.Duplicate > 0 && n.rng.Float64() < l.Duplicate {
		n.stats.Duplicated++
		copies = 2
	}
	for range copies {
		n.schedule(&l, realm, src, dst, b, clk)
	}
}

// schedule delivers one copy of b now or at its arrival time, to dst in
// realm (see NAT.route). n.mu is held.
func (n *Network) schedule(l *LinkConfig, realm *NAT, src, dst netip.AddrPort, b []byte, clk *clock) {
	delay := l.Latency
	if l.Jitter > 0 {
		delay += time.Duration(n.rng.Int64N(int64(l.Jitter) + 1))
	}
	reordered := l.Reorder > 0 && n.rng.Float64() < l.Reorder

	p := packet{buf: n.getBuf(), n: len(b), from: src}
	copy(p.buf[:], b)

	if reordered {
		n.stats.Reordered++
		n.enqueueFlight(flight{at: clk.now().Add(delay + l.reorderDelay()), realm: realm, to: dst, pkt: p}, clk)
		return
	}
	// In-order datagrams queue behind earlier ones on the same path.
	k := path{realm, src.Addr(), dst.Addr()}
	var st pathState
	var busy bool
	if len(n.paths) > 0 {
		st, busy = n.paths[k]
	}
	if delay == 0 && !busy {
		n.deliver(realm, dst, p, clk)
		return
	}
	at := clk.now().Add(delay)
	if busy && st.last.After(at) {
		at = st.last
	}
	st.last = at
	st.pending++
	n.paths[k] = st
	n.enqueueFlight(flight{at: at, realm: realm, to: dst, pkt: p, inOrder: true}, clk)
}

// enqueueFlight adds f to the heap and arms the timer if f is due first.
// n.mu is held.
func (n *Network) enqueueFlight(f flight, clk *clock) {
	f.seq = n.seq
	n.seq++
	n.flights.push(f)
	if n.timerAt.IsZero() || f.at.Before(n.timerAt) {
		n.arm(f.at, clk.now())
	}
}

// arm sets the timer to fire at at. n.mu is held.
func (n *Network) arm(at, now time.Time) {
	d := at.Sub(now)
	if n.timer == nil {
		n.timer = time.AfterFunc(d, n.fire)
	} else {
		n.timer.Reset(d)
	}
	n.timerAt = at
}

// fire delivers every datagram that is due and re-arms the timer for the
// next. A late or extra call is harmless.
func (n *Network) fire() {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	clk := clock{now, true}
	for len(n.flights) > 0 && !n.flights[0].at.After(now) {
		f := n.flights.pop()
		if f.inOrder {
			k := path{f.realm, f.pkt.from.Addr(), f.to.Addr()}
			if st := n.paths[k]; st.pending <= 1 {
				delete(n.paths, k)
			} else {
				st.pending--
				n.paths[k] = st
			}
		}
		n.deliver(f.realm, f.to, f.pkt, &clk)
	}
	n.timerAt = time.Time{}
	if len(n.flights) > 0 {
		n.arm(n.flights[0].at, now)
	}
}

// deliver hands p to the Conn reachable at dst in realm (see NAT.route),
// or drops it. n.mu is held.
func (n *Network) deliver(realm *NAT, dst netip.AddrPort, p packet, clk *clock) {
	var c *Conn
	if realm == nil {
		c = n.routes[dst]
		// Only a miss or a Conn behind a NAT pays for the NAT checks.
		if c == nil && len(n.nats) > 0 && n.nats[dst.Addr()] != nil ||
			c != nil && c.nat != nil && !c.nat.admits(dst, p.from, clk.now()) {
			n.stats.DroppedFiltered++
			n.putBuf(p.buf)
			return
		}
	} else {
		c = realm.lan[dst]
	}
	if c == nil {
		n.stats.DroppedNoListener++
		n.putBuf(p.buf)
		return
	}
	if !c.enqueue(p) {
		n.stats.DroppedQueueFull++
		n.putBuf(p.buf)
		return
	}
	n.stats.Delivered++
}

// getBuf takes a buffer from the free list or allocates one.
func (n *Network) getBuf() *buffer {
	n.freeMu.Lock()
	if k := len(n.free); k > 0 {
		b := n.free[k-1]
		n.free[k-1] = nil
		n.free = n.free[:k-1]
		n.freeMu.Unlock()
		return b
	}
	n.freeMu.Unlock()
	return new(buffer)
}

// putBuf returns b to the free list, or leaves it to the garbage collector
// when the list is full.
func (n *Network) putBuf(b *buffer) {
	n.freeMu.Lock()
	if len(n.free) < maxFree {
		n.free = append(n.free, b)
	}
	n.freeMu.Unlock()
}

// putPackets returns the buffers of ps to the free list.
func (n *Network) putPackets(ps []packet) {
	n.freeMu.Lock()
	for _, p := range ps {
		if len(n.free) >= maxFree {
			break
		}
		n.free = append(n.free, p.buf)
	}
	n.freeMu.Unlock()
}
