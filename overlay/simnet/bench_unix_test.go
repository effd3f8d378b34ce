//go:build unix

package simnet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFabric_Mesh runs nodes with about 16 links each to random peers
// on the Plane model, in real time, and sends rate packets per second on
// every link end, spread over the second. One op is one second. It reports
// the cores the process kept busy (fabric, handlers and the sending loop)
// and the CPU time per packet: at 10,000 nodes and 2 packets per second and
// end, 320,000 packets per second, well under 2 cores.
func BenchmarkFabric_Mesh(b *testing.B) {
	for _, nodes := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			const dials, rate, ticks = 8, 2, 100
			f := newFabric(b, Config{Latency: NewPlane(1)})
			ls := make([]*Linker, nodes)
			for i := range ls {
				ls[i] = listen(b, f, i)
			}
			var got atomic.Uint64
			handler := func([]byte) { got.Add(1) }
			ends := make([][]*Link, nodes)
			var accepted atomic.Int64
			var wg sync.WaitGroup
			for i, l := range ls {
				wg.Go(func() {
					for {
						k, err := l.Accept(context.Background())
						if err != nil {
							return
						}
						k.SetHandler(handler)
						accepted.Add(1)
					}
				})
				wg.Go(func() {
					for j := 1; j <= dials; j++ {
						k, err := l.Dial(context.Background(), ls[(i+j*j*31)%nodes].LocalAddr())
						if err != nil {
							b.Error(err)
							return
						}
						k.SetHandler(handler)
						ends[i] = append(ends[i], k.(*Link))
					}
				})
			}
			for accepted.Load() < int64(nodes*dials) {
				time.Sleep(10 * time.Millisecond)
			}
			var all []*Link
			for _, e := range ends {
				for _, k := range e {
					all = append(all, k, k.peer)
				}
			}
			pkt := make([]byte, 100)
			per := len(all) * rate / ticks
			tk := time.NewTicker(time.Second / ticks)
			defer tk.Stop()
			pos := 0
			second := func() {
				for range ticks {
					<-tk.C
					for range per {
						all[pos].Send(pkt)
						pos = (pos + 1) % len(all)
					}
				}
			}
			second() // warm up: the heap, queues and free lists grow
			start, cpu0 := time.Now(), cpuTime()
			var secs int
			b.ReportAllocs()
			for b.Loop() {
				second()
				secs++
			}
			cpu, wall := cpuTime()-cpu0, time.Since(start)
			sent := uint64(secs * ticks * per)
			b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(sent), "cpu-ns/packet")
			b.ReportMetric(float64(sent)/wall.Seconds(), "packets/s")
			f.Close()
			wg.Wait()
		})
	}
}
