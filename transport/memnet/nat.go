package memnet

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// DefaultNATTimeout is how long a NAT keeps an idle mapping unless
// NATConfig.Timeout says otherwise: 30 s, Linux conntrack's timeout for a
// UDP flow (nf_conntrack_udp_timeout) and about the shortest that home
// routers use. RFC 4787 asks for at least two minutes, which many NATs
// ignore; keepalives tuned against 30 s (WireGuard's persistent keepalive
// is 25 s) hold mappings on all of them.
const DefaultNATTimeout = 30 * time.Second

// Behavior says what a NAT's mapping or filtering depends on, in the terms
// of RFC 4787 (sections 4.1 and 5).
type Behavior uint8

const (
	// EndpointIndependent mapping reuses one public port for every
	// destination of an inside endpoint; as filtering, it lets anyone send
	// to that port.
	EndpointIndependent Behavior = iota
	// AddressDependent mapping gives each destination IP address its own
	// public port; as filtering, a datagram from X gets in only if the
	// inside endpoint has sent to X's IP address.
	AddressDependent
	// AddressAndPortDependent mapping gives each destination address and
	// port its own public port; as filtering, a datagram from X gets in
	// only if the inside endpoint has sent to X's address and port.
	AddressAndPortDependent
)

func (b Behavior) String() string {
	switch b {
	case EndpointIndependent:
		return "endpoint-independent"
	case AddressDependent:
		return "address-dependent"
	case AddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return fmt.Sprintf("Behavior(%d)", uint8(b))
}

// mask returns the part of ap that b depends on: the key of a mapping, or
// of a filter's permission.
func (b Behavior) mask(ap netip.AddrPort) netip.AddrPort {
	switch b {
	case EndpointIndependent:
		return netip.AddrPort{}
	case AddressDependent:
		return netip.AddrPortFrom(ap.Addr(), 0)
	}
	return ap
}

// NATType names the classic NAT kinds (RFC 3489), each a NATConfig.
type NATType uint8

const (
	// FullCone is endpoint-independent mapping without filtering.
	FullCone NATType = iota
	// RestrictedCone is endpoint-independent mapping with address-dependent
	// filtering.
	RestrictedCone
	// PortRestrictedCone is endpoint-independent mapping with address- and
	// port-dependent filtering.
	PortRestrictedCone
	// Symmetric maps and filters by destination address and port: each
	// destination sees its own public port, which only it may send to.
	Symmetric
)

func (t NATType) String() string {
	switch t {
	case FullCone:
		return "FullCone"
	case RestrictedCone:
		return "RestrictedCone"
	case PortRestrictedCone:
		return "PortRestrictedCone"
	case Symmetric:
		return "Symmetric"
	}
	return fmt.Sprintf("NATType(%d)", uint8(t))
}

// Config returns the configuration of a NAT of type t, with the default
// timeout and hairpinning.
func (t NATType) Config() NATConfig {
	switch t {
	case RestrictedCone:
		return NATConfig{Filtering: AddressDependent}
	case PortRestrictedCone:
		return NATConfig{Filtering: AddressAndPortDependent}
	case Symmetric:
		return NATConfig{Mapping: AddressAndPortDependent, Filtering: AddressAndPortDependent}
	}
	return NATConfig{}
}

// NATConfig describes a NAT. The zero value is a full-cone NAT with the
// default timeout that hairpins.
type NATConfig struct {
	// Mapping says when datagrams from one inside endpoint share a public
	// port.
	Mapping Behavior
	// Filtering says which datagrams to a public port get in.
	Filtering Behavior
	// Timeout is how long a mapping lives after the last datagram sent out
	// through it, and how long the NAT remembers each destination for its
	// filter after the last datagram sent to it. Datagrams coming in don't
	// refresh either: a NAT may or may not count them (RFC 4787 REQ-6), and
	// a keepalive scheme that works without them works on both. Zero means
	// DefaultNATTimeout; at most 24 hours.
	Timeout time.Duration
	// NoHairpin drops datagrams that an inside host sends to the NAT's own
	// public address. By default they are looped back to the host behind
	// that public port, from the sender's public address (RFC 4787 REQ-9),
	// as most home NATs do.
	NoHairpin bool
}

// Validate reports every out-of-range field.
func (c NATConfig) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		b    Behavior
	}{{"mapping", c.Mapping}, {"filtering", c.Filtering}} {
		if f.b > AddressAndPortDependent {
			errs = append(errs, fmt.Errorf("memnet: nat.%s: %d not in [0,%d]", f.name, f.b, AddressAndPortDependent))
		}
	}
	if c.Timeout < 0 || c.Timeout > maxDelay {
		errs = append(errs, fmt.Errorf("memnet: nat.timeout: %v not in [0,%v]", c.Timeout, maxDelay))
	}
	return errors.Join(errs...)
}

