package tap

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// rtnl is a NETLINK_ROUTE socket for the few requests Open makes.
//
// Netlink rather than the older ioctls: one mechanism for IPv4 and IPv6,
// any number of addresses per family (SIOCSIFADDR sets one IPv4 address
// and knows nothing of IPv6), prefix lengths instead of netmasks, address
// flags (IFA_F_NODAD), and extended acks whose text says what the kernel
// disliked.
type rtnl struct {
	fd  int
	seq uint32
	buf []byte // receive buffer
}

// rtnlTimeout bounds the wait for the kernel's answer; it answers at once,
// so this only keeps a kernel bug from hanging Open.
const rtnlTimeout = 5 * time.Second

func dialRTNL() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	r := &rtnl{fd: fd, buf: make([]byte, 1<<16)}
	// Extended acks carry a message explaining a refusal; old kernels
	// lack them, which only makes errors terser.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	tv := unix.NsecToTimeval(rtnlTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		r.close()
		return nil, os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		r.close()
		return nil, os.NewSyscallError("bind", err)
	}
	return r, nil
}

func (r *rtnl) close() { unix.Close(r.fd) }

// setLink changes the interface (RTM_NEWLINK on an existing link): its
// MAC unless mac is nil, its MTU unless mtu is 0, and with up it brings the
// link up.
func (r *rtnl) setLink(index int, mtu int, mac net.HardwareAddr, up bool) error {
	// struct ifinfomsg: family, pad, type, index, flags, change.
	msg := make([]byte, 16, 64)
	binary.NativeEndian.PutUint32(msg[4:], uint32(index))
	if up {
		binary.NativeEndian.PutUint32(msg[8:], unix.IFF_UP)
		binary.NativeEndian.PutUint32(msg[12:], unix.IFF_UP)
	}
	if mac != nil {
		msg = appendAttr(msg, unix.IFLA_ADDRESS, mac)
	}
	if mtu > 0 {
		msg = appendAttr(msg, unix.IFLA_MTU, binary.NativeEndian.AppendUint32(nil, uint32(mtu)))
	}
	return r.request(unix.RTM_NEWLINK, 0, msg)
}

// addAddr assigns p to the interface, replacing the same address if it is
// already there. IPv6 addresses skip duplicate address detection: the
// group CA hands out the VPN's addresses, and DAD would hold a new address
// back for a second or more while the VPN answers neighbour solicitations
// for every other member anyway.
func (r *rtnl) addAddr(index int, p netip.Prefix) error {
	a := p.Addr()
	family, flags := uint8(unix.AF_INET6), uint32(unix.IFA_F_NODAD)
	if a.Is4() {
		family, flags = unix.AF_INET, 0
	}
	// struct ifaddrmsg: family, prefixlen, flags, scope, index.
	msg := make([]byte, 8, 96)
	msg[0], msg[1] = family, uint8(p.Bits())
	binary.NativeEndian.PutUint32(msg[4:], uint32(index))
	msg = appendAttr(msg, unix.IFA_LOCAL, a.AsSlice())
	msg = appendAttr(msg, unix.IFA_ADDRESS, a.AsSlice())
	if a.Is4() && p.Bits() < 31 {
		// The subnet broadcast address, as `ip addr add ... brd +` sets.
		b := a.As4()
		host := ^uint32(0) >> p.Bits()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])|host)
		msg = appendAttr(msg, unix.IFA_BROADCAST, b[:])
	}
	if flags != 0 {
		msg = appendAttr(msg, unix.IFA_FLAGS, binary.NativeEndian.AppendUint32(nil, flags))
	}
	return r.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// appendAttr appends a struct rtattr and its data, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one message and waits for the kernel's acknowledgement.
func (r *rtnl) request(typ uint16, flags uint16, body []byte) error {
	r.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	binary.NativeEndian.PutUint32(msg[8:], r.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	for {
		n, _, err := unix.Recvfrom(r.fd, r.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom", err)
		}
		for b := r.buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return fmt.Errorf("netlink: malformed answer of %d bytes", l)
			}
			m := b[:l]
			b = b[min(len(b), nlmAlign(l)):]
			if binary.NativeEndian.Uint16(m[4:]) != unix.NLMSG_ERROR || binary.NativeEndian.Uint32(m[8:]) != r.seq {
				continue
			}
			return ackError(m)
		}
	}
}

// ackError decodes an NLMSG_ERROR message: error 0 is the
// acknowledgement; otherwise the errno, with the kernel's explanation
// when it sent an extended ack.
func ackError(m []byte) error {
	if len(m) < unix.SizeofNlMsghdr+4 {
		return fmt.Errorf("netlink: short acknowledgement")
	}
	code := int32(binary.NativeEndian.Uint32(m[unix.SizeofNlMsghdr:]))
	if code == 0 {
		return nil
	}
	errno := unix.Errno(-code)
	if text := extAckMessage(m); text != "" {
		return fmt.Errorf("%w (%s)", errno, text)
	}
	return errno
}

// extAckMessage returns the NLMSGERR_ATTR_MSG of an extended ack, or "".
func extAckMessage(m []byte) string {
	flags := binary.NativeEndian.Uint16(m[6:])
	if flags&unix.NLM_F_ACK_TLVS == 0 {
		return ""
	}
	// After the error code comes the request's header, and its body too
	// unless the kernel capped it.
	off := unix.SizeofNlMsghdr + 4 + unix.SizeofNlMsghdr
	if flags&unix.NLM_F_CAPPED == 0 {
		if len(m) < off {
			return ""
		}
		off = unix.SizeofNlMsghdr + 4 + nlmAlign(int(binary.NativeEndian.Uint32(m[unix.SizeofNlMsghdr+4:])))
	}
	for off+unix.SizeofRtAttr <= len(m) {
		l := int(binary.NativeEndian.Uint16(m[off:]))
		typ := binary.NativeEndian.Uint16(m[off+2:])
		if l < unix.SizeofRtAttr || off+l > len(m) {
			return ""
		}
		if typ == unix.NLMSGERR_ATTR_MSG {
			data := m[off+unix.SizeofRtAttr : off+l]
			for i, c := range data {
				if c == 0 {
					data = data[:i]
					break
				}
			}
			return string(data)
		}
		off += nlmAlign(l)
	}
	return ""
}

func nlmAlign(n int) int { return (n + 3) &^ 3 }
