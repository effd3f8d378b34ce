package firewall

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap/frame"
)

// FuzzFirewall_Filter_NoPanic feeds random bytes as packets, inbound and
// outbound, from and to members with and without the groups the rules
// name. The firewall must not panic, must give a defined verdict, must
// call DropBadPacket every packet the IP parsers refuse, and must count
// every drop.
func FuzzFirewall_Filter_NoPanic(f *testing.F) {
	query := udp(local4, peer4, 5000, 53)
	syn6 := tcp(local6, peer6, 5000, 443, syn)
	frag1, frag2 := fragments4(peer4, local4, 7, 5000, 53)
	frag61, frag62 := fragments6(peer6, local6, 7, 5000, 53)
	for _, seed := range [][]byte{
		tcp(peer4, local4, 40000, 80, syn), tcp(local4, peer4, 80, 40000, synack),
		tcp(peer6, local6, 40000, 22, syn|tcpFIN), udp(peer4, local4, 1, 53), query, syn6,
		ping(peer4, local4, 1, false), ping(local6, peer6, 1, true),
		icmpError(peer4, local4, query), icmpError(peer6, local6, syn6),
		frag1, frag2, frag61, frag62,
		ip6(protoICMPv6, peer6, local6, 255, append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, local6.AsSlice()...)),
		ipPacket(47, peer4, local4, make([]byte, 8)),
		{0x45}, {0x60}, nil,
	} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(7))
	}
	cfg := Default()
	cfg.Inbound = benchRules()
	cfg.Outbound = rules(Rule{Port: "any", Proto: "tcp", Host: "any"}, Rule{Port: "53", Proto: "udp", Group: "ops"})
	cfg.Conntrack.MaxEntries = MinEntries
	fw, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	peers := []*security.Member{web, ops, laptop, nobody, nil}
	f.Fuzz(func(t *testing.T, pkt []byte, sel uint8) {
		before := fw.Stats()
		peer := peers[int(sel)%len(peers)]
		drops := uint64(0)
		for _, v := range []Verdict{fw.Inbound(pkt, peer), fw.Outbound(pkt, peer), fw.Inbound(pkt, peer)} {
			if v < Accept || v > DropFragment {
				t.Fatalf("verdict %v", v)
			}
			if v != Accept {
				drops++
			}
			if !parses(pkt) && v != DropBadPacket {
				t.Fatalf("verdict %v for a packet the IP parsers refuse", v)
			}
		}
		after := fw.Stats()
		if got := after.Inbound.Total() + after.Outbound.Total() - before.Inbound.Total() - before.Outbound.Total(); got != drops {
			t.Fatalf("%d drops counted, %d seen", got, drops)
		}
		if sel%16 == 15 {
			fw.Sweep(t0.Add(10 * DefaultOtherTimeout)) // now and then, start afresh
			fw.Sweep(t0)
		}
	})
}

func parses(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		_, err := frame.ParseIPv4(b)
		return err == nil
	case 6:
		_, err := frame.ParseIPv6(b)
		return err == nil
	}
	return false
}

// FuzzPacket_ParseIP_MatchesFrame: the firewall's own IP parser accepts
// exactly what tap/frame's parsers accept, and reads the same addresses,
// protocol, fragment fields and upper-layer bytes.
func FuzzPacket_ParseIP_MatchesFrame(f *testing.F) {
	frag1, frag2 := fragments6(peer6, local6, 7, 5000, 53)
	for _, seed := range [][]byte{
		tcp(peer4, local4, 40000, 80, syn), udp(peer6, local6, 1, 53), frag1, frag2,
		ip4(protoUDP, peer4, local4, 9, 0x2000, make([]byte, 16)), ip4(protoTCP, peer4, local4, 9, 1, make([]byte, 16)),
		ip6(extHopByHop, peer6, local6, 64, []byte{extFragment, 0, 1, 4, 0, 0, 0, 0, protoUDP, 0, 0, 1, 0, 0, 0, 9}),
		ip6(extRouting, peer6, local6, 64, []byte{extHopByHop, 0, 0, 0, 0, 0, 0, 0}),
		{0x45}, {0x60}, nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet
		l4, ok := p.parseIP(b)
		var src, dst netip.Addr
		var proto uint8
		var isFrag bool
		var fragOffset int
		var upper []byte
		var fragID uint32
		okFrame := false
		if len(b) > 0 && b[0]>>4 == 4 {
			ip, err := frame.ParseIPv4(b)
			okFrame = err == nil
			src, dst, proto, isFrag, fragOffset, upper, fragID = ip.Src, ip.Dst, ip.Protocol, ip.IsFragment(), ip.FragOffset, ip.Payload, uint32(ip.ID)
		} else if len(b) > 0 && b[0]>>4 == 6 {
			ip, err := frame.ParseIPv6(b)
			okFrame = err == nil
			src, dst, proto, isFrag, fragOffset, upper = ip.Src, ip.Dst, ip.Protocol, ip.IsFragment(), ip.FragOffset, ip.Upper
			fragID = p.fragID // not exposed by frame
		}
		if ok != okFrame {
			t.Fatalf("parseIP ok %v, frame ok %v", ok, okFrame)
		}
		if !ok {
			return
		}
		if got := ipOf(p.src, p.v6); got != src {
			t.Errorf("src %v, frame %v", got, src)
		}
		if got := ipOf(p.dst, p.v6); got != dst {
			t.Errorf("dst %v, frame %v", got, dst)
		}
		if p.proto != proto {
			t.Errorf("proto %d, frame %d", p.proto, proto)
		}
		if later := p.kind == kindFragment; later != (isFrag && fragOffset != 0) {
			t.Errorf("later fragment %v, frame: fragment %v at %d", later, isFrag, fragOffset)
		}
		if p.firstFragment != (isFrag && fragOffset == 0) {
			t.Errorf("first fragment %v, frame: fragment %v at %d", p.firstFragment, isFrag, fragOffset)
		}
		if isFrag && p.fragID != fragID {
			t.Errorf("fragment id %d, frame %d", p.fragID, fragID)
		}
		if p.kind != kindFragment && !bytes.Equal(l4, upper) {
			t.Errorf("upper layer %x, frame %x", l4, upper)
		}
	})
}
