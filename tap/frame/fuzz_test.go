package frame

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz")

// checkErr: every refusal is an *Error wrapping a sentinel, with a message
// formatted without mistakes.
func checkErr(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not an *Error", err, err)
	}
	if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrSuppressed) {
		t.Fatalf("error %v wraps no sentinel", err)
	}
	if msg := err.Error(); strings.Contains(msg, "%!") || !strings.HasPrefix(msg, e.Layer+": ") {
		t.Fatalf("badly formatted error %q", msg)
	}
}

// within reports whether sub is a slice of b's backing array inside b.
func within(sub, b []byte) bool {
	if len(sub) == 0 {
		return true
	}
	for i := range len(b) - len(sub) + 1 {
		if &b[i] == &sub[0] {
			return true
		}
	}
	return false
}

// frameSeeds are the frames every fuzz target starts from.
func frameSeeds() [][]byte {
	tagged := append(append(bytes.Clone(dumpEcho4[:12]), 0x81, 0x00, 0x00, 0x2a), dumpEcho4[12:]...)
	frag6 := ethFrame(macPeer, macLocal, 0x86dd, ipv6Packet(protoHopByHop, ip6Local, ip6Peer, 64,
		bytes.Join([][]byte{ext(protoFragment, 1), fragHeader(ProtoTCP, 0, true), tcpSegment(ip6Local, ip6Peer, 0x02, []byte{1, 2, 4, 5, 0xb4}, nil)}, nil)))
	return [][]byte{
		dumpARPRequest, dumpEcho4, dumpSYN4, dumpSYN6, dumpNS, dumpDAD, dumpMLD, dumpRS, dumpNA, tagged, frag6,
		udp4Frame(1500, 0x4000, ip4Local, ip4Peer), udp6Frame(1500, ip6Local, ip6Peer),
	}
}

// fuzzSeeds returns the seed inputs of each fuzz target.
func fuzzSeeds() map[string][][]any {
	seeds := map[string][][]any{}
	for _, f := range frameSeeds() {
		seeds["FuzzEthernet_Parse_NoPanic"] = append(seeds["FuzzEthernet_Parse_NoPanic"], []any{f})
		seeds["FuzzTooBig_Append_NoPanic"] = append(seeds["FuzzTooBig_Append_NoPanic"], []any{f, uint16(1400), false}, []any{f, uint16(68), true})
		eth, err := ParseEthernet(f)
		if err != nil {
			panic(err)
		}
		switch eth.Type {
		case TypeARP:
			seeds["FuzzARP_Parse_NoPanic"] = append(seeds["FuzzARP_Parse_NoPanic"], []any{eth.Payload})
		case TypeIPv4:
			seeds["FuzzIPv4_Parse_NoPanic"] = append(seeds["FuzzIPv4_Parse_NoPanic"], []any{eth.Payload})
			seeds["FuzzClampMSS_NoPanic"] = append(seeds["FuzzClampMSS_NoPanic"], []any{eth.Payload, uint16(1200), true})
		case TypeIPv6:
			seeds["FuzzIPv6_Parse_NoPanic"] = append(seeds["FuzzIPv6_Parse_NoPanic"], []any{eth.Payload})
			seeds["FuzzClampMSS_NoPanic"] = append(seeds["FuzzClampMSS_NoPanic"], []any{eth.Payload, uint16(1200), true})
			seeds["FuzzNDP_Parse_NoPanic"] = append(seeds["FuzzNDP_Parse_NoPanic"], []any{eth.Payload, true})
		}
	}
	return seeds
}

func addSeeds(f *testing.F) {
	for _, s := range fuzzSeeds()[f.Name()] {
		f.Add(s...)
	}
}

func FuzzEthernet_Parse_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEthernet(b)
		if err != nil {
			checkErr(t, err)
			return
		}
		if e.HeaderLen != 14 && e.HeaderLen != 18 || e.Tagged != (e.HeaderLen == 18) {
			t.Fatalf("header length %d, tagged %v", e.HeaderLen, e.Tagged)
		}
		if len(e.Payload) != len(b)-e.HeaderLen || !within(e.Payload, b) || len(e.Dst) != 6 || len(e.Src) != 6 {
			t.Fatalf("payload of %d bytes from a frame of %d", len(e.Payload), len(b))
		}
		if e.Type < minEtherType || e.Type == TypeVLAN || e.Type == TypeQinQ {
			t.Fatalf("type %v accepted", e.Type)
		}
	})
}

