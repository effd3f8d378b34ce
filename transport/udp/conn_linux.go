//go:build linux

package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
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
	rctrl  []byte // a UDP_GRO control message per message, once GRO is on

	groTried bool        // the reader asked for GRO (ReadSegments)
	gro      atomic.Bool // the socket merges datagrams; read by Offloads

	wmu      sync.Mutex // guards the write state; WriteBatch may be called concurrently
	wmsgs    []mmsghdr
	wiovs    []unix.Iovec // message k's datagrams are wiovs[h.Iov:][:wsegs[k]]
	wnames   []unix.RawSockaddrInet6
	wctrl    []byte     // a UDP_SEGMENT control message per message
	wfirst   []int      // index in the caller's bufs of message k's first datagram
	wsegs    []int      // datagrams in message k
	wcount   int        // messages prepared
	wiovUsed int        // iovecs prepared
	woff     int        // first message not yet sent or skipped
	wsent    int        // datagrams the kernel accepted
	wsplit   int        // a run the kernel refused as one, or -1
	werrno   unix.Errno // socket-level failure of sendmmsg, 0 if none
	gso      bool       // runs go out as one message (UDP_SEGMENT)
	writeFn  func(fd uintptr) bool
	wzone    zoneCache
}

func (s *sysConn) init(c *Conn) {
	s.v6 = c.v6
	s.rmsgs, s.riovs, s.rnames = makeMsgs(c.batch)
	s.wmsgs, _, s.wnames = makeMsgs(c.batch)
	s.wiovs = make([]unix.Iovec, maxWriteIovecs)
	s.wctrl = make([]byte, c.batch*gsoCmsgSpace)
	s.wfirst = make([]int, c.batch)
	s.wsegs = make([]int, c.batch)
	s.gso = c.offload && supportsGSO(c.rc)
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
// time, and not on a Conn whose ReadSegments was called.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	return c.read(bufs, sizes, nil, from)
}

// ReadSegments is ReadBatch for a reader that takes datagrams merged by
// the kernel (UDP GRO): bufs[i][:sizes[i]] holds datagrams from from[i],
// each segs[i] bytes long but the last, which may be shorter. The first
// call turns GRO on when Config.Offload allows it and the kernel has it
// (Linux 5.0+); without it every read is one datagram (segs[i] ==
// sizes[i]). A merged read is at most 65535 bytes, and a buffer shorter
// than that may lose datagrams, so each should be that long. After it,
// ReadBatch must not be used.
func (c *Conn) ReadSegments(bufs [][]byte, sizes, segs []int, from []netip.AddrPort) (int, error) {
	if !c.sys.groTried {
		c.sys.groTried = true
		if c.offload {
			c.sys.enableGRO(c.rc)
		}
	}
	return c.read(bufs, sizes, segs[:min(len(segs), len(sizes))], from)
}

// read is ReadBatch, and ReadSegments when segs is not nil.
func (c *Conn) read(bufs [][]byte, sizes, segs []int, from []netip.AddrPort) (int, error) {
	if c.closed.Load() {
		return 0, c.closedErr("read")
	}
	k := min(len(bufs), len(sizes), len(from), c.batch)
	if segs != nil {
		k = min(k, len(segs))
	}
	if k == 0 {
		return 0, nil
	}
	s := &c.sys
	gro := s.gro.Load()
	for i := range k {
		s.riovs[i].Base = unsafe.SliceData(bufs[i])
		s.riovs[i].SetLen(len(bufs[i]))
		h := &s.rmsgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		if gro {
			h.SetControllen(groCmsgSpace)
		}
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
		if segs != nil {
			segs[i] = sizes[i]
			if gro {
				if g := s.segmentSize(i); g > 0 && g < sizes[i] {
					segs[i] = g
				}
			}
		}
	}
	return s.rn, nil
}

var groCmsgSpace = unix.CmsgSpace(4)

