package frame

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestParse_NoAllocs: parsing a valid frame and the builders (into a
// buffer with room) allocate nothing.
func TestParse_NoAllocs(t *testing.T) {
	ns, err := parseNS(t, dumpNS)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := ParseARP(dumpARPRequest[14:])
	big4, big6 := udp4Frame(1500, 0x4000, ip4Local, ip4Peer), udp6Frame(1500, ip6Local, ip6Peer)
	syn4, syn6 := bytes.Clone(dumpSYN4[14:]), bytes.Clone(dumpSYN6[14:])
	buf := make([]byte, 0, 2048)
	tests := []struct {
		name string
		f    func()
	}{
		{"ParseEthernet", func() { _, _ = ParseEthernet(dumpNS) }},
		{"ParseARP", func() { _, _ = ParseARP(dumpARPRequest[14:]) }},
		{"ParseIPv4", func() { p, _ := ParseIPv4(dumpSYN4[14:]); _ = p.ChecksumValid() }},
		{"ParseIPv6", func() { _, _ = ParseIPv6(dumpSYN6[14:]) }},
		{"ParseIPv6 with hop-by-hop", func() { _, _ = ParseIPv6(dumpMLD[14:]) }},
		{"ParseNeighborSolicitation", func() {
			ip, _ := ParseIPv6(dumpNS[14:])
			_, _ = ParseNeighborSolicitation(ip)
		}},
		{"Checksum", func() { _ = Checksum(big4[34:], PseudoHeaderSum(ProtoUDP, ip4Local, ip4Peer, len(big4)-34)) }},
		{"AppendARPReply", func() { _ = AppendARPReply(buf[:0], req, macPeer) }},
		{"AppendNeighborAdvertisement", func() { _ = AppendNeighborAdvertisement(buf[:0], ns, macLocal, macPeer) }},
		{"AppendNeighborAdvertisement DAD", func() {
			dad := ns
			dad.Src, dad.SourceLinkAddr = netip.IPv6Unspecified(), nil
			_ = AppendNeighborAdvertisement(buf[:0], dad, macLocal, macPeer)
		}},
		{"AppendTooBig IPv4", func() { _, _ = AppendTooBig(buf[:0], big4, 1400, netip.Addr{}) }},
		{"AppendTooBig IPv6", func() { _, _ = AppendTooBig(buf[:0], big6, 1400, netip.Addr{}) }},
		{"ClampMSS IPv4", func() { copy(syn4, dumpSYN4[14:]); _ = ClampMSS(syn4, 1200) }},
		{"ClampMSS IPv6", func() { copy(syn6, dumpSYN6[14:]); _ = ClampMSS(syn6, 1200) }},
		{"ClampMSS not TCP", func() { _ = ClampMSS(big4[14:], 1200) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(100, tt.f); allocs != 0 {
				t.Errorf("%v allocations, want 0", allocs)
			}
		})
	}
}

// TestError_OneAlloc: refusing a packet costs one small allocation; the
// message is formatted only when asked for.
func TestError_OneAlloc(t *testing.T) {
	bad := bytes.Clone(dumpEcho4[14:])
	bad[0] = 0x43
	if allocs := testing.AllocsPerRun(100, func() { _, _ = ParseIPv4(bad) }); allocs > 1 {
		t.Errorf("%v allocations for a refusal, want at most 1", allocs)
	}
}
