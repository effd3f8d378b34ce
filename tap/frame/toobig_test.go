package frame

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// udp4Frame is an IPv4/UDP frame of size bytes of IP packet from the local
// host to the peer.
func udp4Frame(size int, flags uint16, src, dst netip.Addr) []byte {
	payload := make([]byte, size-20)
	binary.BigEndian.PutUint16(payload[4:], uint16(len(payload)))
	for i := 8; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	return ethFrame(macPeer, macLocal, 0x0800, ipv4Packet(ProtoUDP, src, dst, flags, payload))
}

func udp6Frame(size int, src, dst netip.Addr) []byte {
	payload := make([]byte, size-40)
	binary.BigEndian.PutUint16(payload[4:], uint16(len(payload)))
	for i := 8; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	return ethFrame(macPeer, macLocal, 0x86dd, ipv6Packet(ProtoUDP, src, dst, 64, payload))
}

func TestAppendTooBig_IPv4(t *testing.T) {
	router := netip.MustParseAddr("10.77.0.254")
	for _, tt := range []struct {
		name     string
		size     int
		src      netip.Addr
		wantSrc  netip.Addr
		quoteLen int
	}{
		{"large packet, quote cut at 576", 1500, netip.Addr{}, ip4Peer, 548},
		{"from a router address", 1500, router, router, 548},
		{"small MTU, whole packet quoted", 600, netip.Addr{}, ip4Peer, 548},
		{"packet shorter than the quote limit", 500, netip.Addr{}, ip4Peer, 500},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mtu := min(1400, tt.size-1)
			in := udp4Frame(tt.size, 0x4000, ip4Local, ip4Peer)
			f, err := AppendTooBig(make([]byte, 0, 1600), in, mtu, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f[0:6], macLocal) || !bytes.Equal(f[6:12], macPeer) || f[12] != 0x08 || f[13] != 0 {
				t.Errorf("Ethernet header %x", f[:14])
			}
			ip := f[14:]
			if len(ip) != 20+8+tt.quoteLen || int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
				t.Fatalf("ICMP error of %d bytes (total length %d), want %d", len(ip), binary.BigEndian.Uint16(ip[2:]), 28+tt.quoteLen)
			}
			if ip[0] != 0x45 || ip[1] != 0xc0 || ip[8] != 64 || ip[9] != ProtoICMP || naiveChecksum(ip[:20], 0) != 0 {
				t.Errorf("IPv4 header %x", ip[:20])
			}
			if got := netip.AddrFrom4([4]byte(ip[12:16])); got != tt.wantSrc {
				t.Errorf("source %v, want %v", got, tt.wantSrc)
			}
			if got := netip.AddrFrom4([4]byte(ip[16:20])); got != ip4Local {
				t.Errorf("destination %v, want the sender %v", got, ip4Local)
			}
			icmp := ip[20:]
			if icmp[0] != 3 || icmp[1] != 4 || binary.BigEndian.Uint16(icmp[4:]) != 0 || int(binary.BigEndian.Uint16(icmp[6:])) != mtu {
				t.Errorf("ICMP header %x, want type 3 code 4 MTU %d", icmp[:8], mtu)
			}
			if naiveChecksum(icmp, 0) != 0 {
				t.Error("ICMP checksum does not verify")
			}
			if !bytes.Equal(icmp[8:], in[14:14+tt.quoteLen]) {
				t.Error("quote is not the start of the original packet")
			}
		})
	}
}

