package overlay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"net/netip"

	"go.uber.org/zap"
)

// onLinkLocal handles pings, pongs and neighbour lists.
func (n *Node) onLinkLocal(p *peer, h *Header, payload []byte) {
	switch h.Type {
	case TypePing, TypePong:
		pg, err := parsePing(payload)
		if err != nil {
			n.stats.malformed.Add(1)
			return
		}
		var rtt time.Duration
		if h.Type == TypePong {
			rtt = n.now() - time.Duration(pg.Sent)
			if rtt < 0 || rtt > time.Minute {
				n.stats.malformed.Add(1)
				return
			}
			if old := p.rtt.Load(); old == 0 {
				p.rtt.Store(int64(rtt))
			} else {
				p.rtt.Store(old + (int64(rtt)-old)/4)
			}
		}
		n.mu.Lock()
		p.peerKinds = pg.Kinds
		p.coord = pg.Coord
		if rtt > 0 {
			n.coord = n.coord.update(float64(rtt)/float64(time.Millisecond), pg.Coord, n.rng)
		}
		reply := ping{Sent: pg.Sent, Kinds: p.kinds, Coord: n.coord}
		n.mu.Unlock()
		if h.Type == TypePing {
			n.sendOn(p, &Header{Type: TypePong, Src: n.addr, Dst: p.addr, TTL: 1}, reply.append(nil))
		}
	case TypeNeighbors:
		nb, err := parseNeighbors(payload)
		if err != nil {
			n.stats.malformed.Add(1)
			return
		}
		n.mu.Lock()
		for i := range nb.Nodes {
			n.learnLocked(nb.Nodes[i], p.addr, false)
		}
		n.mu.Unlock()
	default:
		n.stats.unknownType.Add(1)
	}
}

// learnLocked records a node we heard of; n.mu must be held.
func (n *Node) learnLocked(info NodeInfo, via Address, fromLookup bool) {
	if info.Address == n.addr || info.Address.IsZero() {
		return
	}
	k := n.known[info.Address]
	if k == nil {
		if len(n.known) >= maxKnown {
			n.stats.knownFull.Add(1) // hearsay beyond the cap is ignored
			return
		}
		k = &knownNode{}
		n.known[info.Address] = k
	}
	k.info = info
	k.seen = n.now()
	if via != info.Address {
		k.via = via
	}
	k.fromLookup = k.fromLookup || fromLookup
}

func (n *Node) sendPing(p *peer) {
	n.mu.Lock()
	pg := ping{Sent: uint64(n.now()), Kinds: p.kinds, Coord: n.coord}
	p.lastPing = n.now()
	n.mu.Unlock()
	n.sendOn(p, &Header{Type: TypePing, Src: n.addr, Dst: p.addr, TTL: 1}, pg.append(nil))
}

// request routes a lookup or echo and waits for its reply.
func (n *Node) request(ctx context.Context, t Type, dst Address, flags Flags, body connect) (connect, uint8, error) {
	ch := make(chan connect, 1)
	n.mu.Lock()
	id := n.newIDLocked()
	n.waiting[id] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.waiting, id)
		n.mu.Unlock()
	}()
	body.ID = id
	if t != TypeEcho { // echoes test plain exact routing both ways
		body.Via = n.replyVia(dst, flags&FlagExcludeSource != 0)
	}
	if err := n.Route(dst, flags, t, body.append(nil)); err != nil {
		return connect{}, 0, err
	}
	select {
	case r := <-ch:
		return r, r.hops, nil
	case <-ctx.Done():
		return connect{}, 0, ctx.Err()
	case <-n.closed:
		return connect{}, 0, ErrClosed
	}
}

// ReplyVia names the neighbour a message to dst leaves through. A request
// names it so that replies come back through it: a node whose place in
// the ring is not yet right may not be reachable by its address.
func (n *Node) ReplyVia(dst Address) Address { return n.replyVia(dst, false) }

func (n *Node) replyVia(dst Address, exclude bool) Address {
	if p := n.nextHop(dst, n.addr, exclude, true); p != nil {
		return p.addr
	}
	return Address{}
}

