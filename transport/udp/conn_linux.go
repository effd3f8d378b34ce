//go:build linux

package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr from <sys/socket.h>: a msghdr and the byte
// count of its datagram. x/sys/unix does not export it. The padding makes
// the size a multiple of the pointer size, as C does: 64 bytes on 64-bit
// systems, 32 on 32-bit ones.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
	_   [mmsgPad]byte
}

const mmsgPad = unsafe.Sizeof(uintptr(0)) - 4

// sysConn is the recvmmsg/sendmmsg state of a Conn. Everything the kernel
// reads or writes is allocated once in init: each message i points at
// iovec i and sockaddr i for the life of the Conn, and only the iovec
// base, the lengths and the addresses change per call.
//
// golang.org/x/net/ipv4 and ipv6 offer ReadBatch and WriteBatch on top of
// the same system calls, but their ReadBatch allocates a *net.UDPAddr per
// message received (and their messages carry []byte slices that must be
// converted per call); this code exists so the packet path allocates
// nothing.
type sysConn struct {
	v6 bool // copy of Conn.v6

	// Read state, owned by the one goroutine inside ReadBatch.
	rmsgs  []mmsghdr
	riovs  []unix.Iovec
	rnames []unix.RawSockaddrInet6 // large enough for sockaddr_in too
	rcount int                     // messages offered to recvmmsg
	rn     int                     // messages received
	rerrno unix.Errno              // failure of recvmmsg, 0 if none
	readFn func(fd uintptr) bool   // s.recv, stored once: no closure per call
	rzone  zoneCache

	wmu     sync.Mutex // guards the write state; WriteBatch may be called concurrently
	wmsgs   []mmsghdr
	wiovs   []unix.Iovec
	wnames  []unix.RawSockaddrInet6
	wcount  int        // messages prepared
	woff    int        // first message not yet sent or skipped
	wsent   int        // messages the kernel accepted
	werrno  unix.Errno // socket-level failure of sendmmsg, 0 if none
	writeFn func(fd uintptr) bool
	wzone   zoneCache
}

func (s *sysConn) init(c *Conn) {
	s.v6 = c.v6
	s.rmsgs, s.riovs, s.rnames = makeMsgs(c.batch)
	s.wmsgs, s.wiovs, s.wnames = makeMsgs(c.batch)
	s.readFn = s.recv
	s.writeFn = s.send
}

func makeMsgs(n int) ([]mmsghdr, []unix.Iovec, []unix.RawSockaddrInet6) {
	msgs := make([]mmsghdr, n)
	iovs := make([]unix.Iovec, n)
	names := make([]unix.RawSockaddrInet6, n)
	for i := range msgs {
		h := &msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &iovs[i]
		h.SetIovlen(1)
	}
	return msgs, iovs, names
}

// ReadBatch blocks until at least one datagram arrives, then reads up to
// min(len(bufs), BatchSize()) datagrams with one recvmmsg(2):
// bufs[i][:sizes[i]] came from from[i]. A datagram longer than its buffer
// is truncated to the buffer. Only one goroutine may call ReadBatch at a
// time.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	if c.closed.Load() {
		return 0, c.closedErr("read")
	}
	k := min(len(bufs), len(sizes), len(from), c.batch)
	if k == 0 {
		return 0, nil
	}
	s := &c.sys
	for i := range k {
		s.riovs[i].Base = unsafe.SliceData(bufs[i])
		s.riovs[i].SetLen(len(bufs[i]))
		s.rmsgs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	s.rcount, s.rn, s.rerrno = k, 0, 0
	err := c.rc.Read(s.readFn)
	for i := range k {
		s.riovs[i].Base = nil // do not keep the caller's buffers reachable
	}
	if err != nil {
		return 0, c.opErr("read", netip.AddrPort{}, err)
	}
	if s.rerrno != 0 {
		return 0, c.opErr("read", netip.AddrPort{}, os.NewSyscallError("recvmmsg", s.rerrno))
	}
	for i := range s.rn {
		sizes[i] = int(s.rmsgs[i].Len)
		from[i] = s.source(i)
	}
	return s.rn, nil
}

// recv is the syscall.RawConn.Read callback: it reports false when no
// datagram is queued, and the netpoller parks the goroutine until one is.
func (s *sysConn) recv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&s.rmsgs[0])), uintptr(s.rcount),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			s.rn = int(n)
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN:
			// An ICMP error about an earlier send to one peer: reading
			// it cleared it, and it says nothing about this socket.
		default:
			s.rerrno = e
			return true
		}
	}
}

// source parses the sockaddr of received message i; IPv4-mapped addresses
// are unmapped.
func (s *sysConn) source(i int) netip.AddrPort {
	sa := &s.rnames[i]
	switch sa.Family {
	case unix.AF_INET6:
		ip := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && ip.Is6() {
			ip = ip.WithZone(s.rzone.name(sa.Scope_id))
		}
		return netip.AddrPortFrom(ip, getPort(&sa.Port))
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	}
	return netip.AddrPort{}
}

