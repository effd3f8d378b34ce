package frame

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// parseNS parses the neighbour solicitation in an Ethernet frame.
func parseNS(t *testing.T, f []byte) (NeighborSolicitation, error) {
	t.Helper()
	eth, err := ParseEthernet(f)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := ParseIPv6(eth.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return ParseNeighborSolicitation(ip)
}

func TestParseNeighborSolicitation_Captured(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  NeighborSolicitation
	}{
		{"address resolution", dumpNS, NeighborSolicitation{Src: ip6Local, Dst: netip.MustParseAddr("ff02::1:ff00:2"), Target: ip6Peer, SourceLinkAddr: macLocal}},
		{"duplicate address detection with a nonce", dumpDAD, NeighborSolicitation{Src: netip.IPv6Unspecified(), Dst: netip.MustParseAddr("ff02::1:ff00:1"), Target: netip.MustParseAddr("fe80::77:ff:fe00:1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, err := parseNS(t, tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if ns.Src != tt.want.Src || ns.Dst != tt.want.Dst || ns.Target != tt.want.Target || !bytes.Equal(ns.SourceLinkAddr, tt.want.SourceLinkAddr) {
				t.Errorf("got %+v, want %+v", ns, tt.want)
			}
		})
	}
}

// checkNA parses an advertisement frame independently and returns its
// parts.
func checkNA(t *testing.T, f []byte) (ethDst net.HardwareAddr, src, dst netip.Addr, flags byte, target netip.Addr, tlla net.HardwareAddr) {
	t.Helper()
	if len(f) != 14+40+32 {
		t.Fatalf("advertisement of %d bytes, want 86", len(f))
	}
	ip := f[14:]
	if ip[0] != 0x60 || ip[6] != ProtoICMPv6 || ip[7] != 255 || ip[4] != 0 || ip[5] != 32 {
		t.Errorf("IPv6 header %x", ip[:8])
	}
	src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	m := ip[40:]
	if m[0] != 136 || m[1] != 0 || m[24] != 2 || m[25] != 1 {
		t.Errorf("ICMPv6 %x", m)
	}
	if naiveChecksum(append(naivePseudoHeader(ProtoICMPv6, src, dst, len(m)), m...), 0) != 0 {
		t.Error("ICMPv6 checksum does not verify")
	}
	return f[0:6], src, dst, m[4], netip.AddrFrom16([16]byte(m[8:24])), m[26:32]
}

func TestAppendNeighborAdvertisement(t *testing.T) {
	t.Run("answer", func(t *testing.T) {
		ns, err := parseNS(t, dumpNS)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendNeighborAdvertisement(make([]byte, 0, 128), ns, macLocal, macPeer)
		// Byte for byte what the kernel accepted in the capture.
		if !bytes.Equal(got, dumpNA) {
			t.Errorf("AppendNeighborAdvertisement =\n%x, want\n%x", got, dumpNA)
		}
		ethDst, src, dst, flags, target, tlla := checkNA(t, got)
		if !bytes.Equal(ethDst, macLocal) || src != ip6Peer || dst != ip6Local || flags != 0x60 || target != ip6Peer || !bytes.Equal(tlla, macPeer) {
			t.Errorf("advertisement to %v %v from %v, flags %#x, %v at %v", ethDst, dst, src, flags, target, tlla)
		}
	})
	t.Run("no source link-layer address", func(t *testing.T) {
		ns, _ := parseNS(t, dumpNS)
		ns.SourceLinkAddr = nil
		other := net.HardwareAddr{0x02, 0x99, 0, 0, 0, 9}
		ethDst, _, _, _, _, _ := checkNA(t, AppendNeighborAdvertisement(nil, ns, other, macPeer))
		if !bytes.Equal(ethDst, other) {
			t.Errorf("sent to %v, want the solicitation's Ethernet source %v", ethDst, other)
		}
	})
	t.Run("duplicate address detection", func(t *testing.T) {
		ns, err := parseNS(t, dumpDAD)
		if err != nil {
			t.Fatal(err)
		}
		ethDst, src, dst, flags, target, _ := checkNA(t, AppendNeighborAdvertisement(nil, ns, macLocal, macPeer))
		if !bytes.Equal(ethDst, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}) || dst != netip.MustParseAddr("ff02::1") || src != ns.Target || target != ns.Target || flags != 0x20 {
			t.Errorf("DAD answer to %v %v from %v, flags %#x", ethDst, dst, src, flags)
		}
	})
}

