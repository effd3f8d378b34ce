package overlay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
)

// Errors returned by a Node.
var (
	ErrClosed  = errors.New("overlay: node closed")
	ErrNoRoute = errors.New("overlay: no route: no node with that address is reachable from here")
)

// Message is a routed message delivered to a Handler.
type Message struct {
	Header
	// Payload is valid only during the handler call.
	Payload []byte
	// From is the neighbour that handed the message over (the zero
	// Address for a message this node sent to itself).
	From Address
}

// Handler receives messages of one type addressed to this node. It runs
// on a link's reader goroutine and must not block.
type Handler func(m *Message)

// Node is one member of the ring. Create it with New, then Start it.
type Node struct {
	// immutable after New
	self     *security.Member
	addr     Address
	linker   Linker
	cfg      Config
	log      *zap.Logger
	started  time.Time
	closed   chan struct{}
	wake     chan struct{}
	handlers [256]atomic.Pointer[Handler]
	// dataHandler receives data packets (see SendData).
	dataHandler atomic.Pointer[DataHandler]

	// routes is the routing snapshot: every linked peer, rebuilt under
	// mu when the table changes, read without locks on the packet path.
	routes atomic.Pointer[[]*peer]
	// typicalRTT (ns, median over links) and sizeBits (estimated N as
	// float64 bits) feed proximity route selection; set by the maintainers.
	typicalRTT atomic.Int64
	sizeBits   atomic.Uint64
	stats      counters
	bcast      broadcaster
	relays     atomic.Pointer[Pipes] // routed pipes for relayed links, once NewPipes ran
	wg         sync.WaitGroup

	// mu guards the following
	mu       sync.Mutex
	isClosed bool
	peers    map[Address]*peer
	known    map[Address]*knownNode
	pending  map[Address]*attempt
	waiting  map[uint64]chan connect // lookups and echoes awaiting a reply
	coord    Coord
	rng      *rand.Rand
	nextID   uint64
	tick     uint64
	farBusy  bool
	joinBusy bool
	lastJoin time.Duration // when the last self-lookup started
	lastFar  time.Duration
	farGoal  int
	sizeEst  float64
	observed map[Address]observation // where each linked peer sees us (nat.go)
}

// peer is one linked neighbour.
type peer struct {
	// immutable after addLink
	link   Link
	member *security.Member
	addr   Address
	since  time.Time
	// via is the relay a link over a routed pipe goes through (relay.go);
	// zero for a direct link.
	via Address

	lastHeard atomic.Int64 // node clock, ns
	// retiring: neither side keeps the link; trim closes it after a drain
	// period, so what is in flight on it still arrives.
	retiring atomic.Bool
	rtt      atomic.Int64 // smoothed, ns; 0 until measured
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	msgsIn   atomic.Uint64
	msgsOut  atomic.Uint64

	// Node.mu guards the following
	kinds     Kind // why we keep the link
	peerKinds Kind // why the peer keeps it (from its pings)
	coord     Coord
	endpoints []netip.AddrPort
	lastPing  time.Duration
	retireAt  time.Duration // node clock when retiring was set
	directTry time.Duration // relayed: when a direct link was last tried
}

// knownNode is a node we have heard of but may not be linked to.
type knownNode struct {
	info NodeInfo
	// via is a node linked to it (the neighbour whose list named it, or
	// the lookup's responder): messages to it go through via, because
	// until the ring around us is right, greedy routing may not reach it.
	via        Address
	seen       time.Duration // node clock
	failedAt   time.Duration
	failures   int
	fromLookup bool
}

// attempt is a connection attempt under way.
type attempt struct {
	kinds    Kind
	id       uint64
	deadline time.Duration
	dialing  bool
	near     []Address // the peer's neighbours, from its answer: relay candidates
}

type counters struct {
	malformed, ttlExpired, noRoute, unknownType, forwarded, delivered, sendFailed, knownFull, refused, broadcastDropped atomic.Uint64
	relayed                                                                                                             atomic.Uint64
}

// linkEnded reports whether l is closed (as opposed to refusing one
// message, say for its size).
func linkEnded(l Link) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// MaxMessage bounds a message, header included: what one link packet
// carries.
const MaxMessage = security.MaxPayload

