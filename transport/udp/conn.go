package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/ringvpn/ringvpn/transport"
)

// Conn is a UDP socket, batched. It implements transport.PacketConn:
// ReadBatch is called from one goroutine at a time, WriteTo and WriteBatch
// may be called concurrently, and after Close every method returns an
// error satisfying errors.Is(err, net.ErrClosed).
//
// Addresses handed to callers are never IPv4-mapped: on a dual-stack socket
// an IPv4 peer is reported as a plain IPv4 address, and plain IPv4
// destinations are accepted.
type Conn struct {
	uc    *net.UDPConn
	rc    syscall.RawConn
	local netip.AddrPort
	laddr net.Addr // local address for errors, made once
	v6    bool     // AF_INET6 socket (dual-stack); false for AF_INET
	batch int
	// offload allows UDP GSO and GRO (Config.Offload).
	offload bool

	closed atomic.Bool

	sys sysConn // batch I/O state, per platform
}

var _ transport.PacketConn = (*Conn)(nil)

// Listen opens a UDP socket bound to addr.
//
// An IPv4 address (or an IPv4-mapped IPv6 one) opens an IPv4-only socket.
// An IPv6 address, an unspecified address (0.0.0.0 or ::) or the zero
// netip.AddrPort opens a dual-stack socket on which IPv4 peers are reported
// as plain IPv4 addresses. Port 0 picks a free port; LocalAddr reports it.
func Listen(addr netip.AddrPort, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("udp: listen %s: %w", addrString(addr), err)
	}
	network, laddr := listenAddr(addr)
	uc, err := net.ListenUDP(network, laddr)
	if err != nil {
		// The *net.OpError repeats the address; keep only its cause.
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return nil, fmt.Errorf("udp: listen %s: %w", addrString(addr), err)
	}
	c, err := newConn(uc, cfg)
	if err != nil {
		_ = uc.Close()
		return nil, fmt.Errorf("udp: listen %s: %w", addrString(addr), err)
	}
	return c, nil
}

// listenAddr chooses the network and bind address for addr; see Listen.
func listenAddr(addr netip.AddrPort) (string, *net.UDPAddr) {
	ip := addr.Addr().Unmap()
	port := int(addr.Port())
	switch {
	case !ip.IsValid() || ip.IsUnspecified():
		// A nil IP on "udp" binds [::] with IPV6_V6ONLY off (or 0.0.0.0
		// where the host has no IPv6).
		return "udp", &net.UDPAddr{Port: port}
	case ip.Is4():
		return "udp4", &net.UDPAddr{IP: ip.AsSlice(), Port: port}
	default:
		return "udp", &net.UDPAddr{IP: ip.AsSlice(), Port: port, Zone: ip.Zone()}
	}
}

func addrString(addr netip.AddrPort) string {
	if !addr.Addr().IsValid() {
		return ":" + strconv.Itoa(int(addr.Port()))
	}
	return addr.String()
}

func newConn(uc *net.UDPConn, cfg Config) (*Conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	la, ok := uc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("unexpected local address %v", uc.LocalAddr())
	}
	c := &Conn{
		uc:    uc,
		rc:    rc,
		local: la.AddrPort(),
		laddr: la,
		batch: cfg.BatchSize,

		offload: cfg.Offload != "off",
	}
	if c.v6, err = isIPv6(uc, rc); err != nil {
		return nil, err
	}
	if err := setBuffers(uc, rc, cfg); err != nil {
		return nil, err
	}
	c.sys.init(c)
	return c, nil
}

// LocalAddr is the address the socket is bound to, with the real port.
// A dual-stack socket on the unspecified address reports [::]:port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// BatchSize is the most datagrams one system call moves.
func (c *Conn) BatchSize() int { return c.batch }

// WriteTo sends one datagram to to. b is not retained. An error concerns
// this datagram only (for example an unreachable or invalid destination)
// unless it satisfies errors.Is(err, net.ErrClosed).
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) error {
	if c.closed.Load() {
		return c.closedErr("write")
	}
	if !c.v6 {
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	}
	// On an AF_INET6 socket WriteToUDPAddrPort sends an IPv4 destination
	// as ::ffff:a.b.c.d (netip.Addr.As16), without allocating.
	if _, err := c.uc.WriteToUDPAddrPort(b, to); err != nil {
		return c.opErr("write", to, err)
	}
	return nil
}

// Close closes the socket and unblocks a pending ReadBatch. Closing twice
// returns an error satisfying errors.Is(err, net.ErrClosed).
func (c *Conn) Close() error {
	c.closed.Store(true)
	if err := c.uc.Close(); err != nil {
		return c.opErr("close", netip.AddrPort{}, err)
	}
	return nil
}

func (c *Conn) closedErr(op string) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.laddr, Err: net.ErrClosed}
}

// opErr names op, the local address and, when valid, the remote address
// to in err. Errors the net package already wrapped lose that wrapping so
// no address is repeated.
func (c *Conn) opErr(op string, to netip.AddrPort, err error) error {
	if errors.Is(err, net.ErrClosed) {
		return c.closedErr(op)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	e := &net.OpError{Op: op, Net: "udp", Source: c.laddr, Err: err}
	if to.Addr().IsValid() {
		e.Addr = net.UDPAddrFromAddrPort(to)
	}
	return e
}