// reply routes an answer to the sender of req, through the neighbour of
// the sender that the request named (replyVia). The answer's own Via
// names the neighbour req came to us from: a node linked to us, through
// which the requester can reach us before the ring around us is right.
func (n *Node) reply(req *Message, t Type, replyVia Address, body connect) {
	h := Header{Type: t, Dst: req.Src}
	if !replyVia.IsZero() && replyVia != n.addr {
		h.Flags |= FlagVia
		h.Via = replyVia
	}
	body.Via = req.From
	n.Send(h, body.append(nil))
}

func (n *Node) onReply(m *Message) {
	r, err := parseConnect(m.Payload)
	if err != nil {
		n.stats.malformed.Add(1)
		return
	}
	r.hops = m.Hops
	n.mu.Lock()
	ch := n.waiting[r.ID]
	n.mu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// Lookup finds the node closest to key and its near neighbours.
func (n *Node) Lookup(ctx context.Context, key Address) (NodeInfo, []NodeInfo, error) {
	r, _, err := n.request(ctx, TypeLookup, key, FlagClosest, connect{Sender: n.info()})
	return r.Sender, r.Near, err
}

func (n *Node) onLookup(m *Message) {
	req, err := parseConnect(m.Payload)
	if err != nil {
		n.stats.malformed.Add(1)
		return
	}
	n.reply(m, TypeLookupReply, req.Via, connect{ID: req.ID, Sender: n.info(), Near: n.nearInfos(m.Src)})
}

// EchoResult is the outcome of an Echo.
type EchoResult struct {
	Hops, ReplyHops int
	RTT             time.Duration
}

// Echo sends a routed message to the node at dst (exact delivery) and
// waits for its answer: the overlay's ping.
func (n *Node) Echo(ctx context.Context, dst Address) (EchoResult, error) {
	start := time.Now()
	r, hops, err := n.request(ctx, TypeEcho, dst, 0, connect{Sender: n.info()})
	if err != nil {
		return EchoResult{}, fmt.Errorf("echo %s: %w", dst, err)
	}
	return EchoResult{Hops: int(r.Kinds), ReplyHops: int(hops), RTT: time.Since(start)}, nil
}

func (n *Node) onEcho(m *Message) {
	req, err := parseConnect(m.Payload)
	if err != nil {
		n.stats.malformed.Add(1)
		return
	}
	// The request's hop count rides back in the Kinds byte.
	n.reply(m, TypeEchoReply, req.Via, connect{ID: req.ID, Kinds: Kind(m.Hops), Sender: n.info()})
}

// nearInfos lists this node's near neighbours (for lookups and neighbour
// exchange), leaving out exclude.
func (n *Node) nearInfos(exclude Address) []NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []NodeInfo
	for a, p := range n.peers {
		if p.kinds&KindNear == 0 || a == exclude {
			continue
		}
		out = append(out, n.peerInfoLocked(p))
	}
	return out
}

func (n *Node) peerInfoLocked(p *peer) NodeInfo {
	eps := make([]netip.AddrPort, 0, 1+len(p.endpoints))
	remote := p.link.Remote()
	if remote.IsValid() {
		eps = append(eps, remote)
	}
	for _, e := range p.endpoints {
		if e != remote && len(eps) < maxEndpoints {
			eps = append(eps, e)
		}
	}
	return NodeInfo{Address: p.addr, Endpoints: eps, Coord: p.coord}
}

// connectTo starts linking with the node at target for kinds: a
// connect-to-me request routed to it carries our endpoints; it answers
// with its own and dials us while we dial it (which is also how two
// nodes behind NATs punch holes).
func (n *Node) connectTo(target Address, kinds Kind) {
	n.mu.Lock()
	if p := n.peers[target]; p != nil {
		p.kinds |= kinds
		n.mu.Unlock()
		return
	}
	if a := n.pending[target]; a != nil {
		a.kinds |= kinds
		n.mu.Unlock()
		return
	}
	a := &attempt{kinds: kinds, id: n.newIDLocked(), deadline: n.now() + n.cfg.ConnectTimeout}
	n.pending[target] = a
	var via Address
	if k := n.known[target]; k != nil {
		via = k.via
	}
	n.mu.Unlock()
	n.log.Debug("connect", zap.Stringer("peer", target), zap.Stringer("via", via), zap.Stringer("kinds", kinds))
	h := Header{Type: TypeConnect, Dst: target}
	body := connect{ID: a.id, Kinds: kinds, Sender: n.info(), Via: n.replyVia(target, false)}
	if !via.IsZero() && via != n.addr {
		h.Flags, h.Via = FlagVia, via
		if n.isLinked(via) {
			body.Via = via // it is linked to both of us
		}
	}
	if err := n.Send(h, body.append(nil)); err != nil {
		n.failAttempt(target, a)
	}
}

