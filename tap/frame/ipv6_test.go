package frame

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseIPv6_Captured(t *testing.T) {
	allRouters := netip.MustParseAddr("ff02::2")
	tests := []struct {
		name      string
		frame     []byte
		want      IPv6
		upperSkip int // bytes of extension headers before Upper
	}{
		{"SYN", dumpSYN6, IPv6{FlowLabel: 0xb1007, PayloadLen: 40, NextHeader: ProtoTCP, HopLimit: 64, Src: ip6Local, Dst: ip6Peer, Protocol: ProtoTCP}, 0},
		{"neighbour solicitation", dumpNS, IPv6{PayloadLen: 32, NextHeader: ProtoICMPv6, HopLimit: 255, Src: ip6Local, Dst: netip.MustParseAddr("ff02::1:ff00:2"), Protocol: ProtoICMPv6}, 0},
		{"MLD report behind hop-by-hop options", dumpMLD, IPv6{PayloadLen: 36, NextHeader: 0, HopLimit: 1, Src: netip.IPv6Unspecified(), Dst: netip.MustParseAddr("ff02::16"), Protocol: ProtoICMPv6}, 8},
		{"router solicitation", dumpRS, IPv6{PayloadLen: 16, NextHeader: ProtoICMPv6, HopLimit: 255, Src: netip.MustParseAddr("fe80::77:ff:fe00:1"), Dst: allRouters, Protocol: ProtoICMPv6}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.frame[14:]
			p, err := ParseIPv6(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.Payload, b[40:]) || !bytes.Equal(p.Upper, b[40+tt.upperSkip:]) {
				t.Errorf("payload %x upper %x", p.Payload, p.Upper)
			}
			if diff := cmp.Diff(tt.want, p, addrComparer, cmpopts.IgnoreFields(IPv6{}, "Payload", "Upper")); diff != "" {
				t.Errorf("ParseIPv6 (-want +got):\n%s", diff)
			}
		})
	}
}

// ext returns an extension header of n*8 bytes (length field n-1) that
// announces next.
func ext(next uint8, n int) []byte {
	h := make([]byte, n*8)
	h[0], h[1] = next, byte(n-1)
	return h
}

// fragHeader returns a fragment header for offset (bytes) and MF.
func fragHeader(next uint8, offset int, more bool) []byte {
	h := []byte{next, 0, byte(offset >> 8), byte(offset) &^ 7, 0, 0, 0, 1}
	if more {
		h[3] |= 1
	}
	return h
}

