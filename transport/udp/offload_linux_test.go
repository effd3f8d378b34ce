package udp_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/transport/udp"
)

// runOf returns n datagrams of size bytes to dst, each starting with its
// index, plus one shorter datagram that ends the run.
func runOf(n, size int, dst netip.AddrPort, tag byte) ([][]byte, []netip.AddrPort) {
	var bufs [][]byte
	var to []netip.AddrPort
	for i := range n + 1 {
		l := size
		if i == n {
			l = size / 3
		}
		b := bytes.Repeat([]byte{tag}, l)
		b[0], b[1] = byte(i>>8), byte(i)
		bufs = append(bufs, b)
		to = append(to, dst)
	}
	return bufs, to
}

// TestConn_WriteBatch_Runs sends runs of equal datagrams (which GSO
// carries as one message each) interleaved between two receivers, with
// offloads on and off: every datagram arrives whole, in order per
// receiver, whatever the kernel merged on the way.
func TestConn_WriteBatch_Runs(t *testing.T) {
	for _, offload := range []string{"on", "off"} {
		t.Run("offload="+offload, func(t *testing.T) {
			cfg := udp.Default()
			cfg.Offload = offload
			w := listenCfg(t, netip.AddrPortFrom(lo4, 0), cfg)
			if gso, _ := w.Offloads(); gso != (offload == "on") {
				t.Fatalf("Offloads() gso = %v with offload %s", gso, offload)
			}
			r1 := listen(t, netip.AddrPortFrom(lo4, 0))
			r2 := listen(t, netip.AddrPortFrom(lo4, 0))
			// 100 datagrams exceed one GSO message (64 segments), and
			// the runs to r1 and r2 alternate.
			a, ta := runOf(100, 1400, r1.LocalAddr(), 'a')
			b, tb := runOf(5, 700, r2.LocalAddr(), 'b')
			c, tc := runOf(3, 1400, r1.LocalAddr(), 'c')
			bufs := append(append(append([][]byte{}, a...), b...), c...)
			to := append(append(append([]netip.AddrPort{}, ta...), tb...), tc...)
			if n, err := w.WriteBatch(bufs, to); n != len(bufs) || err != nil {
				t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(bufs))
			}
			want1 := append(append([][]byte{}, a...), c...)
			for i, p := range readN(t, r1, len(want1), 2048) {
				if !bytes.Equal(p.data, want1[i]) {
					t.Fatalf("r1 datagram %d: %d bytes %q..., want %d bytes %q...", i, len(p.data), p.data[:3], len(want1[i]), want1[i][:3])
				}
			}
			for i, p := range readN(t, r2, len(b), 2048) {
				if !bytes.Equal(p.data, b[i]) {
					t.Fatalf("r2 datagram %d differs", i)
				}
			}
		})
	}
}

