package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ringvpn/ringvpn/tap/frame"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz")

// superSeeds are kernel reads (header and frame) the fuzz targets start
// from.
func superSeeds() [][]byte {
	ecn := flowA
	ecn.flags |= tcpCWR | tcpPSH
	tagged := flowB
	tagged.vlan = true
	return [][]byte{
		stream(flowA, 500)[0].super(120),
		stream(flowA6, 300)[0].super(128),
		stream(ecn, 250)[0].super(100),
		stream(tagged, 200)[0].super(99),
		append(vnet(FlagNeedsCsum, GSONone, 0, 0, 34, 6), udpFrame(data(40), true)...),
		append(make([]byte, VnetHdrLen), flowB.build()...),
	}
}

// fuzzSeeds returns the seed inputs of each fuzz target.
func fuzzSeeds() map[string][][]any {
	seeds := map[string][][]any{}
	for _, s := range superSeeds() {
		h, _ := ParseVnetHdr(s)
		seeds["FuzzVnetHdr_Parse_NoPanic"] = append(seeds["FuzzVnetHdr_Parse_NoPanic"], []any{s})
		seeds["FuzzSegment_NoPanic"] = append(seeds["FuzzSegment_NoPanic"], []any{s[VnetHdrLen:], h.Flags, h.GSOType, h.GSOSize, h.CsumStart, h.CsumOffset})
	}
	// Short segments keep the minimization of new inputs fast.
	a, b, a6 := stream(flowA, 120, 120, 120, 80), stream(flowB, 100, 100, 100, 100), stream(flowA6, 120, 120, 120, 120)
	psh := stream(flowA, 60, 60, 60, 60)
	psh[1].flags |= tcpPSH
	for _, ss := range [][]seg{a, b, a6, psh, {a[0], b[0], a[1], b[1]}} {
		seeds["FuzzCoalesce_NoPanic"] = append(seeds["FuzzCoalesce_NoPanic"],
			[]any{ss[0].build(), ss[1].build(), ss[2].build(), ss[3].build(), true}, []any{ss[0].build(), ss[1].build(), ss[2].build(), ss[3].build(), false})
	}
	return seeds
}

func addSeeds(f *testing.F) {
	for _, s := range fuzzSeeds()[f.Name()] {
		f.Add(s...)
	}
}

func FuzzVnetHdr_Parse_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseVnetHdr(b)
		if err != nil {
			if len(b) >= VnetHdrLen || !errors.Is(err, frame.ErrTruncated) {
				t.Fatalf("ParseVnetHdr(%d bytes) = %v", len(b), err)
			}
			return
		}
		out := make([]byte, VnetHdrLen)
		h.Put(out)
		if !bytes.Equal(out, b[:VnetHdrLen]) {
			t.Fatalf("Put = %x, want %x", out, b[:VnetHdrLen])
		}
		drain(t, h, b[VnetHdrLen:])
	})
}

// drain cuts pkt up and checks what comes out: as many segments as
// announced, none longer than MaxLen, and for TCP GSO valid segments that
// carry the payload in order.
func drain(t *testing.T, h VnetHdr, pkt []byte) {
	orig := bytes.Clone(pkt)
	var s Segmenter
	if err := s.Reset(h, pkt); err != nil {
		var fe *frame.Error
		if !errors.Is(err, frame.ErrTruncated) && !errors.Is(err, frame.ErrMalformed) && !errors.Is(err, frame.ErrUnsupported) && !errors.As(err, &fe) {
			t.Fatalf("Reset error %v wraps no sentinel", err)
		}
		return
	}
	n, maxLen := s.Remaining(), s.MaxLen()
	if n < 1 || maxLen < 1 {
		t.Fatalf("%d segments of up to %d bytes", n, maxLen)
	}
	if n > 70000 {
		t.Fatalf("%d segments", n)
	}
	buf := make([]byte, maxLen)
	var payload []byte
	gso := h.GSOType&^GSOECN == GSOTCPv4 || h.GSOType&^GSOECN == GSOTCPv6
	for i := range n {
		m, err := s.Next(buf)
		if err != nil || m < 1 || m > maxLen {
			t.Fatalf("segment %d of %d: %d bytes (max %d), %v", i, n, m, maxLen, err)
		}
		if !gso {
			continue
		}
		seg := buf[:m]
		eth, err := frame.ParseEthernet(seg)
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		var tcp []byte
		if eth.Type == frame.TypeIPv4 {
			ip, err := frame.ParseIPv4(eth.Payload)
			if err != nil || !ip.ChecksumValid() || ip.ID != binary.BigEndian.Uint16(orig[eth.HeaderLen+4:])+uint16(i) {
				t.Fatalf("segment %d: %+v, %v", i, ip, err)
			}
			tcp = ip.Payload
			if naiveSum(append(naivePseudo(ip.Src, ip.Dst, len(tcp)), tcp...), 0) != 0xffff {
				t.Fatalf("segment %d: TCP checksum invalid", i)
			}
		} else {
			ip, err := frame.ParseIPv6(eth.Payload)
			if err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
			tcp = ip.Upper
			if naiveSum(append(naivePseudo(ip.Src, ip.Dst, len(tcp)), tcp...), 0) != 0xffff {
				t.Fatalf("segment %d: TCP checksum invalid", i)
			}
		}
		payload = append(payload, tcp[int(tcp[12]>>4)*4:]...)
	}
	if s.Remaining() != 0 {
		t.Fatalf("%d segments left", s.Remaining())
	}
	if gso {
		// The payload is what followed the headers in the original.
		if !bytes.Contains(orig, payload) || len(payload) > len(orig) {
			t.Fatalf("payload of %d bytes not found in the original", len(payload))
		}
	}
}