// WriteBatch sends bufs[i] to to[i] for every i below min(len(bufs),
// len(to)), BatchSize datagrams per sendmmsg(2), and reports how many the
// kernel accepted. It waits while the send buffer is full. A datagram that
// cannot be sent for a reason of its own (an invalid or unreachable
// destination, an oversized datagram, an IPv6 destination on an IPv4
// socket) is skipped, so one bad destination does not hold up the others;
// skipped datagrams are not counted in n and are not an error. bufs is not
// retained. WriteBatch is safe for concurrent use.
func (c *Conn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	if c.closed.Load() {
		return 0, c.closedErr("write")
	}
	n := min(len(bufs), len(to))
	s := &c.sys
	s.wmu.Lock()
	defer s.wmu.Unlock()
	sent := 0
	for start := 0; start < n; start += c.batch {
		end := min(start+c.batch, n)
		k := 0
		for i := start; i < end; i++ {
			if !s.putName(k, to[i]) {
				continue
			}
			s.wiovs[k].Base = unsafe.SliceData(bufs[i])
			s.wiovs[k].SetLen(len(bufs[i]))
			k++
		}
		if k == 0 {
			continue
		}
		s.wcount, s.woff, s.wsent, s.werrno = k, 0, 0, 0
		err := c.rc.Write(s.writeFn)
		for i := range k {
			s.wiovs[i].Base = nil
		}
		sent += s.wsent
		if err != nil {
			return sent, c.opErr("write", netip.AddrPort{}, err)
		}
		if s.werrno != 0 {
			return sent, c.opErr("write", netip.AddrPort{}, os.NewSyscallError("sendmmsg", s.werrno))
		}
	}
	return sent, nil
}

// send is the syscall.RawConn.Write callback. sendmmsg stops at the first
// datagram that fails and reports the ones before it; the next call then
// fails on that datagram alone, which is how a per-destination error is
// attributed and skipped.
func (s *sysConn) send(fd uintptr) bool {
	for s.woff < s.wcount {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&s.wmsgs[s.woff])), uintptr(s.wcount-s.woff),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == 0 && n > 0:
			s.woff += int(n)
			s.wsent += int(n)
		case e == 0: // sendmmsg never reports 0 of >0; do not spin if it does
			s.woff++
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false // send buffer full: the netpoller waits for room
		case skippable(e):
			s.woff++
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

// skippable reports whether sendmmsg failing with e concerns only the
// datagram it was sending.
//
// ENOBUFS is among them: Linux returns it when a queue below the socket
// (qdisc, device, neighbour) had no room, and the datagram is already
// gone. Waiting for the netpoller instead could wait forever, because the
// socket itself stays writable and epoll is edge-triggered.
func skippable(e unix.Errno) bool {
	switch e {
	case unix.EMSGSIZE, // larger than the path or protocol allows
		unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, // ICMP errors
		unix.EHOSTDOWN, unix.ENETDOWN,
		unix.EACCES, unix.EPERM, // broadcast destination, firewall
		unix.EADDRNOTAVAIL, unix.EAFNOSUPPORT, unix.EINVAL, // destination the socket cannot reach
		unix.ENOBUFS:
		return true
	}
	return false
}

// putName writes to into the sockaddr of outgoing message k. It reports
// false for a destination the socket can never reach.
func (s *sysConn) putName(k int, to netip.AddrPort) bool {
	ip := to.Addr()
	if !ip.IsValid() || to.Port() == 0 {
		return false
	}
	sa := &s.wnames[k]
	h := &s.wmsgs[k].Hdr
	if !s.v6 {
		ip = ip.Unmap()
		if !ip.Is4() {
			return false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.As4()}
		putPort(&sa4.Port, to.Port())
		h.Namelen = unix.SizeofSockaddrInet4
		return true
	}
	var scope uint32
	if z := ip.Zone(); z != "" {
		if scope = s.wzone.index(z); scope == 0 {
			return false // no such interface
		}
	}
	// As16 maps an IPv4 address to ::ffff:a.b.c.d for the dual-stack socket.
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16(), Scope_id: scope}
	putPort(&sa.Port, to.Port())
	h.Namelen = unix.SizeofSockaddrInet6
	return true
}

// getPort and putPort convert a sockaddr port, stored in network byte
// order, whatever the host byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func isIPv6(_ *net.UDPConn, rc syscall.RawConn) (bool, error) {
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return false, err
	}
	if serr != nil {
		return false, os.NewSyscallError("getsockopt SO_DOMAIN", serr)
	}
	return domain == unix.AF_INET6, nil
}

func setBuffers(_ *net.UDPConn, rc syscall.RawConn, cfg Config) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(
			setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, cfg.ReceiveBuffer, "receive"),
			setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, cfg.SendBuffer, "send"),
		)
	}); err != nil {
		return err
	}
	return serr
}

// setBuffer sets a socket buffer size, first with the FORCE option, which
// ignores net.core.[rw]mem_max but needs CAP_NET_ADMIN, then with the plain
// one, which the kernel silently caps at that limit.
func setBuffer(fd, force, plain, size int, name string) error {
	if size == 0 {
		return nil
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return fmt.Errorf("set %s buffer to %d: %w", name, size, os.NewSyscallError("setsockopt", err))
	}
	return nil
}