// New creates a node that reaches its peers through linker; self is the
// node's own verified identity. The node owns linker from now on.
func New(self *security.Member, linker Linker, cfg Config, log *zap.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if self == nil || self.Address.IsZero() {
		return nil, errors.New("overlay: node needs an identity with an address")
	}
	n := &Node{
		self:     self,
		addr:     self.Address,
		linker:   linker,
		cfg:      cfg,
		log:      log.Named("overlay").With(zap.String("node", self.Name)),
		started:  time.Now(),
		closed:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
		peers:    make(map[Address]*peer),
		known:    make(map[Address]*knownNode),
		pending:  make(map[Address]*attempt),
		waiting:  make(map[uint64]chan connect),
		observed: make(map[Address]observation),
		coord:    newCoord(),
		rng:      rand.New(rand.NewPCG(addrSeed(self.Address), uint64(time.Now().UnixNano()))),
	}
	empty := []*peer{}
	n.routes.Store(&empty)
	n.Handle(TypeLookup, n.onLookup)
	n.Handle(TypeLookupReply, n.onReply)
	n.Handle(TypeConnect, n.onConnect)
	n.Handle(TypeConnectReply, n.onConnectReply)
	n.Handle(TypeEcho, n.onEcho)
	n.Handle(TypeEchoReply, n.onReply)
	n.Handle(TypeUnreachable, n.onUnreachable)
	return n, nil
}

func addrSeed(a Address) uint64 {
	var s uint64
	for _, b := range a[:8] {
		s = s<<8 | uint64(b)
	}
	return s
}

// Done is closed when the node closes; services on the node (the DHT,
// the VPN) stop with it.
func (n *Node) Done() <-chan struct{} { return n.closed }

// Address is the node's overlay address.
func (n *Node) Address() Address { return n.addr }

// Self is the node's identity.
func (n *Node) Self() *security.Member { return n.self }

// Handle installs the handler of message type t (replacing any). Types
// 0x40 and above are for the layers above the ring.
func (n *Node) Handle(t Type, h Handler) {
	if h == nil {
		n.handlers[t].Store(nil)
		return
	}
	n.handlers[t].Store(&h)
}

// Start accepts links and starts the maintainers, which join the ring
// through the bootstrap peers.
func (n *Node) Start() {
	n.spawn(n.acceptLoop)
	n.spawn(n.maintainLoop)
}

// Close leaves the ring: links are closed (peers are told) and every
// goroutine of the node ends.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return nil
	}
	n.isClosed = true
	close(n.closed)
	peers := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		peers = append(peers, p)
	}
	n.peers = map[Address]*peer{}
	n.rebuildRoutes()
	n.mu.Unlock()
	for _, p := range peers {
		p.link.Close()
	}
	err := n.linker.Close()
	n.wg.Wait()
	return err
}

// spawn runs f on a goroutine Close waits for; false once closed.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// now is the node's monotonic clock.
func (n *Node) now() time.Duration { return time.Since(n.started) }

func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *Node) acceptLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.closed
		cancel()
	}()
	for {
		l, err := n.linker.Accept(ctx)
		if err != nil {
			return
		}
		n.addLink(l, 0)
	}
}

// addLink puts a new direct link in the table, keeping one link per
// peer.
func (n *Node) addLink(l Link, kinds Kind) { n.addLinkVia(l, kinds, Address{}) }

// addLinkVia puts a new link in the table: a relayed one when via is not
// zero.
func (n *Node) addLinkVia(l Link, kinds Kind, via Address) {
	m := l.Peer()
	if m == nil || m.Address == n.addr {
		l.Close()
		return
	}
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		l.Close()
		return
	}
	var retired Link
	old := n.peers[m.Address]
	if old != nil {
		if old.link == l {
			old.kinds |= kinds
			n.mu.Unlock()
			return
		}
		if !n.preferNew(old, l, via) {
			old.kinds |= kinds
			n.mu.Unlock()
			l.Close()
			return
		}
		retired = old.link
		kinds |= old.kinds
	}
	p := &peer{link: l, member: m, addr: m.Address, since: time.Now(), kinds: kinds, via: via, directTry: n.now()}
	if old != nil {
		p.peerKinds, p.coord, p.endpoints = old.peerKinds, old.coord, old.endpoints
		p.rtt.Store(old.rtt.Load())
	}
	if a := n.pending[m.Address]; a != nil {
		p.kinds |= a.kinds
		delete(n.pending, m.Address)
	}
	if k := n.known[m.Address]; k != nil {
		p.endpoints = k.info.Endpoints
		k.failures = 0
	}
	p.lastHeard.Store(int64(n.now()))
	n.peers[m.Address] = p
	n.rebuildRoutes()
	n.mu.Unlock()
	l.SetHandler(func(pkt []byte) { n.receive(p, pkt) })
	if retired != nil {
		retired.Close()
	}
	n.log.Debug("link up", zap.Stringer("peer", m.Address), zap.String("name", m.Name),
		zap.Stringer("addr", l.Remote()), zap.Bool("dialed", l.Dialed()), zap.Stringer("kinds", kinds),
		zap.Stringer("via", via))
	n.sendPing(p)
	n.poke()
}

