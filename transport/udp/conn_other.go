//go:build !linux

package udp

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// sysConn is empty: without recvmmsg/sendmmsg a Conn moves one datagram
// per system call through the net package.
type sysConn struct{}

func (s *sysConn) init(*Conn) {}

// ReadBatch blocks until a datagram arrives and reads it into bufs[0]:
// bufs[0][:sizes[0]] came from from[0]. This portable version reads one
// datagram per call. Only one goroutine may call ReadBatch at a time.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	if c.closed.Load() {
		return 0, c.closedErr("read")
	}
	if len(bufs) == 0 || len(sizes) == 0 || len(from) == 0 {
		return 0, nil
	}
	n, addr, err := c.uc.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, c.opErr("read", netip.AddrPort{}, err)
	}
	sizes[0] = n
	from[0] = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	return 1, nil
}

// WriteBatch sends bufs[i] to to[i] for every i below min(len(bufs),
// len(to)), one datagram per system call, and reports how many were sent.
// A datagram that fails is skipped, not an error, unless the socket is
// closed. WriteBatch is safe for concurrent use.
func (c *Conn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	sent := 0
	for i := range min(len(bufs), len(to)) {
		err := c.WriteTo(bufs[i], to[i])
		if err == nil {
			sent++
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return sent, err
		}
	}
	if c.closed.Load() {
		return sent, c.closedErr("write")
	}
	return sent, nil
}

func isIPv6(uc *net.UDPConn, _ syscall.RawConn) (bool, error) {
	la, _ := uc.LocalAddr().(*net.UDPAddr)
	return la != nil && la.IP.To4() == nil, nil
}

func setBuffers(uc *net.UDPConn, _ syscall.RawConn, cfg Config) error {
	var errs []error
	if cfg.ReceiveBuffer > 0 {
		errs = append(errs, uc.SetReadBuffer(cfg.ReceiveBuffer))
	}
	if cfg.SendBuffer > 0 {
		errs = append(errs, uc.SetWriteBuffer(cfg.SendBuffer))
	}
	return errors.Join(errs...)
}

// ReadSegments is ReadBatch: this portable version never merges
// datagrams, so segs[0] == sizes[0].
func (c *Conn) ReadSegments(bufs [][]byte, sizes, segs []int, from []netip.AddrPort) (int, error) {
	if len(segs) == 0 {
		return 0, nil
	}
	n, err := c.ReadBatch(bufs, sizes, from)
	if n > 0 {
		segs[0] = sizes[0]
	}
	return n, err
}

// Offloads reports false, false: no GSO or GRO without Linux.
func (c *Conn) Offloads() (gso, gro bool) { return false, false }