func FuzzARP_Parse_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseARP(b)
		if err != nil {
			checkErr(t, err)
			return
		}
		if len(b) < ARPLen || a.Op != ARPRequest && a.Op != ARPReply || !a.SenderIP.Is4() || !a.TargetIP.Is4() {
			t.Fatalf("accepted %+v from %d bytes", a, len(b))
		}
		// The reply to it parses back, with the roles swapped.
		reply := AppendARPReply(nil, a, macPeer)
		eth, err := ParseEthernet(reply)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseARP(eth.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if r.Op != ARPReply || r.SenderIP != a.TargetIP || r.TargetIP != a.SenderIP || !bytes.Equal(r.TargetMAC, a.SenderMAC) || !bytes.Equal(eth.Dst, a.SenderMAC) {
			t.Fatalf("reply %+v to %+v", r, a)
		}
	})
}

func FuzzIPv4_Parse_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseIPv4(b)
		if err != nil {
			checkErr(t, err)
			return
		}
		if p.HeaderLen < 20 || p.HeaderLen > p.TotalLen || p.TotalLen > len(b) {
			t.Fatalf("header %d, total %d, input %d", p.HeaderLen, p.TotalLen, len(b))
		}
		if len(p.Header) != p.HeaderLen || len(p.Header)+len(p.Payload) != p.TotalLen || !within(p.Payload, b) {
			t.Fatalf("header %d + payload %d bytes, total %d", len(p.Header), len(p.Payload), p.TotalLen)
		}
		if !p.Src.Is4() || !p.Dst.Is4() {
			t.Fatalf("addresses %v %v", p.Src, p.Dst)
		}
		_ = p.ChecksumValid()
	})
}

func FuzzIPv6_Parse_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseIPv6(b)
		if err != nil {
			checkErr(t, err)
			return
		}
		if len(p.Payload) != p.PayloadLen || 40+p.PayloadLen > len(b) || !within(p.Payload, b) {
			t.Fatalf("payload %d bytes, length %d, input %d", len(p.Payload), p.PayloadLen, len(b))
		}
		// Upper is a suffix of Payload.
		if len(p.Upper) > len(p.Payload) || !bytes.Equal(p.Payload[len(p.Payload)-len(p.Upper):], p.Upper) || !within(p.Upper, p.Payload) {
			t.Fatalf("upper %d bytes is not a suffix of the payload (%d)", len(p.Upper), len(p.Payload))
		}
		if !p.Fragment && (p.FragOffset != 0 || p.MoreFragments) {
			t.Fatal("fragment fields without a fragment header")
		}
	})
}

// FuzzNDP_Parse_NoPanic fixes the ICMPv6 checksum of most inputs first
// (fixSum), or mutations would rarely get past it.
func FuzzNDP_Parse_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, fixSum bool) {
		ip, err := ParseIPv6(b)
		if err != nil {
			return
		}
		if m := ip.Upper; fixSum && ip.Protocol == ProtoICMPv6 && len(m) >= 4 {
			m[2], m[3] = 0, 0
			c := Checksum(m, PseudoHeaderSum(ProtoICMPv6, ip.Src, ip.Dst, len(m)))
			m[2], m[3] = byte(c>>8), byte(c)
		}
		ns, err := ParseNeighborSolicitation(ip)
		if err != nil {
			checkErr(t, err)
			return
		}
		if ip.HopLimit != 255 || ns.Target.IsMulticast() || !ns.Target.Is6() || ns.SourceLinkAddr != nil && len(ns.SourceLinkAddr) != 6 {
			t.Fatalf("accepted %+v", ns)
		}
		// The advertisement answering it is well formed.
		na := AppendNeighborAdvertisement(nil, ns, macLocal, macPeer)
		eth, err := ParseEthernet(na)
		if err != nil {
			t.Fatal(err)
		}
		reply, err := ParseIPv6(eth.Payload)
		if err != nil {
			t.Fatal(err)
		}
		m := reply.Upper
		if reply.Protocol != ProtoICMPv6 || reply.HopLimit != 255 || reply.Src != ns.Target || len(m) != 32 || m[0] != 136 {
			t.Fatalf("advertisement %x", na)
		}
		if Checksum(m, PseudoHeaderSum(ProtoICMPv6, reply.Src, reply.Dst, len(m))) != 0 {
			t.Fatalf("advertisement checksum wrong: %x", na)
		}
		if ns.Src.IsUnspecified() != (reply.Dst == allNodes) {
			t.Fatalf("advertisement to %v for a solicitation from %v", reply.Dst, ns.Src)
		}
	})
}