func TestParseNeighborSolicitation_Errors(t *testing.T) {
	// ns builds a solicitation packet from src to dst with the ICMPv6
	// message m, its checksum filled in.
	ns := func(src, dst netip.Addr, hop uint8, m []byte) []byte {
		return ipv6Packet(ProtoICMPv6, src, dst, hop, icmpv6Message(src, dst, m))
	}
	solicited := netip.MustParseAddr("ff02::1:ff00:2")
	msg := func(opts ...byte) []byte {
		m := append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, ip6Peer.AsSlice()...)
		return append(m, opts...)
	}
	badSum := ns(ip6Local, solicited, 255, msg())
	badSum[40+2] ^= 0xff
	withCode := msg()
	withCode[1] = 1
	multicastTarget := append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, solicited.AsSlice()...)
	tests := []struct {
		name string
		pkt  []byte
		kind error
		want string
	}{
		{"not ICMPv6", dumpSYN6[14:], ErrUnsupported, "upper-layer protocol 6 is not ICMPv6"},
		{"router solicitation", dumpRS[14:], ErrTruncated, "neighbour solicitation length 16 below 24"},
		{"MLD report", ipv6Packet(ProtoICMPv6, ip6Local, solicited, 255, icmpv6Message(ip6Local, solicited, append([]byte{143}, make([]byte, 27)...))), ErrUnsupported, "type 143 is not a neighbour solicitation"},
		{"hop limit 254", ns(ip6Local, solicited, 254, msg()), ErrMalformed, "hop limit 254 is not 255"},
		{"code 1", ns(ip6Local, solicited, 255, withCode), ErrMalformed, "code 1 is not 0"},
		{"bad checksum", badSum, ErrMalformed, "checksum"},
		{"multicast target", ns(ip6Local, solicited, 255, multicastTarget), ErrMalformed, "target is a multicast address"},
		{"option of length 0", ns(ip6Local, solicited, 255, msg(1, 0, 0, 0, 0, 0, 0, 0)), ErrMalformed, "option of length 0"},
		{"option cut short", ns(ip6Local, solicited, 255, msg(1)), ErrMalformed, "cut short at 1 bytes"},
		{"option longer than the packet", ns(ip6Local, solicited, 255, msg(1, 2, 0, 0, 0, 0, 0, 0)), ErrTruncated, "option length 16 exceeds the 8 bytes left"},
		{"DAD to a unicast address", ns(netip.IPv6Unspecified(), ip6Peer, 255, msg()), ErrMalformed, "not sent to a solicited-node address"},
		{"DAD with a source link-layer address", ns(netip.IPv6Unspecified(), solicited, 255, msg(1, 1, 2, 0, 0, 0, 0, 1)), ErrMalformed, "duplicate address detection with a source link-layer address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, err := ParseIPv6(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseNeighborSolicitation(ip)
			wantError(t, err, tt.kind, tt.want)
		})
	}

	// A later fragment is not parsed as ICMPv6 even if it says 58.
	frag := ipv6Packet(protoFragment, ip6Local, solicited, 255, append(fragHeader(ProtoICMPv6, 8, false), msg()...))
	ip, _ := ParseIPv6(frag)
	_, err := ParseNeighborSolicitation(ip)
	wantError(t, err, ErrUnsupported, "not ICMPv6")
}

func TestIsSolicitedNode(t *testing.T) {
	for a, want := range map[string]bool{
		"ff02::1:ff00:2":        true,
		"ff02::1:ffab:cdef":     true,
		"ff02::1":               false,
		"ff02::2:ff00:2":        false,
		"fd77::1":               false,
		"ff05::1:ff00:2":        false,
		"::ffff:255.0.0.2":      false,
		"ff02::1:fe00:2":        false,
		"ff02:0:0:0:0:1:ff00:2": true,
	} {
		if got := isSolicitedNode(netip.MustParseAddr(a)); got != want {
			t.Errorf("isSolicitedNode(%s) = %v", a, got)
		}
	}
	if isSolicitedNode(netip.Addr{}) {
		t.Error("isSolicitedNode(zero Addr)")
	}
}