// enableGRO turns UDP_GRO on and gives every read message room for its
// control message. Only the reader calls it, before its read.
func (s *sysConn) enableGRO(rc syscall.RawConn) {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return
	}
	s.rctrl = make([]byte, len(s.rmsgs)*groCmsgSpace)
	for i := range s.rmsgs {
		s.rmsgs[i].Hdr.Control = &s.rctrl[i*groCmsgSpace]
	}
	s.gro.Store(true)
}

// segmentSize reads the UDP_GRO control message of received message i:
// the length of each merged datagram, or 0 if it was not merged.
func (s *sysConn) segmentSize(i int) int {
	h := &s.rmsgs[i].Hdr
	ctrl := s.rctrl[i*groCmsgSpace : (i+1)*groCmsgSpace]
	for off := 0; off+unix.SizeofCmsghdr <= int(h.Controllen); {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[off]))
		if c.Len < unix.SizeofCmsghdr || off+int(c.Len) > int(h.Controllen) {
			return 0
		}
		if c.Level == unix.SOL_UDP && c.Type == unix.UDP_GRO && int(c.Len) >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&ctrl[off+unix.CmsgLen(0)])))
		}
		off += unix.CmsgSpace(int(c.Len) - unix.CmsgLen(0))
	}
	return 0
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
// len(to)) and reports how many datagrams the kernel accepted. It waits
// while the send buffer is full. A datagram that cannot be sent for a
// reason of its own (an invalid or unreachable destination, an oversized
// datagram, an IPv6 destination on an IPv4 socket) is skipped, so one bad
// destination does not hold up the others; skipped datagrams are not
// counted in n and are not an error. bufs is not retained. WriteBatch is
// safe for concurrent use.
//
// Up to BatchSize messages go out per sendmmsg(2). With UDP GSO (see
// Config.Offload), a run of consecutive datagrams to one destination, all
// of one length but the last, which may be shorter, is one message: the
// kernel cuts it into datagrams after routing it once, which is most of
// what a datagram costs to send.
func (c *Conn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	if c.closed.Load() {
		return 0, c.closedErr("write")
	}
	n := min(len(bufs), len(to))
	s := &c.sys
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return c.writeLocked(bufs[:n], to[:n], s.gso)
}

// writeLocked is WriteBatch with s.wmu held; gso allows runs.
func (c *Conn) writeLocked(bufs [][]byte, to []netip.AddrPort, gso bool) (int, error) {
	s := &c.sys
	sent := 0
	for i := 0; i < len(bufs); {
		consumed := s.pack(bufs[i:], to[i:], gso)
		if s.wcount == 0 {
			i += consumed
			continue
		}
		s.woff, s.wsent, s.werrno, s.wsplit = 0, 0, 0, -1
		err := c.rc.Write(s.writeFn)
		for j := range s.wiovUsed {
			s.wiovs[j].Base = nil // do not keep the caller's buffers reachable
		}
		sent += s.wsent
		if err != nil {
			return sent, c.opErr("write", netip.AddrPort{}, err)
		}
		if s.werrno != 0 {
			return sent, c.opErr("write", netip.AddrPort{}, os.NewSyscallError("sendmmsg", s.werrno))
		}
		if k := s.wsplit; k >= 0 {
			// The kernel refused a run: send its datagrams one by one,
			// then go on after it.
			first, segs := s.wfirst[k], s.wsegs[k]
			m, err := c.writeLocked(bufs[i+first:i+first+segs], to[i+first:i+first+segs], false)
			sent += m
			if err != nil {
				return sent, err
			}
			consumed = first + segs
		}
		i += consumed
	}
	return sent, nil
}

// GSO limits: the kernel takes at most 64 segments per send
// (UDP_MAX_SEGMENTS on older kernels), and a message must fit one IP
// datagram's 16-bit length with its headers.
const (
	maxSegments = 64
	maxGSOBytes = 65000
	// maxWriteIovecs bounds the datagrams one sendmmsg carries.
	maxWriteIovecs = 1024
)

