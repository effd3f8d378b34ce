package overlay

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"time"
)

// NAT traversal, the overlay's part. Every ping and pong tells the peer
// the address its datagrams arrive from (ping.Observed): behind a NAT
// that is the NAT's mapping of our socket, the reflexive address. A node
// offers its local addresses and the reflexive ones its peers agree on
// (Endpoints); a connect-to-me request and its answer carry them, and
// both sides then dial all of each other's endpoints at once (dial),
// which through a cone NAT is UDP hole punching: each side's first
// ClientHello opens its own NAT for the other's, and DTLS retransmits
// until one gets through. Pings every overlay.ping_interval keep the
// mappings alive.

// observation is where one linked peer last said it sees us.
type observation struct {
	ep netip.AddrPort
	at time.Duration // node clock
}

const (
	// observedTTL: a reflexive address no peer confirmed for this long is
	// no longer offered (its NAT mapping has likely changed).
	observedTTL = 2 * time.Minute
	// maxReflexive bounds the reflexive endpoints offered: a peer that
	// lies about where it sees us can add at most one of them, and only
	// while it outvotes no one.
	maxReflexive = 2
)

// observe records where peer p sees us. n.mu is held.
func (n *Node) observeLocked(p *peer, ep netip.AddrPort) {
	if !usableEndpoint(ep) {
		return
	}
	ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
	n.observed[p.addr] = observation{ep: ep, at: n.now()}
}

// usableEndpoint rejects what no peer could dial, routed pipes' made-up
// addresses included.
func usableEndpoint(ep netip.AddrPort) bool {
	ip := ep.Addr()
	return ep.IsValid() && ep.Port() != 0 && !ip.IsUnspecified() && !ip.IsMulticast() &&
		!discardPrefix.Contains(ip)
}

// discardPrefix holds the addresses of routed pipes (pipeRemote).
var discardPrefix = netip.MustParsePrefix("100::/64")

// observedOf is where we see p from, for its pings: nothing for a link
// over a routed pipe.
func observedOf(p *peer) netip.AddrPort {
	if r := p.link.Remote(); usableEndpoint(r) {
		return r
	}
	return netip.AddrPort{}
}

// Reflexive returns the addresses peers see this node at, most agreed on
// first: the NAT's mappings of its socket (or its own address when there
// is no NAT).
func (n *Node) Reflexive() []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reflexiveLocked()
}

func (n *Node) reflexiveLocked() []netip.AddrPort {
	type tally struct {
		ep    netip.AddrPort
		votes int
		last  time.Duration
	}
	var ts []tally
	now := n.now()
	for _, o := range n.observed {
		if now-o.at > observedTTL {
			continue
		}
		i := slices.IndexFunc(ts, func(t tally) bool { return t.ep == o.ep })
		if i < 0 {
			ts = append(ts, tally{ep: o.ep})
			i = len(ts) - 1
		}
		ts[i].votes++
		ts[i].last = max(ts[i].last, o.at)
	}
	slices.SortFunc(ts, func(a, b tally) int {
		if c := cmp.Compare(b.votes, a.votes); c != 0 {
			return c
		}
		if c := cmp.Compare(b.last, a.last); c != 0 {
			return c
		}
		return a.ep.Compare(b.ep)
	})
	out := make([]netip.AddrPort, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.ep)
	}
	return out
}

// Endpoints are the addresses this node offers to peers: overlay.advertise
// when set; otherwise its local addresses, then up to two reflexive ones.
func (n *Node) Endpoints() []netip.AddrPort {
	if len(n.cfg.Advertise) > 0 {
		return n.cfg.Advertise
	}
	eps := n.localEndpoints()
	local := n.linker.LocalAddr()
	added := 0
	for _, r := range n.Reflexive() {
		if added == maxReflexive || len(eps) == maxEndpoints {
			break
		}
		if slices.Contains(eps, r) || (local.Addr().Is4() && !r.Addr().Is4()) {
			continue
		}
		eps = append(eps, r)
		added++
	}
	return eps
}

// localEndpoints: the listen address, or every interface address when the
// node listens on all of them (loopback last).
func (n *Node) localEndpoints() []netip.AddrPort {
	local := n.linker.LocalAddr()
	if !local.Addr().IsUnspecified() {
		return []netip.AddrPort{local}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var eps, loopback []netip.AddrPort
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr()
		if ip.IsLinkLocalUnicast() || (local.Addr().Is4() && !ip.Is4()) {
			continue
		}
		ep := netip.AddrPortFrom(ip, local.Port())
		if ip.IsLoopback() {
			loopback = append(loopback, ep)
		} else {
			eps = append(eps, ep)
		}
	}
	return append(eps, loopback...)[:min(len(eps)+len(loopback), maxEndpoints)]
}
