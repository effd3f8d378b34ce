package simnet

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFabric_Send measures a packet's whole way: Send, the heap or
// the direct path, a worker and the handler. At most window packets are in
// flight, so the heap, the queues and the free lists reach a steady state.
func BenchmarkFabric_Send(b *testing.B) {
	const window = 1024
	for _, latency := range []time.Duration{0, time.Millisecond} {
		for _, size := range []int{64, 1400} {
			b.Run(fmt.Sprintf("%v/%dB", latency, size), func(b *testing.B) {
				f := newFabric(b, Config{Latency: Constant(2 * latency), Workers: 1})
				la, lb := connect(b, listen(b, f, 1), listen(b, f, 2))
				var got atomic.Uint64
				lb.SetHandler(func([]byte) { got.Add(1) })
				pkt := make([]byte, size)
				var sent uint64
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					if err := la.Send(pkt); err != nil {
						b.Fatal(err)
					}
					sent++
					for sent-got.Load() >= window {
						runtime.Gosched()
					}
				}
				for got.Load() < sent {
					runtime.Gosched()
				}
			})
		}
	}
}
