package offload

import "testing"

func BenchmarkSegment(b *testing.B) {
	for _, bc := range []struct {
		name string
		s    seg
		gso  int
	}{
		{"IPv4/64KB", stream(flowA, 64000)[0], 1228},
		{"IPv6/64KB", stream(flowA6, 64000)[0], 1208},
		{"IPv4/1KB", stream(flowA, 1000)[0], 1228},
	} {
		b.Run(bc.name, func(b *testing.B) {
			super := bc.s.super(bc.gso)
			h, _ := ParseVnetHdr(super)
			pkt := super[VnetHdrLen:]
			bufs, sizes := make([][]byte, 64), make([]int, 64)
			for i := range bufs {
				bufs[i] = make([]byte, 1500)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			for b.Loop() {
				if _, err := Segment(h, pkt, bufs, sizes, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCoalesce(b *testing.B) {
	for _, bc := range []struct {
		name string
		ss   []seg
	}{
		{"one flow/45x1228B", stream(flowA, repeat(45, 1228)...)},
		{"two flows/2x32x1228B", func() []seg {
			a, c := stream(flowA, repeat(32, 1228)...), stream(flowB, repeat(32, 1228)...)
			var ss []seg
			for i := range a {
				ss = append(ss, a[i], c[i])
			}
			return ss
		}()},
		{"acks/64x0B", func() []seg {
			ss := stream(flowA, repeat(64, 0)...)
			for i := range ss {
				ss[i].ack += uint32(i)
			}
			return ss
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			frames := make([][]byte, len(bc.ss))
			n := 0
			for i, s := range bc.ss {
				frames[i] = s.build()
				n += len(frames[i])
			}
			var c Coalescer
			parts := make([][]byte, 0, MaxSegments)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				c.Reset()
				for _, f := range frames {
					c.Add(f)
				}
				for k := range c.Len() {
					_, parts = c.Packet(k, parts[:0])
				}
			}
			b.ReportMetric(float64(len(frames))/float64(c.Len()), "frames/write")
		})
	}
}