// pack prepares the messages for a prefix of bufs (at most BatchSize
// messages and len(wiovs) datagrams), setting wcount, and reports how
// many datagrams it consumed, skipped ones included.
func (s *sysConn) pack(bufs [][]byte, to []netip.AddrPort, gso bool) int {
	k, j := 0, 0 // messages started, iovecs used
	var runTo netip.AddrPort
	runLen, runBytes, open := 0, 0, false // open: the last message takes more
	i := 0
	for ; i < len(bufs); i++ {
		b := bufs[i]
		if open && to[i] == runTo && len(b) <= runLen && len(b) > 0 &&
			s.wsegs[k-1] < maxSegments && runBytes+len(b) <= maxGSOBytes && j < len(s.wiovs) {
			s.wiovs[j].Base = unsafe.SliceData(b)
			s.wiovs[j].SetLen(len(b))
			j++
			s.wsegs[k-1]++
			runBytes += len(b)
			open = len(b) == runLen // a shorter datagram ends the run
			continue
		}
		if k == len(s.wmsgs) || j == len(s.wiovs) {
			break
		}
		if !s.putName(k, to[i]) {
			continue
		}
		h := &s.wmsgs[k].Hdr
		h.Iov = &s.wiovs[j]
		s.wiovs[j].Base = unsafe.SliceData(b)
		s.wiovs[j].SetLen(len(b))
		s.wfirst[k], s.wsegs[k] = i, 1
		j++
		k++
		runTo, runLen, runBytes, open = to[i], len(b), len(b), gso && len(b) > 0
	}
	for m := range k {
		h := &s.wmsgs[m].Hdr
		h.SetIovlen(s.wsegs[m])
		if s.wsegs[m] > 1 {
			ctrl := s.wctrl[m*gsoCmsgSpace : (m+1)*gsoCmsgSpace]
			putSegmentSize(ctrl, uint16(h.Iov.Len)) // the first datagram's length
			h.Control = &ctrl[0]
			h.SetControllen(gsoCmsgSpace)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
	}
	s.wcount, s.wiovUsed = k, j
	return i
}

var gsoCmsgSpace = unix.CmsgSpace(2)

// putSegmentSize writes a UDP_SEGMENT control message into b.
func putSegmentSize(b []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = size
}

// send is the syscall.RawConn.Write callback. sendmmsg stops at the first
// message that fails and reports the ones before it; the next call then
// fails on that message alone, which is how a per-destination error is
// attributed and skipped. A run the kernel refuses as a run (no GSO on
// the route's device, or segments too large for its MTU) stops the call
// with wsplit set, for WriteBatch to send its datagrams one by one.
func (s *sysConn) send(fd uintptr) bool {
	for s.woff < s.wcount {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&s.wmsgs[s.woff])), uintptr(s.wcount-s.woff),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == 0 && n > 0:
			for m := s.woff; m < s.woff+int(n); m++ {
				s.wsent += s.wsegs[m]
			}
			s.woff += int(n)
		case e == 0: // sendmmsg never reports 0 of >0; do not spin if it does
			s.woff++
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false // send buffer full: the netpoller waits for room
		case s.wsegs[s.woff] > 1 && gsoRefused(e):
			if e == unix.EIO {
				s.gso = false // the device can't checksum: no GSO from now on
			}
			s.wsplit = s.woff
			return true
		case skippable(e):
			s.woff++
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

// gsoRefused reports whether a run failing with e may go through as
// separate datagrams: EIO when the device has no checksum offload,
// EINVAL or EMSGSIZE when a segment exceeds the route's MTU.
func gsoRefused(e unix.Errno) bool {
	return e == unix.EIO || e == unix.EINVAL || e == unix.EMSGSIZE
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

// supportsGSO reports whether the kernel knows UDP_SEGMENT (Linux 4.18+).
func supportsGSO(rc syscall.RawConn) bool {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false
	}
	return serr == nil
}

// Offloads reports whether the Conn sends runs with UDP GSO and reads
// with UDP GRO.
func (c *Conn) Offloads() (gso, gro bool) {
	c.sys.wmu.Lock()
	gso = c.sys.gso
	c.sys.wmu.Unlock()
	return gso, c.sys.gro.Load()
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
