package overlay

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Relayed links (tunnel edges). When a node can't link directly with a
// node it needs (both behind NATs that map every destination to a new
// port, or a firewall), the one that asked for the link opens a DTLS
// session over a routed pipe pinned to a relay: a node linked directly to
// both, preferring the lowest RTT (relayVia). The link then is a
// neighbour like any other; its datagrams travel as TypePipe messages
// over direct links only (nextHop with direct), so relays never nest.
// The relay forwards sealed records it cannot read. Every
// overlay.relay_retry the
// node asks its peer to try a direct link again; when one comes up it
// replaces the relayed one (preferNew), which keeps routing meanwhile.
//
// The relay does not wait for the direct dials to time out: a hole punch
// gets through within a few handshake retransmissions or not at all. Once
// the dials of an attempt have run alone for a quarter of
// overlay.connect_timeout (relayAfter), the relayed link is made while
// they go on, and a direct link that comes up later replaces it. Else two
// members behind symmetric NATs that are ring neighbours leave the ring
// wrong around them (lookups between them fail) for the whole connect
// timeout after one of them joins.

// relayGrace is how long a failed dial waits for the peer's own link
// before it turns to a relay.
const relayGrace = time.Second

// relayAfter is how long the dials of an attempt run alone before a relay
// is tried alongside them.
func (n *Node) relayAfter() time.Duration { return n.cfg.ConnectTimeout / 4 }

// relayTry is the outcome of a relay attempt: whether it made a link, and
// through which relay it tried (zero: none was tried).
type relayTry struct {
	linked bool
	via    Address
}

// relayEarly starts a relay for the attempt a that waits relayAfter, and
// then, if a is for kinds by then (relayWanted), links through a relay
// unless a link is up; it gives up when the dials end first (they cancel
// ctx when one wins). The channel gets its outcome; it is nil when the
// node makes no relayed links.
func (n *Node) relayEarly(ctx context.Context, target Address, a *attempt) <-chan relayTry {
	if n.relays.Load() == nil {
		return nil
	}
	done := make(chan relayTry, 1)
	go func() {
		t := time.NewTimer(n.relayAfter())
		defer t.Stop()
		select {
		case <-t.C:
			if n.relayWanted(a) {
				done <- n.relayNow(target, a, Address{})
				return
			}
		case <-ctx.Done():
		case <-n.closed:
		}
		done <- relayTry{}
	}()
	return done
}

// relayWanted: the node can make relayed links, and a is for kinds: an
// attempt it started, or answered and was then asked for (the peer that
// only answers a request does not relay).
func (n *Node) relayWanted(a *attempt) bool {
	n.mu.Lock()
	wanted := a.kinds != 0
	n.mu.Unlock()
	return wanted && n.relays.Load() != nil
}

// relayFallback runs after a failed dial of an attempt this node started
// for kinds: it links through a relay instead, other than avoid (one that
// failed already) if it can. It reports false when no relay is possible
// (no routed pipes, no relay candidate, or the peer is already linked).
func (n *Node) relayFallback(target Address, a *attempt, avoid Address) bool {
	if !n.relayWanted(a) {
		return false
	}
	// A dial that lost a simultaneous open fails while the peer's own
	// link is still on its way to addLink: give it a moment first.
	t := time.NewTimer(relayGrace)
	select {
	case <-t.C:
	case <-n.closed:
		t.Stop()
		return false
	}
	return n.relayNow(target, a, avoid).linked
}

// relayNow links with target through a relay, other than avoid if there
// is another candidate, unless a link is up already.
func (n *Node) relayNow(target Address, a *attempt, avoid Address) relayTry {
	ps := n.relays.Load()
	if ps == nil {
		return relayTry{}
	}
	n.mu.Lock()
	if n.peers[target] != nil {
		n.mu.Unlock()
		return relayTry{}
	}
	via := n.relayViaLocked(target, a.near, avoid)
	if via.IsZero() {
		via = n.relayViaLocked(target, a.near, Address{})
	}
	if via.IsZero() {
		n.mu.Unlock()
		return relayTry{}
	}
	a.deadline = n.now() + n.cfg.ConnectTimeout
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ConnectTimeout)
	defer cancel()
	go func() {
		select {
		case <-n.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	l, err := ps.dial(ctx, target, via, true)
	if err != nil {
		n.log.Debug("relayed connect failed", zap.Stringer("peer", target), zap.Stringer("via", via), zap.Error(err))
		return relayTry{via: via}
	}
	n.mu.Lock()
	kinds := a.kinds
	n.mu.Unlock()
	n.stats.relayed.Add(1)
	n.log.Debug("relayed link", zap.Stringer("peer", target), zap.Stringer("via", via))
	n.addLinkVia(l, kinds, via)
	return relayTry{linked: true, via: via}
}

// relayViaLocked picks the relay for a link to target, other than avoid:
// among the nodes target named as its neighbours (near), one linked
// directly to us, the lowest RTT first; failing that, our direct
// neighbour closest to target on the ring. n.mu is held.
func (n *Node) relayViaLocked(target Address, near []Address, avoid Address) Address {
	var best *peer
	for _, a := range near {
		p := n.peers[a]
		if p == nil || !p.via.IsZero() || a == target || a == avoid {
			continue
		}
		if best == nil || rttOrMax(p) < rttOrMax(best) {
			best = p
		}
	}
	if best == nil {
		for _, p := range n.peers {
			if !p.via.IsZero() || p.addr == target || p.addr == avoid {
				continue
			}
			if best == nil || Distance(p.addr, target).Compare(Distance(best.addr, target)) < 0 {
				best = p
			}
		}
	}
	if best == nil {
		return Address{}
	}
	return best.addr
}

func rttOrMax(p *peer) int64 {
	if r := p.rtt.Load(); r > 0 {
		return r
	}
	return int64(time.Hour)
}

// retryDirect asks each relayed neighbour, every RelayRetry, to try a
// direct link again: a connect-to-me request, as for a new link, whose
// dials replace the relayed link if they get through.
func (n *Node) retryDirect() {
	now := n.now()
	var targets []Address
	n.mu.Lock()
	for a, p := range n.peers {
		if p.via.IsZero() || n.pending[a] != nil || now-p.directTry < n.cfg.RelayRetry {
			continue
		}
		p.directTry = now
		targets = append(targets, a)
	}
	n.mu.Unlock()
	for _, a := range targets {
		n.sendConnect(a, 0)
	}
}

// Relayed reports whether the link to dst goes through a relay, and
// which.
func (n *Node) Relayed(dst Address) (via Address, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[dst]
	if p == nil || p.via.IsZero() {
		return Address{}, false
	}
	return p.via, true
}