func TestParseIPv6_ExtensionHeaders(t *testing.T) {
	udp := []byte{0x9c, 0x40, 0, 53, 0, 8, 0, 0}
	ah := []byte{protoDestOptions, 4, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20} // (4+2)*4 = 24 bytes
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name       string
		next       uint8
		payload    []byte
		proto      uint8
		upper      []byte
		fragment   bool
		fragOffset int
		more       bool
	}{
		{"none", ProtoUDP, udp, ProtoUDP, udp, false, 0, false},
		{"hop-by-hop, routing, destination options", protoHopByHop, cat(ext(protoRouting, 1), ext(protoDestOptions, 3), ext(ProtoUDP, 2), udp), ProtoUDP, udp, false, 0, false},
		{"authentication header", protoAH, cat(ah, ext(ProtoUDP, 1), udp), ProtoUDP, udp, false, 0, false},
		{"ESP is opaque", protoESP, []byte{1, 2, 3, 4}, protoESP, []byte{1, 2, 3, 4}, false, 0, false},
		{"no next header", protoDestOptions, cat(ext(protoNoNext, 1), []byte{9, 9}), protoNoNext, []byte{9, 9}, false, 0, false},
		{"first fragment", protoFragment, cat(fragHeader(ProtoUDP, 0, true), udp), ProtoUDP, udp, true, 0, true},
		{"later fragment", protoFragment, cat(fragHeader(ProtoUDP, 1232, true), []byte{7, 7}), ProtoUDP, []byte{7, 7}, true, 1232, true},
		{"last fragment with options after it", protoFragment, cat(fragHeader(protoDestOptions, 2464, false), ext(ProtoUDP, 1)), protoDestOptions, ext(ProtoUDP, 1), true, 2464, false},
		{"eight headers", protoDestOptions, cat(ext(protoDestOptions, 1), ext(protoDestOptions, 1), ext(protoDestOptions, 1), ext(protoDestOptions, 1), ext(protoDestOptions, 1), ext(protoDestOptions, 1), ext(protoDestOptions, 1), ext(ProtoUDP, 1), udp), ProtoUDP, udp, false, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseIPv6(ipv6Packet(tt.next, ip6Local, ip6Peer, 64, tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if p.Protocol != tt.proto || !bytes.Equal(p.Upper, tt.upper) || p.Fragment != tt.fragment || p.FragOffset != tt.fragOffset || p.MoreFragments != tt.more {
				t.Errorf("protocol %d upper %x fragment %v offset %d more %v", p.Protocol, p.Upper, p.Fragment, p.FragOffset, p.MoreFragments)
			}
			if want := tt.fragment; p.IsFragment() != want {
				t.Errorf("IsFragment = %v", p.IsFragment())
			}
		})
	}

	// Ethernet padding after the payload is not part of it.
	b := append(ipv6Packet(ProtoUDP, ip6Local, ip6Peer, 64, udp), 0, 0, 0, 0)
	if p, err := ParseIPv6(b); err != nil || len(p.Payload) != len(udp) {
		t.Errorf("padded: payload %x, %v", p.Payload, err)
	}
}

func TestParseIPv6_Errors(t *testing.T) {
	many := bytes.Repeat(ext(protoDestOptions, 1), 9)
	tests := []struct {
		name string
		pkt  []byte
		kind error
		want string
	}{
		{"empty", nil, ErrTruncated, "ipv6: packet length 0 below 40"},
		{"39 bytes", dumpSYN6[14:53], ErrTruncated, "packet length 39 below 40"},
		{"version 4", append([]byte{0x45}, dumpSYN6[15:]...), ErrMalformed, "ipv6: version 4 is not 6"},
		{"payload length beyond the packet", dumpSYN6[14 : len(dumpSYN6)-1], ErrTruncated, "payload length 40 exceeds the 39 bytes after the header"},
		{"hop-by-hop not first", ipv6Packet(protoDestOptions, ip6Local, ip6Peer, 64, append(ext(protoHopByHop, 1), ext(ProtoUDP, 1)...)), ErrMalformed, "hop-by-hop options header at position 1"},
		{"nine headers", ipv6Packet(protoDestOptions, ip6Local, ip6Peer, 64, many), ErrUnsupported, "more than 8 extension headers"},
		{"extension header cut short", ipv6Packet(protoRouting, ip6Local, ip6Peer, 64, []byte{ProtoUDP}), ErrTruncated, "extension header 43 cut short at 1 bytes"},
		{"AH cut short", ipv6Packet(protoAH, ip6Local, ip6Peer, 64, []byte{ProtoUDP}), ErrTruncated, "extension header 51 cut short"},
		{"extension header longer than the payload", ipv6Packet(protoRouting, ip6Local, ip6Peer, 64, ext(ProtoUDP, 2)[:12]), ErrTruncated, "extension header length 16 exceeds the 12 bytes left"},
		{"fragment header cut short", ipv6Packet(protoFragment, ip6Local, ip6Peer, 64, []byte{ProtoUDP, 0, 0, 0}), ErrTruncated, "extension header length 8 exceeds the 4 bytes left"},
		{"jumbogram", ipv6Packet(protoHopByHop, ip6Local, ip6Peer, 64, nil), ErrTruncated, "extension header 0 cut short at 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIPv6(tt.pkt)
			wantError(t, err, tt.kind, tt.want)
		})
	}
}
