package frame

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// naiveChecksum is RFC 1071 written the obvious way: 16-bit words, carries
// folded after every addition.
func naiveChecksum(b []byte, initial uint32) uint16 {
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
	return ^uint16(s)
}

// naivePseudoHeader lays the pseudo-header out in bytes as the RFCs draw
// it.
func naivePseudoHeader(proto uint8, src, dst netip.Addr, length int) []byte {
	if src.Is4() {
		b := append(src.AsSlice(), dst.AsSlice()...)
		return append(b, 0, proto, byte(length>>8), byte(length))
	}
	b := append(src.AsSlice(), dst.AsSlice()...)
	return append(b, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
}

func TestChecksum_MatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		for _, initial := range []uint32{0, 1, 0xffff, 0x1fffe, r.Uint32() & 0xffff} {
			if got, want := Checksum(b, initial), naiveChecksum(b, initial); got != want {
				t.Fatalf("Checksum(%d bytes, %#x) = %#04x, naive %#04x", n, initial, got, want)
			}
		}
	}
	// All ones: the sum that stresses the carries.
	ones := make([]byte, 1<<17)
	for i := range ones {
		ones[i] = 0xff
	}
	if got, want := Checksum(ones, 0xffff), naiveChecksum(ones, 0xffff); got != want {
		t.Errorf("Checksum(all ones) = %#04x, naive %#04x", got, want)
	}
}

func TestChecksum_KnownValues(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want uint16
	}{
		// RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
		{"RFC 1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		{"empty", nil, 0xffff},
		{"odd length", []byte{0x01}, ^uint16(0x0100)},
		{"captured IPv4 header verifies", dumpEcho4[14:34], 0},
		{"captured ICMP echo verifies", dumpEcho4[34:], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Checksum(tt.data, 0); got != tt.want {
				t.Errorf("Checksum = %#04x, want %#04x", got, tt.want)
			}
		})
	}
}

func TestPseudoHeaderSum_MatchesNaive(t *testing.T) {
	tests := []struct {
		src, dst string
		proto    uint8
		length   int
	}{
		{"10.77.0.1", "10.77.0.2", ProtoTCP, 40},
		{"255.255.255.255", "255.255.255.255", ProtoUDP, 65535},
		{"fd77::1", "fd77::2", ProtoTCP, 40},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1", ProtoICMPv6, 1 << 20},
	}
	for _, tt := range tests {
		src, dst := netip.MustParseAddr(tt.src), netip.MustParseAddr(tt.dst)
		sum := PseudoHeaderSum(tt.proto, src, dst, tt.length)
		payload := []byte{0xde, 0xad, 0xbe, 0xef, 0x01}
		got := Checksum(payload, sum)
		want := naiveChecksum(append(naivePseudoHeader(tt.proto, src, dst, tt.length), payload...), 0)
		if got != want {
			t.Errorf("%s -> %s: checksum with PseudoHeaderSum = %#04x, naive %#04x", src, dst, got, want)
		}
	}
	// The captured TCP segments verify with it.
	for name, f := range map[string][]byte{"SYN4": dumpSYN4, "SYN6": dumpSYN6} {
		if !tcpChecksumValid(t, f[14:]) {
			t.Errorf("%s: TCP checksum does not verify", name)
		}
	}
}

func TestUpdateChecksum_MatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		b := make([]byte, 2+2*r.IntN(20))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(8) == 0 { // sums near 0 and 0xffff
			clear(b)
		}
		hc := naiveChecksum(b, 0)
		i := 2 * r.IntN(len(b)/2)
		from := uint16(b[i])<<8 | uint16(b[i+1])
		to := uint16(r.Uint32())
		b[i], b[i+1] = byte(to>>8), byte(to)
		got := updateChecksum(hc, from, to)
		// Verify by the receiver's rule: the sum over data and checksum
		// is all ones.
		if v := naiveChecksum(append(b, byte(got>>8), byte(got)), 0); v != 0 {
			t.Fatalf("data %x: updated checksum %#04x does not verify (%#04x)", b, got, v)
		}
	}
}
