package offload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// stream returns consecutive segments of one flow with these payload
// sizes, starting from s.
func stream(s seg, sizes ...int) []seg {
	out := make([]seg, len(sizes))
	for i, n := range sizes {
		out[i] = s
		out[i].payload = data(n)[:n]
		for j := range out[i].payload {
			out[i].payload[j] += byte(i)
		}
		s.seq += uint32(n)
		s.id++
	}
	return out
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

var (
	flowA  = seg{sport: 40000, dport: 5201, seq: 1000, ack: 5000, flags: tcpACK, window: 3000, opts: tsOpts, id: 100, df: true, ttl: 64}
	flowB  = seg{sport: 40001, dport: 5201, seq: 9000, ack: 7000, flags: tcpACK, window: 3000, id: 700, ttl: 64}
	flowA6 = seg{v6: true, sport: 40000, dport: 5201, seq: 1000, ack: 5000, flags: tcpACK, window: 3000, opts: tsOpts, ttl: 64}
)

// merged returns the super-segment that segments ss make together, as
// Packet should write it.
func merged(ss []seg) []byte {
	if len(ss) == 1 {
		return append(make([]byte, VnetHdrLen), ss[0].build()...)
	}
	m := ss[0]
	m.payload = nil
	for _, s := range ss {
		m.payload = append(m.payload, s.payload...)
	}
	m.flags |= ss[len(ss)-1].flags & tcpPSH
	return m.super(len(ss[0].payload))
}

func TestCoalescer(t *testing.T) {
	type tc struct {
		name string
		in   []seg
		want [][]int // frames of each packet, in write order
		// fixedIDs: IPv4 IDs that do not count up (DF), which
		// re-segmenting a merged packet does not give back.
		fixedIDs bool
	}
	mod := func(ss []seg, i int, f func(*seg)) []seg {
		f(&ss[i])
		return ss
	}
	// from changes segments i and after.
	from := func(ss []seg, i int, f func(*seg)) []seg {
		for ; i < len(ss); i++ {
			f(&ss[i])
		}
		return ss
	}
	var tests []tc
	add := func(name string, in []seg, want ...[]int) { tests = append(tests, tc{name: name, in: in, want: want}) }
	add("one flow", stream(flowA, repeat(5, 1200)...), []int{0, 1, 2, 3, 4})
	add("IPv6", stream(flowA6, repeat(5, 1200)...), []int{0, 1, 2, 3, 4})
	add("short segment ends it", stream(flowA, 1200, 1200, 500, 1200, 1200), []int{0, 1, 2}, []int{3, 4})
	add("larger segment starts anew", stream(flowA, 1000, 1000, 1200, 1200), []int{0, 1}, []int{2, 3})
	add("PSH ends it", mod(stream(flowA, repeat(5, 1200)...), 2, func(s *seg) { s.flags |= tcpPSH }), []int{0, 1, 2}, []int{3, 4})
	add("PSH first", mod(stream(flowA, repeat(3, 1200)...), 0, func(s *seg) { s.flags |= tcpPSH }), []int{0}, []int{1, 2})
	add("ECE kept when all have it", stream(func() seg { s := flowA; s.flags |= tcpECE; return s }(), repeat(3, 1200)...), []int{0, 1, 2})
	add("ECE differs", from(stream(flowA, repeat(3, 1200)...), 1, func(s *seg) { s.flags |= tcpECE }), []int{0}, []int{1, 2})
	for _, f := range []struct {
		name string
		flag uint8
	}{{"SYN", tcpSYN}, {"FIN", tcpFIN}, {"RST", tcpRST}, {"URG", tcpURG}, {"CWR", tcpCWR}} {
		add(f.name+" not merged", mod(stream(flowA, repeat(5, 1200)...), 2, func(s *seg) { s.flags |= f.flag }), []int{0, 1}, []int{2}, []int{3, 4})
	}
	add("no ACK not merged", mod(stream(flowA, repeat(3, 1200)...), 1, func(s *seg) { s.flags = 0 }), []int{0}, []int{1}, []int{2})
	add("gap", from(stream(flowA, repeat(4, 1200)...), 2, func(s *seg) { s.seq += 1200 }), []int{0, 1}, []int{2, 3})
	add("ACK differs", from(stream(flowA, repeat(4, 1200)...), 2, func(s *seg) { s.ack++ }), []int{0, 1}, []int{2, 3})
	add("window differs", from(stream(flowA, repeat(4, 1200)...), 2, func(s *seg) { s.window++ }), []int{0, 1}, []int{2, 3})
	add("timestamp differs", from(stream(flowA, repeat(4, 1200)...), 2, func(s *seg) {
		s.opts = bytes.Clone(tsOpts)
		s.opts[7]++
	}), []int{0, 1}, []int{2, 3})
	add("TTL differs", from(stream(flowA, repeat(4, 1200)...), 2, func(s *seg) { s.ttl-- }), []int{0, 1}, []int{2, 3})
	add("TOS differs", from(stream(flowA, repeat(4, 1200)...), 2, func(s *seg) { s.tos = 4 }), []int{0, 1}, []int{2, 3})
	add("traffic class differs", from(stream(flowA6, repeat(4, 1200)...), 2, func(s *seg) { s.tos = 4 }), []int{0, 1}, []int{2, 3})
	add("hop limit differs", from(stream(flowA6, repeat(4, 1200)...), 2, func(s *seg) { s.ttl = 1 }), []int{0, 1}, []int{2, 3})
	add("IPv4 ID jumps without DF", from(stream(flowB, repeat(4, 1200)...), 2, func(s *seg) { s.id += 5 }), []int{0, 1}, []int{2, 3})
	add("bad checksum alone", mod(stream(flowA, repeat(5, 1200)...), 2, func(s *seg) { s.badSum = true }), []int{0, 1}, []int{2}, []int{3, 4})
	add("IPv4 options not merged", stream(func() seg { s := flowA; s.ipOpts = []byte{1, 1, 1, 0}; return s }(), repeat(3, 1200)...), []int{0}, []int{1}, []int{2})
	add("VLAN not merged", stream(func() seg { s := flowA; s.vlan = true; return s }(), repeat(2, 1200)...), []int{0}, []int{1})
	add("pure ACK keeps the order", func() []seg {
		ss := stream(flowA, 1200, 1200, 0, 1200, 1200)
		return ss
	}(), []int{0, 1}, []int{2}, []int{3, 4})
	add("two flows interleaved", func() []seg {
		a, b := stream(flowA, repeat(3, 1200)...), stream(flowB, repeat(3, 1000)...)
		return []seg{a[0], b[0], a[1], b[1], a[2], b[2]}
	}(), []int{0, 2, 4}, []int{1, 3, 5})
	add("other direction of the flow", func() []seg {
		a := stream(flowA, repeat(3, 1200)...)
		r := a[1]
		r.sport, r.dport = r.dport, r.sport
		return []seg{a[0], r, a[1], a[2]}
	}(), []int{0, 2, 3}, []int{1})
	add("64 segments at most", stream(flowA, repeat(70, 100)...), seq(0, 64), seq(64, 70))
	add("64 KB at most", stream(flowA, repeat(48, 1400)...), seq(0, 46), seq(46, 48))
	add("nine flows: the oldest is closed", func() []seg {
		var ss []seg
		for i := range 9 {
			f := flowB
			f.sport += uint16(i)
			ss = append(ss, stream(f, 1000)...)
		}
		last := flowB
		last.sport += 8
		ss = append(ss, stream(last, 1000, 1000)[1])
		return append(ss, stream(flowB, 1000, 1000)[1])
	}(), []int{0}, []int{1}, []int{2}, []int{3}, []int{4}, []int{5}, []int{6}, []int{7}, []int{8, 9}, []int{10})
	tests = append(tests, tc{name: "fixed IDs with DF", in: func() []seg {
		ss := stream(flowA, repeat(3, 1200)...)
		for i := range ss {
			ss[i].id = 0
		}
		return ss
	}(), want: [][]int{{0, 1, 2}}, fixedIDs: true})

	var c Coalescer
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames := make([][]byte, len(tt.in))
			for i, s := range tt.in {
				frames[i] = s.build()
			}
			before := bytesClone(frames)
			c.Reset()
			for _, f := range frames {
				if !c.Add(f) {
					t.Fatal("Add refused a frame")
				}
			}
			if c.Len() != len(tt.want) {
				t.Fatalf("%d packets, want %d", c.Len(), len(tt.want))
			}
			for k, idx := range tt.want {
				ss := make([]seg, len(idx))
				for i, j := range idx {
					ss[i] = tt.in[j]
				}
				if c.Frames(k) != len(idx) {
					t.Errorf("packet %d: %d frames, want %d", k, c.Frames(k), len(idx))
				}
				got := c.AppendPacket(nil, k)
				if want := merged(ss); !tt.fixedIDs && !bytes.Equal(got, want) {
					t.Errorf("packet %d:\n got %x\nwant %x", k, got, want)
				}
				checkKernelView(t, got)
				// Cut up again, it gives back the frames it was made of.
				h, err := ParseVnetHdr(got)
				if err != nil {
					t.Fatal(err)
				}
				bufs, sizes := make([][]byte, len(idx)), make([]int, len(idx))
				for i := range bufs {
					bufs[i] = make([]byte, 1600)
				}
				n, err := Segment(h, got[VnetHdrLen:], bufs, sizes, 0)
				if err != nil || n != len(idx) {
					t.Fatalf("packet %d: Segment = %d, %v", k, n, err)
				}
				for i, j := range idx {
					seg, orig := bufs[i][:sizes[i]], frames[j]
					if tt.fixedIDs {
						seg, orig = withoutID(seg), withoutID(orig)
					}
					if !bytes.Equal(seg, orig) {
						t.Errorf("packet %d segment %d:\n got %x\nwant %x", k, i, seg, orig)
					}
				}
			}
			for i := range frames {
				if !bytes.Equal(frames[i], before[i]) {
					t.Errorf("frame %d modified", i)
				}
			}
		})
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func bytesClone(bs [][]byte) [][]byte {
	out := make([][]byte, len(bs))
	for i, b := range bs {
		out[i] = bytes.Clone(b)
	}
	return out
}

