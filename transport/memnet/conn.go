package memnet

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/ringvpn/ringvpn/transport"
)

// Conn is one endpoint of a Network. It implements transport.PacketConn:
// ReadBatch is called from one goroutine at a time, WriteTo and WriteBatch
// may be called concurrently, and after Close every method returns an
// error satisfying errors.Is(err, net.ErrClosed).
//
// Datagrams are copied when sent, so the sender may reuse its buffer, and
// copied again into the reader's buffers. A datagram that finds the
// receive queue full is dropped and counted in Stats.DroppedQueueFull.
type Conn struct {
	// immutable after Listen
	net   *Network
	nat   *NAT // nil on the public network
	local netip.AddrPort

	// net.mu guards the following.
	public netip.AddrPort              // when nat is nil
	out    map[netip.AddrPort]*mapping // when nat is set: by Mapping.mask of the destination

	// closed is set under net.mu and mu; it may be read without them.
	closed atomic.Bool

	// mu guards the following; it nests inside net.mu.
	mu    sync.Mutex
	cond  sync.Cond // signalled when q grows or the Conn closes; L is &mu
	q     ring
	limit int

	// owned by the goroutine in ReadBatch
	scratch []packet
}

var _ transport.PacketConn = (*Conn)(nil)

// LocalAddr returns the address c is bound to. It does not change when
// c is rebound.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// PublicAddr returns the address peers see c's datagrams coming from and
// reach it at: LocalAddr until Rebind. Behind a NAT with
// endpoint-independent mapping it is the live mapping's address; behind
// other NATs, or before c has sent anything out, it is the zero AddrPort.
func (c *Conn) PublicAddr() netip.AddrPort {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.nat != nil {
		return c.nat.publicAddr(c)
	}
	return c.public
}

// Rebind gives c a new public port, as a NAT does when its mapping
// expires: peers see c's later datagrams coming from the returned address
// and reach c there, and datagrams to the old public address, including
// those already in flight, are dropped. Behind a NAT, Rebind drops c's
// mappings, its next datagram out gets a new public port, and it returns
// the zero AddrPort. On a closed Conn it returns the zero AddrPort.
func (c *Conn) Rebind() netip.AddrPort {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.closed.Load() {
		return netip.AddrPort{}
	}
	return c.rebind()
}

// BatchSize returns 64, as transport/udp does by default; ReadBatch and
// WriteBatch accept any number of buffers.
func (c *Conn) BatchSize() int { return batchSize }

// SetQueueLen sets how many datagrams c's receive queue holds. Datagrams
// already queued beyond a smaller limit stay.
func (c *Conn) SetQueueLen(datagrams int) error {
	if datagrams < 1 {
		return fmt.Errorf("memnet: queue length %d not positive", datagrams)
	}
	if c.closed.Load() {
		return errClosed
	}
	c.mu.Lock()
	c.limit = datagrams
	c.mu.Unlock()
	return nil
}

// ReadBatch blocks until at least one datagram is queued or c is closed,
// then moves as many queued datagrams as fit into bufs. A datagram longer
// than its buffer is truncated.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	if len(sizes) < len(bufs) || len(from) < len(bufs) {
		return 0, errShortSlices
	}
	c.mu.Lock()
	for c.q.len() == 0 && len(bufs) > 0 && !c.closed.Load() {
		c.cond.Wait()
	}
	if c.closed.Load() {
		c.mu.Unlock()
		return 0, errClosed
	}
	k := min(len(bufs), c.q.len())
	ps := c.scratch[:0]
	for range k {
		ps = append(ps, c.q.pop())
	}
	c.mu.Unlock()

	// Copy outside mu so that senders, who hold net.mu while queueing,
	// never wait for a copy.
	for i := range ps {
		p := &ps[i]
		sizes[i] = copy(bufs[i], p.buf[:p.n])
		from[i] = p.from
	}
	c.net.putPackets(ps)
	clear(ps)
	c.scratch = ps[:0]
	return k, nil
}

// WriteTo sends b to addr. A datagram nobody is listening for is dropped
// silently and counted in Stats.DroppedNoListener.
func (c *Conn) WriteTo(b []byte, addr netip.AddrPort) error {
	if len(b) > transport.MaxPacket {
		return ErrTooLarge
	}
	n := c.net
	var clk clock
	n.mu.Lock()
	if c.closed.Load() {
		n.mu.Unlock()
		return errClosed
	}
	n.send(c, b, unmap(addr), &clk)
	n.mu.Unlock()
	return nil
}

// WriteBatch sends bufs[i] to to[i] in order and reports how many it
// sent; it stops at the first datagram longer than transport.MaxPacket.
func (c *Conn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	if len(to) < len(bufs) {
		return 0, errShortSlices
	}
	n := c.net
	var clk clock
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.closed.Load() {
		return 0, errClosed
	}
	for i, b := range bufs {
		if len(b) > transport.MaxPacket {
			return i, ErrTooLarge
		}
		n.send(c, b, unmap(to[i]), &clk)
	}
	return len(bufs), nil
}

// Close releases c's addresses and wakes a blocked ReadBatch. Queued
// datagrams are discarded.
func (c *Conn) Close() error {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.closed.Load() {
		return errClosed
	}
	c.closeLocked()
	return nil
}

// closeLocked closes c. net.mu is held.
func (c *Conn) closeLocked() {
	n := c.net
	if c.nat != nil {
		c.nat.unbind(c)
	} else {
		if n.bound[c.local] == c {
			delete(n.bound, c.local)
		}
		c.dropRoutes()
	}
	c.mu.Lock()
	c.closed.Store(true)
	for c.q.len() > 0 {
		n.putBuf(c.q.pop().buf)
	}
	c.q = ring{}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// enqueue adds p to the receive queue and reports whether it fit.
// net.mu is held.
func (c *Conn) enqueue(p packet) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() || c.q.len() >= c.limit {
		return false
	}
	c.q.push(p, c.limit)
	c.cond.Signal()
	return true
}

// unmap strips an IPv4-mapped IPv6 address to plain IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}
