package frame

import (
	"bytes"
	"net/netip"
	"testing"
)

func BenchmarkParseEthernet(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(dumpSYN4)))
	for b.Loop() {
		_, _ = ParseEthernet(dumpSYN4)
	}
}

func BenchmarkParseARP(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = ParseARP(dumpARPRequest[14:])
	}
}

func BenchmarkParseIPv4(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = ParseIPv4(dumpSYN4[14:])
	}
}

func BenchmarkParseIPv6(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"tcp", dumpSYN6[14:]},
		{"hop-by-hop", dumpMLD[14:]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = ParseIPv6(bc.pkt)
			}
		})
	}
}

func BenchmarkParseNeighborSolicitation(b *testing.B) {
	b.ReportAllocs()
	ip, _ := ParseIPv6(dumpNS[14:])
	for b.Loop() {
		_, _ = ParseNeighborSolicitation(ip)
	}
}

func BenchmarkClampMSS(b *testing.B) {
	data := udp4Frame(1400, 0x4000, ip4Local, ip4Peer)[14:]
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"syn4", dumpSYN4[14:]},
		{"syn6", dumpSYN6[14:]},
		{"udp1400B", data},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pkt := bytes.Clone(bc.pkt)
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			for b.Loop() {
				copy(pkt, bc.pkt)
				_ = ClampMSS(pkt, 1200)
			}
		})
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1400)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_ = Checksum(buf, 0)
	}
}

func BenchmarkAppendTooBig(b *testing.B) {
	in := udp6Frame(1500, ip6Local, ip6Peer)
	dst := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = AppendTooBig(dst[:0], in, 1400, netip.Addr{})
	}
}