// preferNew decides between two links to one peer the same way on both
// sides: a direct link beats a relayed one; otherwise the link dialed by
// the smaller address wins; between two dialed by the same side, the
// newer one (the older is presumably dead).
func (n *Node) preferNew(old *peer, l Link, via Address) bool {
	select {
	case <-old.link.Done():
		return true
	default:
	}
	if oldRelayed, newRelayed := !old.via.IsZero(), !via.IsZero(); oldRelayed != newRelayed {
		return oldRelayed
	}
	smallerDials := n.addr.Compare(l.Peer().Address) < 0 // we are smaller: we should dial
	oldOK := old.link.Dialed() == smallerDials
	newOK := l.Dialed() == smallerDials
	if oldOK != newOK {
		return newOK
	}
	return true
}

// removePeer drops p from the table if it is still there. A peer that
// was lost (not trimmed) is not dialed again for a while, even if other
// nodes still name it before they notice it is gone.
func (n *Node) removePeer(p *peer, why string) {
	n.mu.Lock()
	cur := n.peers[p.addr]
	if cur == p {
		delete(n.peers, p.addr)
		delete(n.observed, p.addr)
		n.rebuildRoutes()
		if why != reasonTrimmed {
			k := n.known[p.addr]
			if k == nil {
				k = &knownNode{info: NodeInfo{Address: p.addr}, seen: n.now()}
				n.known[p.addr] = k
			}
			k.failures++
			k.failedAt = n.now()
		}
	}
	n.mu.Unlock()
	p.link.Close()
	if cur == p {
		n.log.Debug("link down", zap.Stringer("peer", p.addr), zap.String("name", p.member.Name), zap.String("reason", why))
		n.poke()
	}
}

// rebuildRoutes publishes a new routing snapshot; n.mu must be held.
func (n *Node) rebuildRoutes() {
	s := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		s = append(s, p)
	}
	n.routes.Store(&s)
}

// receive handles one packet from p.
func (n *Node) receive(p *peer, pkt []byte) {
	p.lastHeard.Store(int64(n.now()))
	p.msgsIn.Add(1)
	p.bytesIn.Add(uint64(len(pkt)))
	if len(pkt) > 0 && pkt[0] == dataMarker {
		n.receiveData(p, pkt)
		return
	}
	h, payload, err := ParseHeader(pkt)
	if err != nil {
		n.stats.malformed.Add(1)
		return
	}
	if h.Type.LinkLocal() {
		n.onLinkLocal(p, &h, payload)
		return
	}
	if h.Type == TypeBroadcast {
		n.onBroadcast(p, pkt, &h, payload)
		return
	}
	n.dispatch(pkt, &h, payload, p)
}

