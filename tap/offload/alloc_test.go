package offload

import "testing"

// TestOffload_NoAllocs: cutting up and merging allocate nothing.
func TestOffload_NoAllocs(t *testing.T) {
	super := stream(flowA, 64000)[0].super(1228)
	h, _ := ParseVnetHdr(super)
	pkt := super[VnetHdrLen:]
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 1400)
	}
	ss := stream(flowA, repeat(45, 1228)...)
	frames := make([][]byte, len(ss))
	for i, s := range ss {
		frames[i] = s.build()
	}
	var s Segmenter
	var c Coalescer
	parts := make([][]byte, 0, MaxSegments)
	out := make([]byte, 0, 70000)
	hdr := make([]byte, VnetHdrLen)
	tests := []struct {
		name string
		f    func()
	}{
		{"ParseVnetHdr and Put", func() {
			h, _ := ParseVnetHdr(super)
			h.Put(hdr)
		}},
		{"Segmenter", func() {
			if err := s.Reset(h, pkt); err != nil {
				t.Fatal(err)
			}
			for s.Remaining() > 0 {
				if _, err := s.Next(bufs[0]); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"Segment", func() {
			if n, err := Segment(h, pkt, bufs, sizes, 8); n != 53 || err != nil {
				t.Fatal(n, err)
			}
		}},
		{"Segmenter error", func() { _ = s.Reset(VnetHdr{GSOType: GSOUDPL4}, pkt) }},
		{"Coalescer", func() {
			c.Reset()
			for _, f := range frames {
				c.Add(f)
			}
			for k := range c.Len() {
				_, parts = c.Packet(k, parts[:0])
			}
			if c.Len() != 1 {
				t.Fatal(c.Len())
			}
		}},
		{"AppendPacket", func() { out = c.AppendPacket(out[:0], 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(100, tt.f); allocs != 0 {
				t.Errorf("%v allocations, want 0", allocs)
			}
		})
	}
}