func TestAppendTooBig_IPv6(t *testing.T) {
	router := netip.MustParseAddr("fd77::fe")
	for _, tt := range []struct {
		name     string
		size     int
		src      netip.Addr
		wantSrc  netip.Addr
		quoteLen int
	}{
		{"large packet, quote cut at 1280", 1500, netip.Addr{}, ip6Peer, 1232},
		{"from a router address", 9000, router, router, 1232},
		{"packet shorter than the quote limit", 1281, netip.Addr{}, ip6Peer, 1232},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mtu := min(1400, tt.size-1)
			in := udp6Frame(tt.size, ip6Local, ip6Peer)
			f, err := AppendTooBig(nil, in, mtu, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f[0:6], macLocal) || !bytes.Equal(f[6:12], macPeer) || f[12] != 0x86 || f[13] != 0xdd {
				t.Errorf("Ethernet header %x", f[:14])
			}
			ip := f[14:]
			if len(ip) != 40+8+tt.quoteLen || int(binary.BigEndian.Uint16(ip[4:])) != 8+tt.quoteLen || ip[6] != ProtoICMPv6 {
				t.Fatalf("ICMPv6 error of %d bytes, header %x", len(ip), ip[:8])
			}
			src, dst := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
			if src != tt.wantSrc || dst != ip6Local {
				t.Errorf("%v -> %v, want %v -> %v", src, dst, tt.wantSrc, ip6Local)
			}
			m := ip[40:]
			if m[0] != 2 || m[1] != 0 || int(binary.BigEndian.Uint32(m[4:])) != mtu {
				t.Errorf("ICMPv6 header %x, want type 2 MTU %d", m[:8], mtu)
			}
			if naiveChecksum(append(naivePseudoHeader(ProtoICMPv6, src, dst, len(m)), m...), 0) != 0 {
				t.Error("ICMPv6 checksum does not verify")
			}
			if !bytes.Equal(m[8:], in[14:14+tt.quoteLen]) {
				t.Error("quote is not the start of the original packet")
			}
		})
	}
}