// NAT is a router with one public IP address in front of a private
// network: Conns created by its Listen are bound to private addresses and
// reach the public network through it. Its methods may be called
// concurrently.
//
// The private network is the NAT's own address space, so two NATs may use
// the same private addresses. A datagram from inside to the IP address of
// any Conn ever bound behind the same NAT (a host stays on its LAN when
// its sockets close) stays on that network and arrives from the sender's
// private address; anything else goes out through the NAT.
type NAT struct {
	// immutable after NewNAT
	net    *Network
	public netip.Addr
	cfg    NATConfig // Timeout is set
	// perms: filtering depends on more than the mapping key, so each
	// mapping remembers the destinations it sent to. Otherwise the mapping
	// key holds all the filter needs.
	perms bool

	// net.mu guards the following.
	lan    map[netip.AddrPort]*Conn // by private address
	hosts  map[netip.Addr]struct{}  // private IPs ever bound
	byPort map[uint16]*mapping      // by public port
	swept  time.Time                // last sweep of expired state
}

// mapping is a public port of a NAT, held for one inside Conn.
type mapping struct {
	conn *Conn
	key  netip.AddrPort // Mapping.mask of the destination; key in conn.out
	pub  netip.AddrPort
	last time.Time // last datagram out through it
	// sent holds, when the NAT's perms is set, the Filtering.mask of each
	// destination and when the last datagram out went there.
	sent map[netip.AddrPort]time.Time
}

// NewNAT adds a NAT with the public IP address public. The address must be
// a specific one that no Conn or other NAT uses; Listen on it fails
// afterwards with ErrAddrInUse.
func (n *Network) NewNAT(public netip.Addr, cfg NATConfig) (*NAT, error) {
	ip := public.Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		return nil, fmt.Errorf("memnet: nat %v: need a specific IP address", public)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w (nat %v)", err, ip)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultNATTimeout
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("memnet: nat %v: %w", ip, errClosed)
	}
	inUse := n.nats[ip] != nil
	// Setup is rare; scanning every address is fine.
	for ap := range n.bound {
		inUse = inUse || ap.Addr() == ip
	}
	for ap := range n.routes {
		inUse = inUse || ap.Addr() == ip
	}
	if inUse {
		return nil, fmt.Errorf("memnet: nat %v: %w", ip, ErrAddrInUse)
	}
	nat := &NAT{
		net:    n,
		public: ip,
		cfg:    cfg,
		perms:  cfg.Filtering > cfg.Mapping,
		lan:    make(map[netip.AddrPort]*Conn),
		hosts:  make(map[netip.Addr]struct{}),
		byPort: make(map[uint16]*mapping),
	}
	if n.nats == nil {
		n.nats = make(map[netip.Addr]*NAT)
	}
	n.nats[ip] = nat
	return nat, nil
}

// Listen returns a Conn bound to the private address addr behind nat.
// Port 0 picks a free ephemeral port with the network's generator. The
// address must be a specific one of the public address's family, other
// than the public address; one in use behind nat is an error wrapping
// ErrAddrInUse.
func (nat *NAT) Listen(addr netip.AddrPort) (*Conn, error) {
	return nat.net.listen(nat, addr)
}

// Addr returns nat's public IP address.
func (nat *NAT) Addr() netip.Addr { return nat.public }

// Config returns nat's configuration, with the timeout it uses.
func (nat *NAT) Config() NATConfig { return nat.cfg }

// Flush forgets every mapping, as `conntrack -F` does: datagrams to the
// old public ports are dropped, and the next datagram out of each Conn
// gets a new public port.
func (nat *NAT) Flush() {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	for _, m := range nat.byPort {
		nat.remove(m)
	}
}

// Mappings returns how many mappings nat holds that have not expired.
func (nat *NAT) Mappings() int {
	now := time.Now()
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	k := 0
	for _, m := range nat.byPort {
		if !nat.expired(m.last, now) {
			k++
		}
	}
	return k
}

// NAT returns the NAT c is behind, or nil for a Conn on the public
// network.
func (c *Conn) NAT() *NAT { return c.nat }

// route decides where c's datagram to dst goes: it leaves from src and
// travels in realm, the NAT whose private network it stays on, or nil for
// the public network. ok is false when the NAT drops it. n.mu is held and
// c is open.
func (nat *NAT) route(c *Conn, dst netip.AddrPort, clk *clock) (src netip.AddrPort, realm *NAT, ok bool) {
	ip := dst.Addr()
	// One private IP behind the NAT, the usual case, needs no lookup: it is
	// c's own.
	if len(nat.hosts) == 1 && ip == c.local.Addr() {
		return c.local, nat, true
	}
	if len(nat.hosts) > 1 {
		if _, ok := nat.hosts[ip]; ok {
			return c.local, nat, true
		}
	}
	if (ip == nat.public && nat.cfg.NoHairpin) || ip.Is4() != nat.public.Is4() {
		return netip.AddrPort{}, nil, false
	}
	m := nat.outbound(c, dst, clk.now())
	if m == nil {
		return netip.AddrPort{}, nil, false
	}
	return m.pub, nil, true
}

