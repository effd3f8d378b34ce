package record

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRecord compares sealing and opening one record in place with a
// bare AES-128-GCM Seal and Open of the same packet, header as additional
// data. ratio/* runs both in alternating batches and reports ours/baseline
// (its ns/op is suppressed; see the ours-ns/op and baseline-ns/op metrics).
func BenchmarkRecord(b *testing.B) {
	sizes := []int{64, 1400, 9000}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("seal+open/%dB", n), func(b *testing.B) {
			f := newOursRoundTrip(b, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				f()
			}
		})
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("aesgcm-baseline/%dB", n), func(b *testing.B) {
			f := newBaselineRoundTrip(b, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				f()
			}
		})
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("ratio/%dB", n), func(b *testing.B) {
			const batch = 32
			ours, base := newOursRoundTrip(b, n), newBaselineRoundTrip(b, n)
			var tOurs, tBase time.Duration
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				for range batch {
					ours()
				}
				t1 := time.Now()
				for range batch {
					base()
				}
				tBase += time.Since(t1)
				tOurs += t1.Sub(t0)
			}
			runs := float64(b.N * batch)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(tOurs.Nanoseconds())/runs, "ours-ns/op")
			b.ReportMetric(float64(tBase.Nanoseconds())/runs, "baseline-ns/op")
			b.ReportMetric(float64(tOurs)/float64(tBase), "ours/baseline")
		})
	}
	b.Run("seal-parallel/1400B", func(b *testing.B) {
		s, _ := newPair(b, DefaultWindow)
		b.SetBytes(1400)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 1400+Overhead)
			for pb.Next() {
				if _, err := s.Seal(buf, 0, buf[HeaderLen:HeaderLen+1400]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// newOursRoundTrip returns a function that seals an n-byte payload in place
// and opens it in place, leaving the payload where it started.
func newOursRoundTrip(b *testing.B, n int) func() {
	s, o := newPair(b, DefaultWindow)
	buf := make([]byte, n+Overhead)
	copy(buf[HeaderLen:], pattern(n))
	return func() {
		rec, err := s.Seal(buf, 0, buf[HeaderLen:HeaderLen+n])
		if err != nil {
			b.Fatal(err)
		}
		if _, _, _, err := o.Open(rec[HeaderLen:], rec); err != nil {
			b.Fatal(err)
		}
	}
}

// newBaselineRoundTrip is newOursRoundTrip with cipher.AEAD alone: same
// buffer layout, a fixed nonce, no header, counter or replay window.
func newBaselineRoundTrip(b *testing.B, n int) func() {
	block, err := aes.NewCipher(testKey)
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, IVLen)
	buf := make([]byte, n+Overhead)
	copy(buf[HeaderLen:], pattern(n))
	return func() {
		ct := aead.Seal(buf[HeaderLen:HeaderLen], nonce, buf[HeaderLen:HeaderLen+n], buf[:HeaderLen])
		if _, err := aead.Open(buf[HeaderLen:HeaderLen], nonce, ct, buf[:HeaderLen]); err != nil {
			b.Fatal(err)
		}
	}
}
