package firewall

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/security"
)

// Addresses: this member is local, peers are peer and other.
var (
	local4 = netip.MustParseAddr("10.20.0.1")
	peer4  = netip.MustParseAddr("10.20.0.2")
	other4 = netip.MustParseAddr("10.30.0.9")
	local6 = netip.MustParseAddr("fd20::1")
	peer6  = netip.MustParseAddr("fd20::2")
)

// member returns a member certificate, decoded, with an address derived
// from its name.
func member(name string, groups ...string) *security.Member {
	sum := sha256.Sum256([]byte(name))
	m := &security.Member{MemberSpec: security.MemberSpec{
		Name:   name,
		IPs:    []netip.Prefix{netip.PrefixFrom(peer4, 16), netip.PrefixFrom(peer6, 64)},
		Groups: groups,
	}, CAName: "group-ca"}
	copy(m.Address[:], sum[:])
	return m
}

var (
	web    = member("web-01", "web")
	laptop = member("laptop-01", "laptop", "ops")
	ops    = member("ops-01", "ops")
	nobody = member("guest-01")
)

// t0 is the time tests start their firewalls' clocks at.
var t0 = time.Now()

// newFirewall returns a firewall with the default conntrack settings and
// these rule lists, its clock at t0.
func newFirewall(t testing.TB, in, out []Rule) *Firewall {
	t.Helper()
	cfg := Default()
	cfg.Inbound, cfg.Outbound = in, out
	return newFirewallConfig(t, cfg)
}

func newFirewallConfig(t testing.TB, cfg Config) *Firewall {
	t.Helper()
	var f *Firewall
	var err error
	if tt, ok := t.(*testing.T); ok {
		f, err = New(cfg, zaptest.NewLogger(tt))
	} else {
		f, err = New(cfg, nil)
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.Sweep(t0)
	return f
}

// at moves f's clock to t0+d.
func at(f *Firewall, d time.Duration) { f.Sweep(t0.Add(d)) }

// Test packets, built independently of the package's parser. They carry
// no checksums: the firewall does not read them.

// ip4 returns an IPv4 packet; frag is the flags and fragment offset word.
func ip4(proto uint8, src, dst netip.Addr, id, frag uint16, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], id)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8], h[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, payload...)
}

// ip6 returns an IPv6 packet whose payload starts with a header of type
// next.
func ip6(next uint8, src, dst netip.Addr, hop uint8, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, hop
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// ipPacket returns an IPv4 or IPv6 packet (by src's family).
func ipPacket(proto uint8, src, dst netip.Addr, l4 []byte) []byte {
	if src.Is4() {
		return ip4(proto, src, dst, 0x1234, 0x4000, l4)
	}
	return ip6(proto, src, dst, 64, l4)
}

func tcpHeader(sport, dport uint16, flags byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = 5 << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 65535)
	return h
}

func udpHeader(sport, dport uint16, data int) []byte {
	h := make([]byte, 8+data)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+data))
	return h
}

const (
	syn    = tcpSYN
	synack = tcpSYN | tcpACK
	ack    = tcpACK
	finack = tcpFIN | tcpACK
	rst    = tcpRST
)

func tcp(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	return ipPacket(protoTCP, src, dst, tcpHeader(sport, dport, flags))
}

func udp(src, dst netip.Addr, sport, dport uint16) []byte {
	return ipPacket(protoUDP, src, dst, udpHeader(sport, dport, 16))
}

// icmpMessage returns an ICMP (IPv4) or ICMPv6 (IPv6) message.
func icmpMessage(src, dst netip.Addr, typ, code uint8, rest []byte) []byte {
	m := append([]byte{typ, code, 0, 0}, rest...)
	if src.Is4() {
		return ipPacket(protoICMP, src, dst, m)
	}
	return ipPacket(protoICMPv6, src, dst, m)
}

// ping returns an echo request (reply false) or reply with identifier id.
func ping(src, dst netip.Addr, id uint16, reply bool) []byte {
	typ := uint8(8)
	switch {
	case src.Is6() && reply:
		typ = 129
	case src.Is6():
		typ = 128
	case reply:
		typ = 0
	}
	rest := binary.BigEndian.AppendUint16(nil, id)
	rest = append(rest, 0, 1)                          // sequence
	rest = append(rest, []byte("0123456789abcdef")...) // data
	return icmpMessage(src, dst, typ, 0, rest)
}

// icmpError returns an ICMP error from src to dst quoting the start of
// quoted: destination unreachable (port unreachable) for IPv4, packet too
// big for IPv6.
func icmpError(src, dst netip.Addr, quoted []byte) []byte {
	n := min(len(quoted), 48)
	if src.Is4() {
		return icmpMessage(src, dst, 3, 3, append([]byte{0, 0, 0, 0}, quoted[:n]...))
	}
	return icmpMessage(src, dst, 2, 0, append([]byte{0, 0, 0x05, 0x00}, quoted[:n]...))
}

// fragments4 returns an IPv4 UDP datagram with id cut in two fragments:
// the first holds the UDP header and 16 bytes, the second 24 bytes.
func fragments4(src, dst netip.Addr, id, sport, dport uint16) (first, second []byte) {
	u := udpHeader(sport, dport, 40)
	return ip4(protoUDP, src, dst, id, 0x2000, u[:24]), ip4(protoUDP, src, dst, id, 24/8, u[24:])
}

// fragments6 is fragments4 for IPv6, with a fragment header.
func fragments6(src, dst netip.Addr, id uint32, sport, dport uint16) (first, second []byte) {
	u := udpHeader(sport, dport, 40)
	fh := func(off uint16, more bool) []byte {
		h := []byte{protoUDP, 0, 0, 0}
		w := off
		if more {
			w |= 1
		}
		binary.BigEndian.PutUint16(h[2:], w)
		return binary.BigEndian.AppendUint32(h, id)
	}
	first = ip6(extFragment, src, dst, 64, append(fh(0, true), u[:24]...))
	second = ip6(extFragment, src, dst, 64, append(fh(24, false), u[24:]...))
	return first, second
}

// rules builds a rule list from short specs.
func rules(rs ...Rule) []Rule { return rs }

// anyHost allows everything.
var anyHost = Rule{Port: "any", Proto: "any", Host: "any"}

// want checks a verdict.
func want(t *testing.T, what string, got, wantV Verdict) {
	t.Helper()
	if got != wantV {
		t.Errorf("%s: %v, want %v", what, got, wantV)
	}
}