// dispatch delivers or forwards one routed message; msg holds the header
// and payload and may be modified in place (TTL, hops, flags).
func (n *Node) dispatch(msg []byte, h *Header, payload []byte, from *peer) error {
	for {
		target, exact, exclude := h.Dst, h.Flags&FlagClosest == 0, h.Flags&FlagExcludeSource != 0
		if h.Flags&FlagVia != 0 && h.Flags&FlagViaReached == 0 {
			if h.Via == n.addr {
				h.Flags |= FlagViaReached
				msg[2] = byte(h.Flags)
			} else {
				target, exact, exclude = h.Via, true, false
			}
		}
		origin := from == nil && h.Src == n.addr
		next := n.nextHop(target, h.Src, exclude, origin, h.Type == TypePipe)
		if next == nil {
			if target == n.addr || (!exact && !(exclude && origin)) {
				n.deliver(h, payload, from)
				return nil
			}
			n.stats.noRoute.Add(1)
			if h.Type == TypeConnect && from != nil {
				// Tell the requester at once rather than let its attempt
				// time out: the node may still be joining.
				n.Route(h.Src, 0, TypeUnreachable, h.Dst[:])
			}
			return ErrNoRoute
		}
		if from != nil {
			if h.TTL <= 1 {
				n.stats.ttlExpired.Add(1)
				return nil
			}
			h.TTL--
			h.Hops++
			msg[3], msg[4] = h.TTL, h.Hops
		}
		if err := next.link.Send(msg); err != nil {
			if !linkEnded(next.link) {
				n.stats.sendFailed.Add(1) // this message only
				return err
			}
			// The link is gone: route around it at once.
			n.removePeer(next, err.Error())
			if from != nil { // undo, and try the next best neighbour
				h.TTL++
				h.Hops--
				msg[3], msg[4] = h.TTL, h.Hops
			}
			continue
		}
		next.msgsOut.Add(1)
		next.bytesOut.Add(uint64(len(msg)))
		if from != nil {
			n.stats.forwarded.Add(1)
		}
		return nil
	}
}

// nextHop returns the neighbour to forward to, or nil when this node is
// the closest to target. Only neighbours strictly closer to target than
// this node are candidates (so a message cannot loop: every hop nears the
// target); among them greedy routing takes the closest, and with
// Proximity the one with the lowest predicted cost: its RTT plus a typical
// hop's RTT per hop still to go from it. With exclude, src is not a
// candidate, and at the origin itself this node is not either. With
// direct, relayed links are not candidates: a routed pipe's records
// never travel inside another routed pipe, so relays can't nest or loop.
func (n *Node) nextHop(target, src Address, exclude, origin, direct bool) *peer {
	// A retiring link (neither side keeps it; trim closes it soon) is
	// taken only when no other link makes progress: both ends stop
	// sending on it before it closes, so nothing is in flight when it
	// does.
	var best, retiring *peer
	var bestD, retiringD Address
	peers := *n.routes.Load()
	for _, p := range peers {
		if (exclude && p.addr == src) || (direct && !p.via.IsZero()) {
			continue
		}
		if p.addr == target {
			return p
		}
		d := Distance(p.addr, target)
		if p.retiring.Load() {
			if retiring == nil || d.Compare(retiringD) < 0 {
				retiring, retiringD = p, d
			}
			continue
		}
		if best == nil || d.Compare(bestD) < 0 {
			best, bestD = p, d
		}
	}
	selfD := Distance(n.addr, target)
	progress := func(d Address) bool { return d.Compare(selfD) < 0 }
	if exclude && origin {
		// Finding our own place: the node closest to us (other than us)
		// is one of our near neighbours, so greedy reaches it at once.
		if best == nil {
			return retiring
		}
		return best
	}
	if target == n.addr {
		return nil
	}
	if best == nil || !progress(bestD) {
		if retiring != nil && progress(retiringD) {
			return retiring
		}
		return nil
	}
	if !n.cfg.Proximity {
		return best
	}
	return n.cheapestHop(peers, target, src, exclude, direct, selfD, best)
}

// cheapestHop picks, among the neighbours closer to target than selfD, the
// one with the lowest predicted latency to target (proximity route
// selection). Remaining hops from a node at ring distance d are estimated
// as hopsPerDoubling * log2(1 + d*N): what a Symphony ring with this
// node's links achieves, measured as hopsPerDoubling.
func (n *Node) cheapestHop(peers []*peer, target, src Address, exclude, direct bool, selfD Address, greedy *peer) *peer {
	hop := float64(n.typicalRTT.Load())
	size := math.Float64frombits(n.sizeBits.Load())
	if hop <= 0 || size <= 1 {
		return greedy
	}
	best, bestCost := greedy, math.Inf(1)
	for _, p := range peers {
		if (exclude && p.addr == src) || (direct && !p.via.IsZero()) || p.retiring.Load() {
			continue
		}
		d := Distance(p.addr, target)
		if d.Compare(selfD) >= 0 {
			continue
		}
		rtt := float64(p.rtt.Load())
		if rtt <= 0 {
			rtt = hop // not measured yet: assume typical
		}
		cost := rtt + hop*hopsPerDoubling*math.Log2(1+Fraction(d)*size)
		if cost < bestCost {
			best, bestCost = p, cost
		}
	}
	return best
}

// hopsPerDoubling converts log2 of the ring distance still to cover (in
// nodes) into hops still to go.
const hopsPerDoubling = 0.5