// outbound returns c's mapping towards dst, refreshed, creating it if
// needed; nil when no public port is free. n.mu is held.
func (nat *NAT) outbound(c *Conn, dst netip.AddrPort, now time.Time) *mapping {
	if now.Sub(nat.swept) >= nat.cfg.Timeout {
		nat.sweep(now)
	}
	k := nat.cfg.Mapping.mask(dst)
	m := c.out[k]
	if m != nil && nat.expired(m.last, now) {
		nat.remove(m)
		m = nil
	}
	if m == nil {
		ap, ok := nat.net.pickPort(nil, nat.public)
		if !ok {
			// Expired mappings may hold the ports a sweep is not due
			// to free yet.
			nat.sweep(now)
			if ap, ok = nat.net.pickPort(nil, nat.public); !ok {
				return nil
			}
		}
		m = &mapping{conn: c, key: k, pub: ap}
		if nat.perms {
			m.sent = make(map[netip.AddrPort]time.Time)
		}
		if c.out == nil {
			c.out = make(map[netip.AddrPort]*mapping)
		}
		c.out[k] = m
		nat.byPort[ap.Port()] = m
		nat.net.routes[ap] = c
	}
	m.last = now
	if m.sent != nil {
		m.sent[nat.cfg.Filtering.mask(dst)] = now
	}
	return m
}

// admits reports whether a datagram from src to the public address pub
// gets through nat. n.mu is held.
func (nat *NAT) admits(pub, src netip.AddrPort, now time.Time) bool {
	m := nat.byPort[pub.Port()]
	if m == nil {
		return false
	}
	if nat.expired(m.last, now) {
		nat.remove(m)
		return false
	}
	f := nat.cfg.Filtering
	if m.sent == nil {
		return f.mask(src) == f.mask(m.key)
	}
	t, ok := m.sent[f.mask(src)]
	return ok && !nat.expired(t, now)
}

// expired reports whether state last refreshed at t has timed out.
func (nat *NAT) expired(t, now time.Time) bool {
	return now.Sub(t) >= nat.cfg.Timeout
}

// sweep drops the expired mappings and filter permissions. Expiry is
// checked where state is used, so this only bounds memory; it runs from
// outbound at most once per timeout. n.mu is held.
func (nat *NAT) sweep(now time.Time) {
	nat.swept = now
	for _, m := range nat.byPort {
		if nat.expired(m.last, now) {
			nat.remove(m)
			continue
		}
		for k, t := range m.sent {
			if nat.expired(t, now) {
				delete(m.sent, k)
			}
		}
	}
}

// remove forgets m and frees its public port. n.mu is held.
func (nat *NAT) remove(m *mapping) {
	delete(nat.byPort, m.pub.Port())
	delete(nat.net.routes, m.pub)
	delete(m.conn.out, m.key)
}

// publicAddr returns c's endpoint-independent mapping, or the zero
// AddrPort. n.mu is held.
func (nat *NAT) publicAddr(c *Conn) netip.AddrPort {
	if nat.cfg.Mapping != EndpointIndependent {
		return netip.AddrPort{}
	}
	m := c.out[netip.AddrPort{}]
	if m == nil || nat.expired(m.last, time.Now()) {
		return netip.AddrPort{}
	}
	return m.pub
}

// forget drops every mapping of c. n.mu is held.
func (nat *NAT) forget(c *Conn) {
	for _, m := range c.out {
		nat.remove(m)
	}
}

// unbind takes the closing c off nat's private network and drops its
// mappings: nothing could use them. n.mu is held.
func (nat *NAT) unbind(c *Conn) {
	if nat.lan[c.local] == c {
		delete(nat.lan, c.local)
	}
	nat.forget(c)
}

// rebind moves c to a fresh public port on the same public IP, as a NAT
// does when a mapping expires: the old public address stops reaching c.
// It returns the new public address, or the old one when the host has no
// free port. Behind a NAT, c's mappings are dropped and the next datagram
// out makes new ones; it returns the zero AddrPort. n.mu is held and c is
// open.
func (c *Conn) rebind() netip.AddrPort {
	if c.nat != nil {
		c.nat.forget(c)
		return netip.AddrPort{}
	}
	n := c.net
	ap, ok := n.pickPort(nil, c.public.Addr())
	if !ok {
		return c.public
	}
	c.dropRoutes()
	c.public = ap
	n.routes[ap] = c
	return ap
}

// dropRoutes removes the public address of c, which is not behind a NAT,
// from the routing table. n.mu is held.
func (c *Conn) dropRoutes() {
	if c.net.routes[c.public] == c {
		delete(c.net.routes, c.public)
	}
}