// TestConn_ReadSegments_Merged: a GSO run read with GRO on comes back as
// merged reads whose segments are the datagrams sent.
func TestConn_ReadSegments_Merged(t *testing.T) {
	w := listen(t, netip.AddrPortFrom(lo4, 0))
	r := listen(t, netip.AddrPortFrom(lo4, 0))
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes, segs, from := make([]int, 8), make([]int, 8), make([]netip.AddrPort, 8)
	// The first call turns GRO on, so read once before the run is sent.
	if err := w.WriteTo([]byte("first"), r.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(5*time.Second, func() { _ = r.Close() })
	defer watchdog.Stop()
	if n, err := r.ReadSegments(bufs, sizes, segs, from); err != nil || n != 1 || string(bufs[0][:sizes[0]]) != "first" || segs[0] != sizes[0] {
		t.Fatalf("ReadSegments = %d, %v (%q, seg %d)", n, err, bufs[0][:sizes[0]], segs[0])
	}
	run, to := runOf(40, 1200, r.LocalAddr(), 'x')
	if n, err := w.WriteBatch(run, to); n != len(run) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	var got [][]byte
	merged := false
	for len(got) < len(run) {
		n, err := r.ReadSegments(bufs, sizes, segs, from)
		if err != nil {
			t.Fatalf("ReadSegments after %d datagrams: %v", len(got), err)
		}
		for i := range n {
			if from[i] != w.LocalAddr() {
				t.Fatalf("from %v, want %v", from[i], w.LocalAddr())
			}
			if segs[i] < sizes[i] {
				merged = true
			}
			for b := bufs[i][:sizes[i]]; len(b) > 0; {
				k := min(segs[i], len(b))
				got = append(got, bytes.Clone(b[:k]))
				b = b[k:]
			}
		}
	}
	for i := range run {
		if !bytes.Equal(got[i], run[i]) {
			t.Fatalf("datagram %d: %d bytes, want %d", i, len(got[i]), len(run[i]))
		}
	}
	gso, gro := r.Offloads()
	t.Logf("gso %v, gro %v, merged reads %v", gso, gro, merged)
	if gro && !merged {
		t.Errorf("GRO is on but no read was merged")
	}
}

// TestConn_ReadSegments_OffloadOff: without offloads every read is one
// datagram.
func TestConn_ReadSegments_OffloadOff(t *testing.T) {
	cfg := udp.Default()
	cfg.Offload = "off"
	r := listenCfg(t, netip.AddrPortFrom(lo4, 0), cfg)
	w := listen(t, netip.AddrPortFrom(lo4, 0))
	run, to := runOf(10, 1000, r.LocalAddr(), 'y')
	if n, err := w.WriteBatch(run, to); n != len(run) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	bufs := [][]byte{make([]byte, 65535), make([]byte, 65535)}
	sizes, segs, from := make([]int, 2), make([]int, 2), make([]netip.AddrPort, 2)
	watchdog := time.AfterFunc(5*time.Second, func() { _ = r.Close() })
	defer watchdog.Stop()
	for got := 0; got < len(run); {
		n, err := r.ReadSegments(bufs, sizes, segs, from)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if segs[i] != sizes[i] || !bytes.Equal(bufs[i][:sizes[i]], run[got]) {
				t.Fatalf("read %d: %d bytes, seg %d", got, sizes[i], segs[i])
			}
			got++
		}
	}
	if _, gro := r.Offloads(); gro {
		t.Error("GRO on with offload off")
	}
}

func TestConfig_Offload(t *testing.T) {
	for _, v := range []string{"", "on", "off"} {
		cfg := udp.Default()
		cfg.Offload = v
		if err := cfg.Validate(); err != nil {
			t.Errorf("offload %q: %v", v, err)
		}
	}
	cfg := udp.Default()
	cfg.Offload = "yes"
	if err := cfg.Validate(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("transport.udp.offload")) {
		t.Errorf("offload yes: %v, want an error naming transport.udp.offload", err)
	}
}

// BenchmarkConn_WriteBatch_Run sends 44 datagrams of 1400 bytes (a TCP
// super-segment's worth) per WriteBatch, with GSO and without, and
// prints the ratio.
func BenchmarkConn_WriteBatch_Run(b *testing.B) {
	results := map[string]float64{}
	for _, offload := range []string{"off", "on"} {
		b.Run("offload="+offload, func(b *testing.B) {
			cfg := udp.Default()
			cfg.Offload = offload
			w := listenCfg(b, netip.AddrPortFrom(lo4, 0), cfg)
			// A sink that nobody reads: the kernel drops what overflows
			// its buffer, after the send cost was paid.
			r := listen(b, netip.AddrPortFrom(lo4, 0))
			run, to := runOf(43, 1400, r.LocalAddr(), 'z')
			b.SetBytes(int64(44 * 1400))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := w.WriteBatch(run, to); err != nil {
					b.Fatal(err)
				}
			}
			results[offload] = float64(b.Elapsed()) / float64(b.N)
		})
	}
	if results["on"] > 0 && results["off"] > 0 {
		fmt.Printf("WriteBatch of a 44-datagram run: GSO %.1fx faster than sendmmsg alone\n", results["off"]/results["on"])
	}
}
