package simnet

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

// Link is one end of a plain in-memory link between two nodes of a
// Fabric. It implements overlay.Link; its methods may be called
// concurrently, from handlers too.
//
// A packet takes half the link's RTT to reach the other end, in either
// direction, and may be lost (Config.Loss). Packets from one end arrive in
// the order they were sent. A packet that arrives while the other end has
// no handler is dropped (Stats.Unhandled); one that arrives after the other
// end has ended is dropped too (Stats.Dropped).
type Link struct {
	// immutable after the handshake
	owner     *Linker // the node at this end
	peer      *Link   // the other end
	peerShard uint32  // peer.owner.shard
	rtt       time.Duration
	dialed    bool
	done      chan struct{}

	handler atomic.Pointer[func([]byte)]
	ended   atomic.Bool // set under Fabric.mu

	// Fabric.mu guards the following.
	idx int // in owner.links while open
}

var _ overlay.Link = (*Link)(nil)

// Send copies pkt and sends it to the other end; pkt may be reused when
// Send returns. A lost packet is not an error. After the link ended, Send
// returns an error wrapping net.ErrClosed; a packet longer than MaxPacket
// is an error wrapping ErrTooBig.
func (l *Link) Send(pkt []byte) error {
	if len(pkt) > MaxPacket {
		return ErrTooBig
	}
	if l.ended.Load() {
		return errClosed
	}
	f := l.owner.f
	buf := f.free.get(len(pkt))
	copy(buf, pkt)
	f.mu.Lock()
	if l.ended.Load() {
		f.mu.Unlock()
		f.free.put(buf)
		return errClosed
	}
	f.sent++
	if f.cfg.Loss > 0 && f.rng.Float64() < f.cfg.Loss {
		f.lost++
		f.mu.Unlock()
		f.free.put(buf)
		return nil
	}
	f.scheduleLocked(event{kind: evPacket, to: l.peer, data: buf, shard: l.peerShard}, l.oneWay(), f.now())
	f.mu.Unlock()
	return nil
}

// SetHandler installs the receiver of the other end's packets; nil removes
// it. It runs on one of the fabric's workers, never concurrently with
// another handler of the same node, and must not block for long: it
// holds up every node sharing the worker. pkt may be modified in place
// and is valid only during the call.
func (l *Link) SetHandler(h func(pkt []byte)) {
	if h == nil {
		l.handler.Store(nil)
		return
	}
	l.handler.Store(&h)
}

// Peer returns the member at the other end.
func (l *Link) Peer() *security.Member { return l.peer.owner.self }

// Remote returns the address of the node at the other end.
func (l *Link) Remote() netip.AddrPort { return l.peer.owner.addr }

// Local returns the address of the node at this end.
func (l *Link) Local() netip.AddrPort { return l.owner.addr }

// Dialed reports whether this end's node dialled the link.
func (l *Link) Dialed() bool { return l.dialed }

// RTT returns the round-trip time the link was given when it was dialled.
func (l *Link) RTT() time.Duration { return l.rtt }

// oneWay is how long a packet takes to reach the other end.
func (l *Link) oneWay() time.Duration { return l.rtt / 2 }

// Done is closed when this end ends: closed by either side, or its node
// closed or crashed, or a crashed peer given up on after DeadAfter.
func (l *Link) Done() <-chan struct{} { return l.done }

// Close ends this end at once and the other end one one-way latency later,
// as if told. Close on an ended link does nothing and returns nil.
func (l *Link) Close() error {
	f := l.owner.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.endLocked(l) && !l.peer.ended.Load() {
		f.scheduleLocked(event{kind: evEnd, to: l.peer, shard: l.peerShard}, l.oneWay(), f.now())
	}
	return nil
}