// withoutID clears the IPv4 ID and header checksum of an untagged frame.
func withoutID(f []byte) []byte {
	f = bytes.Clone(f)
	if f[14]>>4 == 4 {
		f[18], f[19], f[24], f[25] = 0, 0, 0, 0
	}
	return f
}

// checkKernelView completes a merged packet's checksum as the kernel
// would and checks that the result is a valid super-segment.
func checkKernelView(t *testing.T, pkt []byte) {
	t.Helper()
	h, f := pkt[:VnetHdrLen], bytes.Clone(pkt[VnetHdrLen:])
	if h[0] == 0 {
		return
	}
	start, off := int(binary.NativeEndian.Uint16(h[6:])), int(binary.NativeEndian.Uint16(h[8:]))
	if hl := int(binary.NativeEndian.Uint16(h[2:])); hl < start+off+2 || hl > len(f) {
		t.Errorf("hdr_len %d for checksum at %d+%d in %d bytes", hl, start, off, len(f))
	}
	c := ^naiveSum(f[start:], 0)
	f[start+off], f[start+off+1] = byte(c>>8), byte(c)
	if !tcpValid(t, f) {
		t.Errorf("super-segment invalid once its checksum is completed")
	}
}

func TestCoalescer_BatchFull(t *testing.T) {
	var c Coalescer
	f := flowA.build()
	for i := range MaxBatch {
		if !c.Add(f) {
			t.Fatalf("Add %d refused", i)
		}
	}
	if c.Add(f) {
		t.Error("Add beyond MaxBatch accepted")
	}
	c.Reset()
	if c.Len() != 0 || !c.Add(f) {
		t.Error("Reset did not empty the batch")
	}
}

// TestCoalescer_NotTCP: frames that are not TCP pass untouched and leave
// the flows around them alone.
func TestCoalescer_NotTCP(t *testing.T) {
	a := stream(flowA, repeat(2, 1200)...)
	others := [][]byte{
		udpFrame(data(100), false),
		append(append(append([]byte{}, macB...), macA...), 0x08, 0x06, 1, 2, 3),
		{1, 2, 3},
		nil,
	}
	for i, o := range others {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var c Coalescer
			c.Add(a[0].build())
			c.Add(o)
			c.Add(a[1].build())
			if c.Len() != 2 || c.Frames(0) != 2 || c.Frames(1) != 1 {
				t.Fatalf("%d packets", c.Len())
			}
			if got := c.AppendPacket(nil, 1); !bytes.Equal(got[VnetHdrLen:], o) || !bytes.Equal(got[:VnetHdrLen], make([]byte, VnetHdrLen)) {
				t.Errorf("packet %x, want %x behind an empty header", got, o)
			}
		})
	}
}