// failAttempt ends an attempt that did not produce a link.
func (n *Node) failAttempt(target Address, a *attempt) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pending[target] == a {
		delete(n.pending, target)
	}
	if k := n.known[target]; k != nil {
		k.failures++
		k.failedAt = n.now()
	}
}

func (n *Node) onConnect(m *Message) {
	req, err := parseConnect(m.Payload)
	if err != nil || req.Sender.Address != m.Src {
		n.stats.malformed.Add(1)
		return
	}
	n.reply(m, TypeConnectReply, req.Via, connect{ID: req.ID, Sender: n.info()})
	// Dial back at once; the requester dials us when the reply arrives.
	// The kinds the requester wants reach us in its pings.
	n.mu.Lock()
	n.learnLocked(req.Sender, req.Via, false)
	if n.peers[m.Src] != nil || n.pending[m.Src] != nil {
		n.mu.Unlock()
		return
	}
	if len(n.pending) >= maxPending {
		// A flood of requests must not make us dial the world.
		n.stats.refused.Add(1)
		n.mu.Unlock()
		return
	}
	a := &attempt{id: req.ID, deadline: n.now() + n.cfg.ConnectTimeout, dialing: true}
	n.pending[m.Src] = a
	n.mu.Unlock()
	n.spawn(func() { n.dial(m.Src, req.Sender.Endpoints, a) })
}

func (n *Node) onConnectReply(m *Message) {
	r, err := parseConnect(m.Payload)
	if err != nil || r.Sender.Address != m.Src {
		n.stats.malformed.Add(1)
		return
	}
	n.mu.Lock()
	a := n.pending[m.Src]
	if a == nil || a.id != r.ID || a.dialing {
		n.mu.Unlock()
		return
	}
	a.dialing = true
	n.learnLocked(r.Sender, r.Via, false)
	n.mu.Unlock()
	n.spawn(func() { n.dial(m.Src, r.Sender.Endpoints, a) })
}

// onUnreachable: our connect request to the address in the payload found
// no node there; give the attempt up now instead of when it times out.
func (n *Node) onUnreachable(m *Message) {
	if len(m.Payload) != len(Address{}) {
		n.stats.malformed.Add(1)
		return
	}
	target := Address(m.Payload)
	n.mu.Lock()
	defer n.mu.Unlock()
	a := n.pending[target]
	if a == nil || a.dialing {
		return
	}
	delete(n.pending, target)
	// Not a failure of the node (it may be joining): wait the shortest
	// backoff, without growing it, as answers come back in milliseconds.
	if k := n.known[target]; k != nil {
		k.failures = max(k.failures, 1)
		k.failedAt = n.now()
	}
}

var errWrongPeer = errors.New("a different node answered")

// Bounds on what peers can make a node hold: nodes heard of, and
// connection attempts under way (each may be a dial to endpoints a
// requester named).
const (
	maxKnown   = 4096
	maxPending = 64
)

// dial tries target's endpoints in turn until one gives a link.
func (n *Node) dial(target Address, endpoints []netip.AddrPort, a *attempt) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ConnectTimeout)
	defer cancel()
	go func() {
		select {
		case <-n.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	var lastErr error = errors.New("it offered no endpoints")
	for _, ep := range endpoints {
		n.mu.Lock()
		_, linked := n.peers[target]
		n.mu.Unlock()
		if linked { // its own dial reached us first
			break
		}
		l, err := n.linker.Dial(ctx, ep)
		if err != nil {
			lastErr = err
			continue
		}
		if l.Peer().Address != target {
			l.Close()
			lastErr = fmt.Errorf("%w at %s", errWrongPeer, ep)
			continue
		}
		n.mu.Lock()
		kinds := a.kinds
		n.mu.Unlock()
		n.addLink(l, kinds)
		return
	}
	n.mu.Lock()
	_, linked := n.peers[target]
	n.mu.Unlock()
	if !linked {
		if ctx.Err() == nil || n.now() < a.deadline+time.Second {
			n.log.Debug("connect failed", zap.Stringer("peer", target), zap.Error(lastErr))
		}
		n.failAttempt(target, a)
	}
}

func (n *Node) isLinked(a Address) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peers[a] != nil
}
