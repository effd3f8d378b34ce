package overlay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Broadcast: bounded-range forwarding (as in Brunet's bounded broadcast).
//
// The originator owns the whole ring, the range [self, self). A node that
// holds the range [start, end) (start is its own address) hands it on to
// each linked peer p strictly inside (self, end) clockwise: with those
// peers sorted clockwise p1 < p2 < ... < pk, p_i gets [p_i, p_i+1) and p_k
// gets [p_k, end). The ranges are disjoint, so a broadcast cannot loop and
// no node gets it twice, whatever the links; and when every node is
// linked to its successor (a correct ring), every node gets it once.
//
// A TypeBroadcast message goes over one link (like a ping): the header's
// Dst is the receiving neighbour (the start of the range it is given),
// Src the originator, TTL 1, Hops the number of nodes that forwarded it;
// flags must be zero. Its payload:
//
//	 0       1                      21                      29
//	+-------+----------------------+-----------------------+------------
//	| inner |  range end (20)      |  broadcast ID (8)     | user payload
//	| type  |                      |                       |
//	+-------+----------------------+-----------------------+------------
//
// The originator is not authenticated end to end: every link is, but a
// forwarder can write any Src. Receivers needing to know who sent a
// broadcast must sign its payload (the VPN does).

// broadcastHeaderLen is the length of the TypeBroadcast payload before
// the user payload.
const broadcastHeaderLen = 1 + 20 + 8

// MaxBroadcastPayload bounds the payload of Broadcast: a message must fit
// in one link packet.
const MaxBroadcastPayload = MaxMessage - HeaderLen - broadcastHeaderLen

// Broadcast limits. They are constants for now (they may become Config
// fields): each node keeps a token bucket per originator, refilled at
// broadcastRate per second and holding broadcastBurst broadcasts for the
// originator's own Broadcast calls and twice that for broadcasts it
// relays (slack for jitter on the way). A broadcast over the limit is
// dropped whole (not delivered, not forwarded) and counted in
// Counters.BroadcastDropped; Broadcast returns ErrBroadcastLimited.
//
// Src is not authenticated, so relayed broadcasts are limited per
// neighbour that hands them over (its link is authenticated), at
// broadcastLinkRate per second: a node forging originators can't drain
// another originator's budget, and what it injects is bounded. Buckets
// are tracked for at most broadcastOrigins keys; beyond that, new ones
// share one bucket. The last
// broadcastSeen broadcast IDs are remembered to drop a broadcast that a
// badly behaved peer replays or sends twice.
const (
	broadcastRate     = 20
	broadcastBurst    = 64
	broadcastLinkRate = 200 // relayed, per neighbour: all the ring's broadcasts may come one way
	broadcastOrigins  = 1024
	broadcastSeen     = 1024
)

// ErrBroadcastLimited is returned by Broadcast when this node's own
// broadcasts exceed the rate limit.
var ErrBroadcastLimited = errors.New("overlay: broadcast rate limit reached")

// Broadcast delivers payload to the handler of type t (0x40 and above) on
// every other node of the ring, once each; the sender's own handler is
// not called. Each receiver's handler sees a Message whose Type is t, Src
// this node, Dst the receiver and From the neighbour that handed it over
// (a handler cannot tell it from a routed message: give broadcasts types
// of their own).
// Delivery is best effort: a broadcast sent while the ring is broken (a
// node not yet linked to its successor, a crash not yet noticed) misses
// the nodes behind the break, and one lost on a link is not resent.
//
// Src is not authenticated end to end (a forwarder could forge it):
// receivers that need to know the sender must verify a signature in the
// payload. See the limits above; payload is not retained.
func (n *Node) Broadcast(t Type, payload []byte) error {
	if t < firstExternalType {
		return fmt.Errorf("overlay: broadcast type %#x is reserved (types start at %#x)", t, firstExternalType)
	}
	if len(payload) > MaxBroadcastPayload {
		return fmt.Errorf("overlay: %d-byte broadcast exceeds the %d-byte limit", len(payload), MaxBroadcastPayload)
	}
	select {
	case <-n.closed:
		return ErrClosed
	default:
	}
	id := rand.Uint64()
	if !n.bcast.admit(n.addr, n.addr, id, n.now(), broadcastBurst, broadcastRate) {
		return ErrBroadcastLimited
	}
	h := Header{Type: TypeBroadcast, TTL: 1, Src: n.addr}
	b := broadcast{Inner: t, End: n.addr, ID: id}
	msg := make([]byte, HeaderLen, HeaderLen+broadcastHeaderLen+len(payload))
	h.Put(msg)
	msg = append(b.append(msg), payload...)
	n.forwardBroadcast(msg, n.addr, false)
	return nil
}

// onBroadcast handles a TypeBroadcast message from p: checks it, hands it
// on over the range it covers, then delivers it here. pkt is the whole
// message and is rewritten in place to forward it.
func (n *Node) onBroadcast(p *peer, pkt []byte, h *Header, payload []byte) {
	b, err := parseBroadcast(payload)
	if err != nil || h.Flags != 0 || h.Dst != n.addr || b.End == n.addr ||
		inRange(h.Src, n.addr, b.End) || inRange(p.addr, n.addr, b.End) {
		// Well-behaved forwarders never hand out a whole ring, a range
		// holding the originator or themselves, or a message for another.
		n.stats.malformed.Add(1)
		return
	}
	if !n.bcast.admit(p.addr, h.Src, b.ID, n.now(), 2*broadcastLinkRate, broadcastLinkRate) {
		n.stats.broadcastDropped.Add(1)
		return
	}
	n.forwardBroadcast(pkt, b.End, true)
	hp := n.handlers[b.Inner].Load()
	if hp == nil {
		n.stats.unknownType.Add(1)
		return
	}
	n.stats.delivered.Add(1)
	m := Message{Header: Header{Type: b.Inner, TTL: h.TTL, Hops: h.Hops, Src: h.Src, Dst: n.addr}, Payload: b.Payload, From: p.addr}
	(*hp)(&m)
}

// forwardBroadcast sends msg (a TypeBroadcast message) to every linked
// peer in (self, end), each with its part of the range. The last child is
// sent first, so that when a link turns out dead its range goes to the
// child before it instead of being lost. relayed counts the sends as
// forwarded and increments the hop count.
//
// Links neither side keeps (a bootstrap link, a long link given up) are
// left out: they are about to close, and a message in flight on a link
// that closes is lost. Leaving a child out only widens the range of the
// child before it, and the links that make the ring (near) are kept.
func (n *Node) forwardBroadcast(msg []byte, end Address, relayed bool) {
	var pbuf [64]*peer
	var abuf [64]Address
	peers, addrs := pbuf[:0], abuf[:0]
	n.mu.Lock()
	for _, p := range n.peers {
		if p.kinds != 0 || p.peerKinds != 0 {
			peers = append(peers, p)
			addrs = append(addrs, p.addr)
		}
	}
	n.mu.Unlock()
	var kbuf [64]bcastChild
	kids := splitRange(kbuf[:0], n.addr, end, addrs)
	if relayed && msg[4] < 255 {
		msg[4]++
	}
	for i := len(kids) - 1; i >= 0; i-- {
		p := peers[kids[i].idx]
		copy(msg[28:48], p.addr[:])                 // header Dst
		copy(msg[HeaderLen+1:HeaderLen+21], end[:]) // range end
		if err := n.sendRaw(p, msg); err != nil {
			continue // the child before takes this one's range too
		}
		if relayed {
			n.stats.forwarded.Add(1)
		}
		end = p.addr
	}
}

// sendRaw sends an encoded message to p, dropping p if its link is gone.
func (n *Node) sendRaw(p *peer, msg []byte) error {
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

// bcastChild is one peer a broadcast range is handed to.
type bcastChild struct {
	idx  int     // the peer's index in the addresses given to splitRange
	dist Address // clockwise from the node splitting the range
	end  Address // the child's range is [peer, end)
}

// splitRange divides the range [self, end) among the peers strictly
// inside (self, end) clockwise (end == self: the whole ring) and appends
// them to dst in clockwise order, each with the end of its part: the
// next child, and end for the last. It does not allocate if dst has room.
func splitRange(dst []bcastChild, self, end Address, peers []Address) []bcastChild {
	start := len(dst)
	for i, a := range peers {
		if inRange(a, self, end) && a != self {
			dst = append(dst, bcastChild{idx: i, dist: Clockwise(self, a)})
		}
	}
	kids := dst[start:]
	slices.SortFunc(kids, func(a, b bcastChild) int { return a.dist.Compare(b.dist) })
	// A repeated address would get an empty range: keep the first.
	kids = slices.CompactFunc(kids, func(a, b bcastChild) bool { return a.dist == b.dist })
	for i := range kids {
		if i+1 < len(kids) {
			kids[i].end = peers[kids[i+1].idx]
		} else {
			kids[i].end = end
		}
	}
	return dst[:start+len(kids)]
}

// inRange reports whether a lies in [start, end) clockwise; end == start
// is the whole ring.
func inRange(a, start, end Address) bool {
	if start == end {
		return true
	}
	return Clockwise(start, a).Compare(Clockwise(start, end)) < 0
}

// broadcast is the payload of TypeBroadcast.
type broadcast struct {
	Inner   Type
	End     Address
	ID      uint64
	Payload []byte // a sub-slice of the parsed bytes
}

func (b *broadcast) append(dst []byte) []byte {
	dst = append(dst, byte(b.Inner))
	dst = append(dst, b.End[:]...)
	dst = putU64(dst, b.ID)
	return append(dst, b.Payload...)
}

// parseBroadcast decodes a TypeBroadcast payload; the user payload is a
// sub-slice of b. Inner types below 0x40 and oversized payloads are
// errors.
func parseBroadcast(b []byte) (broadcast, error) {
	r := reader{b: b}
	m := broadcast{Inner: Type(r.u8()), End: r.address(), ID: r.u64()}
	if r.err != nil || m.Inner < firstExternalType || len(r.b) > MaxBroadcastPayload {
		return broadcast{}, ErrBadPayload
	}
	m.Payload = r.b
	return m, nil
}

// broadcaster holds a node's broadcast state: rate limits and recently
// seen IDs. The zero value is ready; memory is allocated on first use.
type broadcaster struct {
	// mu guards the following
	mu        sync.Mutex
	seen      map[bcastKey]struct{}
	order     []bcastKey // ring of the keys in seen, oldest at next
	next      int
	buckets   map[Address]tokenBucket
	overflow  tokenBucket // shared by originators beyond broadcastOrigins
	lastSweep time.Duration
}

type bcastKey struct {
	src Address
	id  uint64
}

// admit reports whether a broadcast from src with this ID is new and
// within the rate limit of key (a bucket of burst refilled at rate per
// second); if so it is remembered.
func (b *broadcaster) admit(key, src Address, id uint64, now time.Duration, burst, rate float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = make(map[bcastKey]struct{}, broadcastSeen)
		b.order = make([]bcastKey, 0, broadcastSeen)
		b.buckets = make(map[Address]tokenBucket)
		b.overflow = tokenBucket{tokens: 2 * broadcastBurst, last: now, rate: broadcastRate}
	}
	seenKey := bcastKey{src, id}
	if _, dup := b.seen[seenKey]; dup {
		return false
	}
	if !b.take(key, now, burst, rate) {
		return false
	}
	key2 := seenKey
	if len(b.order) < broadcastSeen {
		b.order = append(b.order, key2)
	} else {
		delete(b.seen, b.order[b.next])
		b.order[b.next] = key2
		b.next = (b.next + 1) % broadcastSeen
	}
	b.seen[key2] = struct{}{}
	return true
}

// take takes a token from src's bucket; b.mu must be held.
func (b *broadcaster) take(src Address, now time.Duration, burst, rate float64) bool {
	tb, ok := b.buckets[src]
	if !ok {
		if len(b.buckets) >= broadcastOrigins && now-b.lastSweep >= time.Second {
			// Forget originators whose buckets have refilled: they are
			// back to a fresh bucket's state anyway.
			b.lastSweep = now
			for a, x := range b.buckets {
				if x.level(now, burst) >= burst {
					delete(b.buckets, a)
				}
			}
		}
		if len(b.buckets) >= broadcastOrigins {
			return b.overflow.take(now, 2*broadcastBurst)
		}
		tb = tokenBucket{tokens: burst, last: now, rate: rate}
	}
	ok = tb.take(now, burst)
	b.buckets[src] = tb
	return ok
}

// tokenBucket refills at rate tokens per second.
type tokenBucket struct {
	tokens float64
	last   time.Duration
	rate   float64
}

func (t *tokenBucket) level(now time.Duration, burst float64) float64 {
	return min(burst, t.tokens+t.rate*(now-t.last).Seconds())
}

func (t *tokenBucket) take(now time.Duration, burst float64) bool {
	t.tokens, t.last = t.level(now, burst), now
	if t.tokens < 1 {
		return false
	}
	t.tokens--
	return true
}