// fixTCPChecksum sets the checksum of an unfragmented TCP packet.
func fixTCPChecksum(ip []byte) {
	var src, dst netip.Addr
	var seg []byte
	if p, err := ParseIPv4(ip); err == nil && p.Protocol == ProtoTCP && !p.IsFragment() {
		src, dst, seg = p.Src, p.Dst, p.Payload
	} else if p, err := ParseIPv6(ip); err == nil && p.Protocol == ProtoTCP && !p.IsFragment() {
		src, dst, seg = p.Src, p.Dst, p.Upper
	}
	if len(seg) < 18 {
		return
	}
	seg[16], seg[17] = 0, 0
	c := Checksum(seg, PseudoHeaderSum(ProtoTCP, src, dst, len(seg)))
	seg[16], seg[17] = byte(c>>8), byte(c)
}

// tcpChecksumState reports whether ip is an unfragmented TCP packet and
// whether its checksum verifies, using the package's parsers.
func tcpChecksumState(ip []byte) (tcp, valid bool) {
	if len(ip) == 0 {
		return false, false
	}
	var src, dst netip.Addr
	var seg []byte
	switch ip[0] >> 4 {
	case 4:
		p, err := ParseIPv4(ip)
		if err != nil || p.Protocol != ProtoTCP || p.IsFragment() {
			return false, false
		}
		src, dst, seg = p.Src, p.Dst, p.Payload
	case 6:
		p, err := ParseIPv6(ip)
		if err != nil || p.Protocol != ProtoTCP || p.IsFragment() {
			return false, false
		}
		src, dst, seg = p.Src, p.Dst, p.Upper
	default:
		return false, false
	}
	return true, Checksum(seg, PseudoHeaderSum(ProtoTCP, src, dst, len(seg))) == 0
}

// FuzzClampMSS_NoPanic fixes the TCP checksum first if fixSum, so that
// "stays valid" is checked as well as "stays invalid".
func FuzzClampMSS_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, max uint16, fixSum bool) {
		if fixSum {
			fixTCPChecksum(b)
		}
		orig := bytes.Clone(b)
		tcp, validBefore := tcpChecksumState(b)
		changed := ClampMSS(b, max)
		if len(b) != len(orig) {
			t.Fatal("length changed")
		}
		if !changed {
			if !bytes.Equal(b, orig) {
				t.Fatal("modified without reporting a change")
			}
			return
		}
		if tcp {
			if _, validAfter := tcpChecksumState(b); validAfter != validBefore {
				t.Fatalf("checksum valid %v before, %v after", validBefore, validAfter)
			}
		}
		// A second pass finds nothing more to do.
		if ClampMSS(b, max) {
			t.Fatal("second ClampMSS changed the packet again")
		}
	})
}

func FuzzTooBig_Append_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, mtu uint16, router bool) {
		var src netip.Addr
		if router {
			src = ip6Peer
			if len(b) > 13 && b[12] == 0x08 {
				src = ip4Peer
			}
		}
		out, err := AppendTooBig([]byte{0xaa}, b, int(mtu), src)
		if err != nil {
			checkErr(t, err)
			if len(out) != 1 {
				t.Fatal("appended on error")
			}
			return
		}
		eth, err := ParseEthernet(out[1:])
		if err != nil {
			t.Fatal(err)
		}
		switch eth.Type {
		case TypeIPv4:
			ip, err := ParseIPv4(eth.Payload)
			if err != nil || !ip.ChecksumValid() || ip.TotalLen > 576 || ip.Protocol != ProtoICMP || Checksum(ip.Payload, 0) != 0 || ip.Payload[0] != 3 || ip.Payload[1] != 4 {
				t.Fatalf("fragmentation needed %x: %v", out, err)
			}
		case TypeIPv6:
			ip, err := ParseIPv6(eth.Payload)
			if err != nil || 40+ip.PayloadLen > 1280 || ip.Protocol != ProtoICMPv6 || ip.Upper[0] != 2 ||
				Checksum(ip.Upper, PseudoHeaderSum(ProtoICMPv6, ip.Src, ip.Dst, len(ip.Upper))) != 0 {
				t.Fatalf("packet too big %x: %v", out, err)
			}
		default:
			t.Fatalf("reply of type %v", eth.Type)
		}
	})
}

// TestFuzzSeeds_Stored checks testdata/fuzz against fuzzSeeds, and with
// -update-fuzz-seeds rewrites it.
func TestFuzzSeeds_Stored(t *testing.T) {
	for target, inputs := range fuzzSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateFuzzSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i, in := range inputs {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			want := encodeCorpus(in)
			if *updateFuzzSeeds {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v): run go test -run TestFuzzSeeds ./tap/frame -update-fuzz-seeds", path, err)
			}
		}
	}
}

// encodeCorpus writes a corpus file as go test -fuzz reads it.
func encodeCorpus(values []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case uint16:
			fmt.Fprintf(&b, "uint16(%d)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		default:
			panic(fmt.Sprintf("corpus value of type %T", v))
		}
	}
	return b.Bytes()
}
