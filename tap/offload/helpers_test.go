package offload

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// Test builders and checks, written independently of the package: byte
// by byte, with a naive checksum.

var (
	macA = []byte{0x02, 0x72, 0x76, 0x70, 0x6e, 0x01}
	macB = []byte{0x02, 0x77, 0, 0, 0, 0x02}
	ip4A = netip.MustParseAddr("10.99.0.1")
	ip4B = netip.MustParseAddr("10.99.0.2")
	ip6A = netip.MustParseAddr("fd99::1")
	ip6B = netip.MustParseAddr("fd99::2")
	// tsOpts is the NOP, NOP, timestamps option block Linux sends.
	tsOpts = []byte{1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0}
)

// naiveSum is the one's complement sum of b's 16-bit words, folded.
func naiveSum(b []byte, initial uint32) uint16 {
	s := initial
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func naivePseudo(src, dst netip.Addr, length int) []byte {
	b := append(src.AsSlice(), dst.AsSlice()...)
	if src.Is4() {
		return append(b, 0, 6, byte(length>>8), byte(length))
	}
	return append(b, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, 6)
}

// seg describes one TCP packet in an Ethernet frame.
type seg struct {
	v6           bool
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	window       uint16
	opts         []byte // a multiple of 4 bytes
	id           uint16
	df           bool
	tos, ttl     uint8
	ipOpts       []byte // IPv4 options, a multiple of 4 bytes
	vlan         bool
	payload      []byte
	// partial leaves the pseudo-header's partial sum in the TCP checksum,
	// as the kernel does for a frame it leaves the checksum to the device.
	partial bool
	badSum  bool
}

func (s seg) addrs() (netip.Addr, netip.Addr) {
	if s.v6 {
		return ip6A, ip6B
	}
	return ip4A, ip4B
}

// build returns the frame s describes.
func (s seg) build() []byte {
	src, dst := s.addrs()
	tcp := make([]byte, 20, 20+len(s.opts)+len(s.payload))
	binary.BigEndian.PutUint16(tcp[0:], s.sport)
	binary.BigEndian.PutUint16(tcp[2:], s.dport)
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	tcp[12] = byte((20+len(s.opts))/4) << 4
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], s.window)
	tcp = append(append(tcp, s.opts...), s.payload...)
	sum := naiveSum(append(naivePseudo(src, dst, len(tcp)), tcp...), 0)
	if s.partial {
		binary.BigEndian.PutUint16(tcp[16:], naiveSum(naivePseudo(src, dst, len(tcp)), 0))
	} else {
		binary.BigEndian.PutUint16(tcp[16:], ^sum)
	}
	if s.badSum {
		tcp[17] ^= 0x55
	}
	var ip []byte
	if s.v6 {
		ip = make([]byte, 40)
		ip[0] = 0x60 | s.tos>>4
		ip[1] = s.tos<<4 | 0x0a // flow label 0xa1234
		ip[2], ip[3] = 0x12, 0x34
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6], ip[7] = 6, s.ttl
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
	} else {
		hl := 20 + len(s.ipOpts)
		ip = make([]byte, hl)
		ip[0] = 0x40 | byte(hl/4)
		ip[1] = s.tos
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(tcp)))
		binary.BigEndian.PutUint16(ip[4:], s.id)
		if s.df {
			ip[6] = 0x40
		}
		ip[8], ip[9] = s.ttl, 6
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		copy(ip[20:], s.ipOpts)
		binary.BigEndian.PutUint16(ip[10:], ^naiveSum(ip, 0))
	}
	f := append(append([]byte{}, macB...), macA...)
	if s.vlan {
		f = append(f, 0x81, 0x00, 0x00, 0x07)
	}
	if s.v6 {
		f = append(f, 0x86, 0xdd)
	} else {
		f = append(f, 0x08, 0x00)
	}
	return append(append(f, ip...), tcp...)
}

// segs returns the segments the super-segment s cuts into at gso bytes,
// each built on its own.
func (s seg) segs(gso int) [][]byte {
	var out [][]byte
	n := max(1, (len(s.payload)+gso-1)/gso)
	for i := range n {
		t := s
		t.partial = false
		t.seq = s.seq + uint32(i*gso)
		t.id = s.id + uint16(i)
		t.payload = s.payload[i*gso : min(len(s.payload), (i+1)*gso)]
		if i < n-1 {
			t.flags &^= tcpFIN | tcpPSH
		}
		if i > 0 {
			t.flags &^= tcpCWR
		}
		out = append(out, t.build())
	}
	return out
}

// vnet encodes a virtio_net_hdr independently of VnetHdr.Put.
func vnet(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset int) []byte {
	b := []byte{flags, gsoType}
	for _, v := range []int{hdrLen, gsoSize, csumStart, csumOffset} {
		b = binary.NativeEndian.AppendUint16(b, uint16(v))
	}
	return b
}

// super returns the bytes the kernel reads out for the super-segment s
// cut at gso: header, then the frame with a partial checksum.
func (s seg) super(gso int) []byte {
	s.partial = true
	f := s.build()
	ipOff := 14
	if s.vlan {
		ipOff = 18
	}
	tcpOff := ipOff + 40
	typ := GSOTCPv6
	if !s.v6 {
		tcpOff, typ = ipOff+20+len(s.ipOpts), GSOTCPv4
	}
	if s.flags&tcpCWR != 0 {
		typ |= GSOECN
	}
	return append(vnet(FlagNeedsCsum, typ, tcpOff+20+len(s.opts), gso, tcpOff, 16), f...)
}

// data returns n bytes of a pattern that differs between offsets.
func data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// tcpValid verifies the IP header and TCP checksums of an untagged frame
// without IPv6 extension headers.
func tcpValid(t testing.TB, f []byte) bool {
	t.Helper()
	ip := f[14:]
	var src, dst netip.Addr
	var tcp []byte
	if ip[0]>>4 == 4 {
		hl := int(ip[0]&15) * 4
		if naiveSum(ip[:hl], 0) != 0xffff {
			return false
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		tcp = ip[hl:binary.BigEndian.Uint16(ip[2:])]
	} else {
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		tcp = ip[40 : 40+binary.BigEndian.Uint16(ip[4:])]
	}
	return naiveSum(append(naivePseudo(src, dst, len(tcp)), tcp...), 0) == 0xffff
}
