package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// addrComparer lets cmp compare netip.Addr, whose fields are unexported.
var addrComparer = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// Test builders, written independently of the package's own builders.

var (
	macLocal = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x01}
	macPeer  = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	ip4Local = netip.MustParseAddr("10.77.0.1")
	ip4Peer  = netip.MustParseAddr("10.77.0.2")
	ip6Local = netip.MustParseAddr("fd77::1")
	ip6Peer  = netip.MustParseAddr("fd77::2")
)

// ethFrame returns an untagged Ethernet frame.
func ethFrame(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := append(append(bytes.Clone(dst), src...), byte(typ>>8), byte(typ))
	return append(f, payload...)
}

// ipv4Packet returns an IPv4 packet with a correct header checksum. flags
// is the 16-bit flags and fragment offset word.
func ipv4Packet(proto uint8, src, dst netip.Addr, flags uint16, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], 0x1234)
	binary.BigEndian.PutUint16(h[6:], flags)
	h[8], h[9] = 64, proto
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], naiveChecksum(h, 0))
	return append(h, payload...)
}

// ipv6Packet returns an IPv6 packet; payload may start with extension
// headers, the first of type next.
func ipv6Packet(next uint8, src, dst netip.Addr, hop uint8, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, hop
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, payload...)
}

// tcpSegment returns a TCP header with the given flags and options (padded
// to 4 bytes) and data; the checksum is filled for src and dst.
func tcpSegment(src, dst netip.Addr, flags byte, opts, data []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	s := make([]byte, 20, 20+len(opts)+len(data))
	binary.BigEndian.PutUint16(s[0:], 40000)
	binary.BigEndian.PutUint16(s[2:], 80)
	binary.BigEndian.PutUint32(s[4:], 0x01020304)
	s[12] = byte((20+len(opts))/4) << 4
	s[13] = flags
	binary.BigEndian.PutUint16(s[14:], 65535)
	s = append(append(s, opts...), data...)
	binary.BigEndian.PutUint16(s[16:], naiveChecksum(append(naivePseudoHeader(ProtoTCP, src, dst, len(s)), s...), 0))
	return s
}

// icmpv6Message fills the checksum of the ICMPv6 message m in place.
func icmpv6Message(src, dst netip.Addr, m []byte) []byte {
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], naiveChecksum(append(naivePseudoHeader(ProtoICMPv6, src, dst, len(m)), m...), 0))
	return m
}

// tcpChecksumValid verifies the TCP checksum of an unfragmented IPv4 or
// IPv6 packet without extension headers, independently of the package.
func tcpChecksumValid(t testing.TB, ip []byte) bool {
	t.Helper()
	var src, dst netip.Addr
	var seg []byte
	switch ip[0] >> 4 {
	case 4:
		hl := int(ip[0]&0xf) * 4
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		seg = ip[hl:binary.BigEndian.Uint16(ip[2:])]
	case 6:
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		seg = ip[40 : 40+binary.BigEndian.Uint16(ip[4:])]
	default:
		t.Fatalf("not an IP packet: %x", ip)
	}
	return naiveChecksum(append(naivePseudoHeader(ProtoTCP, src, dst, len(seg)), seg...), 0) == 0
}

// wantError checks that err is an *Error of the given kind whose message
// contains want and was formatted without mistakes.
func wantError(t *testing.T, err error, kind error, want string) {
	t.Helper()
	var e *Error
	switch {
	case err == nil:
		t.Fatalf("err = nil, want %q", want)
	case !errors.As(err, &e):
		t.Fatalf("err = %T %v, want an *Error", err, err)
	case !errors.Is(err, kind):
		t.Errorf("err = %v, want it to wrap %v", err, kind)
	case !strings.Contains(err.Error(), want):
		t.Errorf("err = %q, want it to contain %q", err, want)
	case strings.Contains(err.Error(), "%!"):
		t.Errorf("err = %q: bad format", err)
	}
}
