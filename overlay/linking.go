package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

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
		if pg.Observed.IsValid() {
			n.observeLocked(p, pg.Observed)
		}
		if rtt > 0 {
			n.coord = n.coord.update(float64(rtt)/float64(time.Millisecond), pg.Coord, n.rng)
		}
		reply := ping{Sent: pg.Sent, Kinds: p.kinds, Coord: n.coord, Observed: observedOf(p)}
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
	pg := ping{Sent: uint64(n.now()), Kinds: p.kinds, Coord: n.coord, Observed: observedOf(p)}
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
	if p := n.nextHop(dst, n.addr, exclude, true, false); p != nil {
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
	n.mu.Unlock()
	n.sendConnect(target, kinds)
}

// sendConnect starts an attempt to link with target for kinds (none: a
// relayed neighbour trying to go direct) unless one is under way.
func (n *Node) sendConnect(target Address, kinds Kind) {
	n.mu.Lock()
	if n.pending[target] != nil {
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
	// The answer names our neighbours: relay candidates if no direct
	// link gets through.
	n.reply(m, TypeConnectReply, req.Via, connect{ID: req.ID, Sender: n.info(), Near: n.nearInfos(m.Src)})
	// Dial back at once; the requester dials us when the reply arrives.
	// The kinds the requester wants reach us in its pings. A relayed
	// neighbour asking again wants a direct link.
	n.mu.Lock()
	n.learnLocked(req.Sender, req.Via, false)
	if p := n.peers[m.Src]; (p != nil && p.via.IsZero()) || n.pending[m.Src] != nil {
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
	for _, ni := range r.Near {
		a.near = append(a.near, ni.Address)
	}
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

// dialStagger spaces the dials to a node's endpoints: the first (its
// listen or LAN address) gets a head start, the rest follow without
// waiting for it to fail, which is what lets two NATed nodes punch holes
// within one connect attempt.
const dialStagger = 50 * time.Millisecond

type dialResult struct {
	link Link
	ep   netip.AddrPort
	err  error
}

// dial dials every one of target's endpoints, a little apart, and keeps
// the first link that reaches target.
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
	eps := make([]netip.AddrPort, 0, len(endpoints))
	for _, ep := range endpoints {
		if usableEndpoint(ep) && !slices.Contains(eps, ep) {
			eps = append(eps, ep)
		}
	}
	relayed := n.relayEarly(ctx, target, a)
	results := make(chan dialResult, len(eps))
	for i, ep := range eps {
		go func() {
			if i > 0 {
				t := time.NewTimer(time.Duration(i) * dialStagger)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					results <- dialResult{ep: ep, err: ctx.Err()}
					return
				}
			}
			if n.isLinkedDirect(target) { // its own dial reached us first
				results <- dialResult{ep: ep, err: errLinked}
				return
			}
			l, err := n.linker.Dial(ctx, ep)
			results <- dialResult{link: l, ep: ep, err: err}
		}()
	}
	var won Link
	var lastErr error = errors.New("it offered no endpoints")
	for range eps {
		r := <-results
		switch {
		case r.err != nil:
			if !errors.Is(r.err, errLinked) {
				lastErr = fmt.Errorf("%s: %w", r.ep, r.err)
			}
		case r.link.Peer().Address != target:
			r.link.Close()
			lastErr = fmt.Errorf("%w at %s", errWrongPeer, r.ep)
		case won != nil:
			r.link.Close() // a second endpoint of the same node
		default:
			won = r.link
			cancel() // the other dials stop
		}
	}
	if won != nil {
		n.mu.Lock()
		kinds := a.kinds
		n.mu.Unlock()
		n.addLink(won, kinds)
		return
	}
	if !n.isLinkedDirect(target) {
		if ctx.Err() == nil || n.now() < a.deadline+time.Second {
			n.log.Debug("connect failed", zap.Stringer("peer", target), zap.Error(lastErr))
		}
		var early relayTry
		if relayed != nil {
			early = <-relayed
		}
		if early.linked {
			return // through a relay while the dials went on
		}
		if n.relayFallback(target, a, early.via) {
			return
		}
		n.failAttempt(target, a)
	}
}

var errLinked = errors.New("already linked")

func (n *Node) isLinked(a Address) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peers[a] != nil
}

func (n *Node) isLinkedDirect(a Address) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[a]
	return p != nil && p.via.IsZero()
}