func (n *Node) deliver(h *Header, payload []byte, from *peer) {
	hp := n.handlers[h.Type].Load()
	if hp == nil {
		n.stats.unknownType.Add(1)
		return
	}
	n.stats.delivered.Add(1)
	m := Message{Header: *h, Payload: payload}
	if from != nil {
		m.From = from.addr
	}
	(*hp)(&m)
}

// Send routes a message from this node. h.Src is set to this node and a
// zero TTL becomes the configured one. A message this node is closest to
// is delivered to its own handler.
func (n *Node) Send(h Header, payload []byte) error {
	if h.Type.LinkLocal() {
		return fmt.Errorf("overlay: type %#x is link-local", h.Type)
	}
	select {
	case <-n.closed:
		return ErrClosed
	default:
	}
	h.Src = n.addr
	if h.TTL == 0 {
		h.TTL = uint8(n.cfg.TTL)
	}
	if h.Len()+len(payload) > MaxMessage {
		return fmt.Errorf("overlay: %d-byte message exceeds the %d-byte limit", h.Len()+len(payload), MaxMessage)
	}
	msg := appendMessage(make([]byte, 0, h.Len()+len(payload)), &h, payload)
	return n.dispatch(msg, &h, msg[h.Len():], nil)
}

// Route sends payload as a message of type t to dst (FlagClosest for the
// node closest to dst).
func (n *Node) Route(dst Address, flags Flags, t Type, payload []byte) error {
	return n.Send(Header{Type: t, Flags: flags, Dst: dst}, payload)
}

// SendTo sends a message of type t straight to the linked peer dst, with
// no routing; it fails if there is no link to dst.
func (n *Node) SendTo(dst Address, t Type, payload []byte) error {
	n.mu.Lock()
	p := n.peers[dst]
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("overlay: no link to %s", dst)
	}
	h := Header{Type: t, Src: n.addr, Dst: dst, TTL: 1}
	return n.sendOn(p, &h, payload)
}

func (n *Node) sendOn(p *peer, h *Header, payload []byte) error {
	msg := appendMessage(make([]byte, 0, h.Len()+len(payload)), h, payload)
	if err := p.link.Send(msg); err != nil {
		if linkEnded(p.link) {
			n.removePeer(p, err.Error())
		} else {
			n.stats.sendFailed.Add(1)
		}
		return err
	}
	p.msgsOut.Add(1)
	p.bytesOut.Add(uint64(len(msg)))
	return nil
}

// info describes this node to others.
func (n *Node) info() NodeInfo {
	n.mu.Lock()
	c := n.coord
	n.mu.Unlock()
	return NodeInfo{Address: n.addr, Endpoints: n.Endpoints(), Coord: c}
}

// InRing reports whether the node is linked to its ring neighbours on
// both sides, as far as it knows.
func (n *Node) InRing() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inRingLocked()
}

// inRingLocked: the nearest known node clockwise and the nearest
// counter-clockwise are both near links. (Not "a near link in each half
// of the ring": in a small ring the successor may be more than half the
// ring away.) n.mu must be held.
func (n *Node) inRingLocked() bool {
	succ, pred := n.ringSidesLocked(1)
	if len(succ) == 0 || len(pred) == 0 {
		return false
	}
	s, p := n.peers[succ[0]], n.peers[pred[0]]
	return s != nil && p != nil && s.kinds&KindNear != 0 && p.kinds&KindNear != 0
}

// newID returns a request ID; n.mu must be held.
func (n *Node) newIDLocked() uint64 {
	n.nextID++
	return n.nextID<<16 | uint64(n.rng.Uint32()&0xffff)
}

// ClosestPeers returns up to k linked peers, closest to key first. With
// this node's near links, the nodes around its own address are known
// exactly; the DHT places replicas with it.
func (n *Node) ClosestPeers(key Address, k int) []Address {
	n.mu.Lock()
	cands := make([]Address, 0, len(n.peers))
	for a := range n.peers {
		cands = append(cands, a)
	}
	n.mu.Unlock()
	return nearestBy(cands, k, func(a Address) Address { return Distance(a, key) })
}

// Peers returns the addresses of every linked peer.
func (n *Node) Peers() []Address {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Address, 0, len(n.peers))
	for a := range n.peers {
		out = append(out, a)
	}
	return out
}