func FuzzSegment_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte, flags, gsoType uint8, gsoSize, csumStart, csumOffset uint16) {
		if len(pkt) > 70000 {
			return
		}
		drain(t, VnetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}, pkt)
	})
}

// FuzzCoalesce_NoPanic coalesces four frames (with their checksums fixed
// first when fixSum, or mutations would rarely get past them) and checks
// that cutting the packets up again gives back every frame once.
func FuzzCoalesce_NoPanic(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, f0, f1, f2, f3 []byte, fixSum bool) {
		checkCoalesce(t, [][]byte{f0, f1, f2, f3}, fixSum)
	})
}

func checkCoalesce(t *testing.T, frames [][]byte, fixSum bool) {
	{
		for _, fr := range frames {
			if len(fr) > 2000 {
				return
			}
			if fixSum {
				fixChecksums(fr)
			}
		}
		orig := bytesClone(frames)
		var c Coalescer
		for _, fr := range frames {
			c.Add(fr)
		}
		var got []string
		total := 0
		for k := range c.Len() {
			total += c.Frames(k)
			pkt := c.AppendPacket(nil, k)
			h, err := ParseVnetHdr(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if h.GSOType == GSONone {
				if c.Frames(k) != 1 || h != (VnetHdr{}) {
					t.Fatalf("packet %d: %d frames behind %+v", k, c.Frames(k), h)
				}
				got = append(got, string(pkt[VnetHdrLen:]))
				continue
			}
			checkKernelView(t, pkt)
			bufs, sizes := make([][]byte, MaxSegments), make([]int, MaxSegments)
			for i := range bufs {
				bufs[i] = make([]byte, 2100)
			}
			n, err := Segment(h, pkt[VnetHdrLen:], bufs, sizes, 0)
			if err != nil || n != c.Frames(k) {
				t.Fatalf("packet %d of %d frames: Segment = %d, %v", k, c.Frames(k), n, err)
			}
			for i := range n {
				if !tcpValid(t, bufs[i][:sizes[i]]) {
					t.Fatalf("packet %d segment %d invalid", k, i)
				}
				got = append(got, string(normalize(bufs[i][:sizes[i]])))
			}
		}
		var want []string
		for i, fr := range frames {
			if !bytes.Equal(fr, orig[i]) {
				t.Fatalf("frame %d modified", i)
			}
			want = append(want, string(normalize(fr)))
		}
		if total != len(frames) {
			t.Fatalf("%d frames in the packets, want %d", total, len(frames))
		}
		// Frames that were not merged come back as they were; normalize
		// them as the merged ones.
		for i := range got {
			got[i] = string(normalize([]byte(got[i])))
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("frames out differ from frames in")
		}
	}
}

// fixChecksums sets the IPv4 header and TCP checksums of an untagged
// frame, if it is long enough to have them.
func fixChecksums(f []byte) {
	if len(f) < 14+20 {
		return
	}
	ip := f[14:]
	switch {
	case f[12] == 0x08 && f[13] == 0 && ip[0]>>4 == 4:
		hl := int(ip[0]&15) * 4
		if hl < 20 || hl > len(ip) {
			return
		}
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^naiveSum(ip[:hl], 0))
		end := int(binary.BigEndian.Uint16(ip[2:]))
		if ip[9] != 6 || end > len(ip) || end < hl+20 {
			return
		}
		tcp := ip[hl:end]
		tcp[16], tcp[17] = 0, 0
		src, dst := ip[12:16], ip[16:20]
		binary.BigEndian.PutUint16(tcp[16:], ^naiveSum(append(append(append([]byte{}, src...), dst...), append([]byte{0, 6, byte(len(tcp) >> 8), byte(len(tcp))}, tcp...)...), 0))
	case f[12] == 0x86 && f[13] == 0xdd && len(ip) >= 60 && ip[6] == 6:
		end := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if end > len(ip) {
			return
		}
		tcp := ip[40:end]
		if len(tcp) < 20 {
			return
		}
		tcp[16], tcp[17] = 0, 0
		l := len(tcp)
		ph := append(append([]byte{}, ip[8:40]...), byte(l>>24), byte(l>>16), byte(l>>8), byte(l), 0, 0, 0, 6)
		binary.BigEndian.PutUint16(tcp[16:], ^naiveSum(append(ph, tcp...), 0))
	}
}

// normalize clears what merging and cutting up again need not give back
// bit for bit: the checksums (a valid one has two forms) and, in an
// IPv4 packet with DF, the ID.
func normalize(f []byte) []byte {
	f = bytes.Clone(f)
	if len(f) < 14+20 {
		return f
	}
	ip := f[14:]
	switch {
	case f[12] == 0x08 && f[13] == 0 && ip[0] == 0x45:
		if ip[6]&0x40 != 0 {
			ip[4], ip[5] = 0, 0
		}
		ip[10], ip[11] = 0, 0
		if ip[9] == 6 && len(ip) >= 40 {
			ip[36], ip[37] = 0, 0
		}
	case f[12] == 0x86 && f[13] == 0xdd && len(ip) >= 60 && ip[6] == 6:
		ip[56], ip[57] = 0, 0
	}
	return f
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
				t.Errorf("%s is missing or stale (%v): run go test -run TestFuzzSeeds ./tap/offload -update-fuzz-seeds", path, err)
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
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", v)
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