func TestAppendTooBig_Refusals(t *testing.T) {
	bcast := netip.MustParseAddr("255.255.255.255")
	icmpErr := ethFrame(macPeer, macLocal, 0x0800, ipv4Packet(ProtoICMP, ip4Local, ip4Peer, 0x4000, append([]byte{3, 1}, make([]byte, 1498)...)))
	echo := ethFrame(macPeer, macLocal, 0x0800, ipv4Packet(ProtoICMP, ip4Local, ip4Peer, 0x4000, append([]byte{8, 0}, make([]byte, 1498)...)))
	icmp6Err := ethFrame(macPeer, macLocal, 0x86dd, ipv6Packet(ProtoICMPv6, ip6Local, ip6Peer, 64, append([]byte{1, 4}, make([]byte, 1498)...)))
	echo6 := ethFrame(macPeer, macLocal, 0x86dd, ipv6Packet(ProtoICMPv6, ip6Local, ip6Peer, 64, append([]byte{128, 0}, make([]byte, 1498)...)))
	toGroupMAC := udp4Frame(1500, 0x4000, ip4Local, ip4Peer)
	toGroupMAC[0] = 0x01
	mcast6 := netip.MustParseAddr("ff0e::1")
	tests := []struct {
		name  string
		frame []byte
		mtu   int
		src   netip.Addr
		kind  error
		want  string
	}{
		{"fits the MTU", udp4Frame(1400, 0x4000, ip4Local, ip4Peer), 1400, netip.Addr{}, ErrSuppressed, "packet of 1400 bytes fits the MTU 1400"},
		{"DF clear", udp4Frame(1500, 0, ip4Local, ip4Peer), 1400, netip.Addr{}, ErrSuppressed, "don't-fragment bit clear"},
		{"later fragment", udp4Frame(1500, 0x4000|10, ip4Local, ip4Peer), 1400, netip.Addr{}, ErrSuppressed, "later fragment (offset 80)"},
		{"to broadcast", udp4Frame(1500, 0x4000, ip4Local, bcast), 1400, netip.Addr{}, ErrSuppressed, "non-unicast"},
		{"to multicast", udp4Frame(1500, 0x4000, ip4Local, netip.MustParseAddr("239.1.1.1")), 1400, netip.Addr{}, ErrSuppressed, "non-unicast"},
		{"from 0.0.0.0", udp4Frame(1500, 0x4000, netip.IPv4Unspecified(), ip4Peer), 1400, netip.Addr{}, ErrSuppressed, "non-unicast"},
		{"to a group MAC", toGroupMAC, 1400, netip.Addr{}, ErrSuppressed, "group address"},
		{"about an ICMP error", icmpErr, 1400, netip.Addr{}, ErrSuppressed, "no ICMP error about an ICMP error (type 3)"},
		{"MTU below 68", udp4Frame(1500, 0x4000, ip4Local, ip4Peer), 67, netip.Addr{}, ErrMalformed, "MTU 67 not in [68,65535]"},
		{"IPv6 router address for IPv4", udp4Frame(1500, 0x4000, ip4Local, ip4Peer), 1400, ip6Peer, ErrMalformed, "reply source is not an IPv4 address"},
		{"IPv6 fits", udp6Frame(1400, ip6Local, ip6Peer), 1400, netip.Addr{}, ErrSuppressed, "packet of 1400 bytes fits the MTU 1400"},
		{"IPv6 MTU below 1280", udp6Frame(1500, ip6Local, ip6Peer), 1279, netip.Addr{}, ErrMalformed, "MTU 1279 not in [1280,65535]"},
		{"IPv6 from ::", udp6Frame(1500, netip.IPv6Unspecified(), ip6Peer), 1400, netip.Addr{}, ErrSuppressed, "unspecified or multicast source"},
		{"about an ICMPv6 error", icmp6Err, 1400, netip.Addr{}, ErrSuppressed, "about an ICMPv6 error (type 1)"},
		{"IPv6 to multicast without a router address", udp6Frame(1500, ip6Local, mcast6), 1400, netip.Addr{}, ErrMalformed, "needs a unicast reply source"},
		{"IPv6 multicast router address", udp6Frame(1500, ip6Local, ip6Peer), 1400, mcast6, ErrMalformed, "reply source is not a unicast IPv6 address"},
		{"IPv4 router address for IPv6", udp6Frame(1500, ip6Local, ip6Peer), 1400, ip4Peer, ErrMalformed, "reply source is not a unicast IPv6 address"},
		{"ARP", dumpARPRequest, 1400, netip.Addr{}, ErrUnsupported, "type 0x0806 is not IP"},
		{"truncated IPv4", udp4Frame(1500, 0x4000, ip4Local, ip4Peer)[:100], 1400, netip.Addr{}, ErrTruncated, "ipv4: total length 1500 exceeds"},
		{"truncated Ethernet", dumpARPRequest[:5], 1400, netip.Addr{}, ErrTruncated, "ethernet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte{0xaa}
			got, err := AppendTooBig(dst, tt.frame, tt.mtu, tt.src)
			wantError(t, err, tt.kind, tt.want)
			if !bytes.Equal(got, dst) {
				t.Errorf("appended %x on error", got[1:])
			}
		})
	}
	// Echo requests are answered.
	for name, f := range map[string][]byte{"echo": echo, "echo6": echo6} {
		if _, err := AppendTooBig(nil, f, 1400, netip.Addr{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Packet too big may answer a multicast packet from a router address,
	// if the frame came to a unicast MAC.
	if _, err := AppendTooBig(nil, udp6Frame(1500, ip6Local, mcast6), 1400, ip6Peer); err != nil {
		t.Errorf("multicast with a router address: %v", err)
	}
}

func TestAppendTooBig_KeepsVLANTag(t *testing.T) {
	in := udp4Frame(1500, 0x4000, ip4Local, ip4Peer)
	tagged := append(append(bytes.Clone(in[:12]), 0x81, 0x00, 0x20, 0x07), in[12:]...)
	f, err := AppendTooBig(nil, tagged, 1400, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	eth, err := ParseEthernet(f)
	if err != nil || !eth.Tagged || eth.VLAN != 0x2007 || eth.Type != TypeIPv4 || !bytes.Equal(eth.Dst, macLocal) {
		t.Fatalf("reply header %x: %+v, %v", f[:18], eth, err)
	}
	ip, err := ParseIPv4(eth.Payload)
	if err != nil || !ip.ChecksumValid() || ip.Dst != ip4Local {
		t.Errorf("reply %+v, %v", ip, err)
	}
}
