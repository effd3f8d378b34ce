package memnet

import "net/netip"

// Every NAT decision is made here, under Network.mu. Today a Conn has one
// public address (its bound address until Rebind), accepts datagrams from
// anyone and keeps its mapping until Rebind: an endpoint-independent
// mapping without filtering. A per-Conn NAT policy replaces the bodies
// below: sourceAddr may create a mapping per destination (symmetric NAT)
// and register it in Network.routes, admits may filter by the peers a
// mapping has sent to (address- or port-dependent filtering), and rebind
// drops every mapping the Conn owns.

// sourceAddr returns the public address that c's datagram to dst leaves
// from. n.mu is held.
func (c *Conn) sourceAddr(dst netip.AddrPort) netip.AddrPort {
	return c.public
}

// admits reports whether a datagram from src that reached c's public
// address pub gets through c's NAT. n.mu is held.
func (c *Conn) admits(pub, src netip.AddrPort) bool {
	return true
}

// rebind moves c to a fresh public port on the same public IP, as a NAT
// does when a mapping expires: the old public address stops reaching c.
// It returns the new public address, or the old one when the host has no
// free port. n.mu is held and c is open.
func (c *Conn) rebind() netip.AddrPort {
	n := c.net
	ap, ok := n.pickPort(c.public.Addr())
	if !ok {
		return c.public
	}
	c.dropRoutes()
	c.public = ap
	n.routes[ap] = c
	return ap
}

// dropRoutes removes every public address of c from the routing table.
// n.mu is held.
func (c *Conn) dropRoutes() {
	if c.net.routes[c.public] == c {
		delete(c.net.routes, c.public)
	}
}
