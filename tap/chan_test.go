package tap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
)

// testFrame returns an Ethernet frame of n bytes whose payload is filled
// with seq.
func testFrame(n int, seq byte) []byte {
	f := make([]byte, max(n, 14))
	copy(f, macB)
	copy(f[6:], macA)
	f[12], f[13] = 0x08, 0x00
	for i := 14; i < n; i++ {
		f[i] = seq
	}
	return f[:n]
}

// readBufs returns n buffers with room for offset and a full frame.
func readBufs(n, offset, mtu int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, offset+FrameLen(mtu))
	}
	return bufs, make([]int, n)
}

func TestChannelPair_RoundTrip(t *testing.T) {
	const offset = 32
	a, b := NewChannelPair(1400, macA, macB)
	defer a.Close()
	defer b.Close()
	if a.MTU() != 1400 || !bytes.Equal(a.MAC(), macA) || !bytes.Equal(b.MAC(), macB) || a.Name() == b.Name() {
		t.Fatalf("pair: mtu %d, macs %v %v, names %q %q", a.MTU(), a.MAC(), b.MAC(), a.Name(), b.Name())
	}

	// a writes three frames from behind header room; b reads them in one
	// batch, in order, at its own offset.
	var out [][]byte
	for i := range 3 {
		buf := make([]byte, offset+60+i)
		copy(buf[offset:], testFrame(60+i, byte(i)))
		out = append(out, buf)
	}
	if n, err := a.Write(out, offset); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	bufs, sizes := readBufs(b.BatchSize(), offset, b.MTU())
	n, err := b.Read(bufs, sizes, offset)
	if n != 3 || err != nil {
		t.Fatalf("Read = %d, %v; want 3 frames", n, err)
	}
	for i := range n {
		if got := bufs[i][offset : offset+sizes[i]]; !bytes.Equal(got, out[i][offset:]) {
			t.Errorf("frame %d = %x, want %x", i, got, out[i][offset:])
		}
	}

	// And back the other way, one frame per read with a batch of one.
	if _, err := b.Write([][]byte{testFrame(100, 7)}, 0); err != nil {
		t.Fatal(err)
	}
	one, oneSize := readBufs(1, 0, a.MTU())
	if n, err := a.Read(one, oneSize, 0); n != 1 || err != nil || !bytes.Equal(one[0][:oneSize[0]], testFrame(100, 7)) {
		t.Fatalf("Read = %d, %v, %x", n, err, one[0][:oneSize[0]])
	}
}

func TestChan_InjectTake(t *testing.T) {
	c := NewChan(1400, macA)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	in := testFrame(64, 1)
	if err := c.Inject(in); err != nil {
		t.Fatal(err)
	}
	in[20] = 99 // Inject copied the frame
	bufs, sizes := readBufs(4, 0, c.MTU())
	if n, err := c.Read(bufs, sizes, 0); n != 1 || err != nil || !bytes.Equal(bufs[0][:sizes[0]], testFrame(64, 1)) {
		t.Fatalf("Read = %d, %v, %x", n, err, bufs[0][:sizes[0]])
	}

	if _, err := c.Write([][]byte{testFrame(80, 2)}, 0); err != nil {
		t.Fatal(err)
	}
	got, err := c.Take(ctx)
	if err != nil || !bytes.Equal(got, testFrame(80, 2)) {
		t.Fatalf("Take = %x, %v", got, err)
	}

	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if _, err := c.Take(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Take on an empty queue = %v, want the context's error", err)
	}
}

func TestChan_BoundedQueue(t *testing.T) {
	a, b := NewChannelPair(1400, macA, macB)
	defer a.Close()
	defer b.Close()
	f := [][]byte{testFrame(60, 0)}
	for range ChanQueueLen + 10 {
		if n, err := a.Write(f, 0); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v; a full queue drops, it is not an error", n, err)
		}
	}
	if got := a.Dropped(); got != 10 {
		t.Errorf("Dropped = %d, want 10", got)
	}
	if err := b.Inject(f[0]); !errors.Is(err, ErrQueueFull) {
		t.Errorf("Inject into a full queue = %v, want ErrQueueFull", err)
	}
	bufs, sizes := readBufs(ChanBatchSize, 0, 1400)
	total := 0
	for total < ChanQueueLen {
		n, err := b.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != ChanQueueLen {
		t.Errorf("read %d frames, want %d", total, ChanQueueLen)
	}
}

func TestChan_FrameSizes(t *testing.T) {
	c := NewChan(1400, macA)
	defer c.Close()
	tests := []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"header only", testFrame(14, 0), true},
		{"largest", testFrame(FrameLen(1400), 0), true},
		{"shorter than a header", testFrame(13, 0), false},
		{"larger than the MTU allows", testFrame(FrameLen(1400)+1, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := c.Write([][]byte{tt.frame}, 0)
			if tt.ok != (err == nil) || tt.ok != (n == 1) {
				t.Errorf("Write = %d, %v; want ok %v", n, err, tt.ok)
			}
		})
	}
	if err := c.Inject(testFrame(FrameLen(1400)+1, 0)); err == nil {
		t.Error("Inject of an oversized frame succeeded")
	}

	// Read wants room for the largest frame, as the real device does,
	// whatever the size of the frames waiting.
	if err := c.Inject(testFrame(60, 0)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read([][]byte{make([]byte, 16+FrameLen(1400)-1)}, []int{0}, 16); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Read into a short buffer = %d, %v; want io.ErrShortBuffer", n, err)
	}
	if _, err := c.Read(nil, nil, 0); err == nil {
		t.Error("Read with no buffers succeeded")
	}
	if _, err := c.Read([][]byte{make([]byte, FrameLen(1400))}, []int{0}, -1); err == nil {
		t.Error("Read with a negative offset succeeded")
	}
	if n, err := c.Write([][]byte{testFrame(60, 0)}, 61); n != 0 || err == nil {
		t.Errorf("Write with the offset past the frame = %d, %v; want an error", n, err)
	}
}

func TestChan_CloseUnblocksRead(t *testing.T) {
	a, b := NewChannelPair(1400, macA, macB)
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		bufs, sizes := readBufs(1, 0, 1400)
		_, err := a.Read(bufs, sizes, 0)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let Read block
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock Read within a second")
	}
	if _, err := a.Write([][]byte{testFrame(60, 0)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	if err := a.Inject(testFrame(60, 0)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Inject after Close = %v, want net.ErrClosed", err)
	}
	if _, err := a.Take(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Take after Close = %v, want net.ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	// The peer stays usable.
	if _, err := b.Write([][]byte{testFrame(60, 0)}, 0); err != nil {
		t.Errorf("peer Write after Close = %v", err)
	}
}

// TestChannelPair_Concurrent has writers on both ends and a reader on each,
// for the race detector; every frame that was not dropped arrives intact
// and in per-writer order.
func TestChannelPair_Concurrent(t *testing.T) {
	a, b := NewChannelPair(1400, macA, macB)
	const writers, frames = 2, 500
	var wg sync.WaitGroup
	for _, d := range []*Chan{a, b} {
		for w := range writers {
			wg.Go(func() {
				for i := range frames {
					f := testFrame(60, byte(w))
					f[15], f[16] = byte(i>>8), byte(i)
					if _, err := d.Write([][]byte{f}, 0); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	counts := make([]int, 2)
	var readers sync.WaitGroup
	for i, d := range []*Chan{a, b} {
		readers.Go(func() {
			bufs, sizes := readBufs(ChanBatchSize, 0, 1400)
			last := map[byte]int{0: -1, 1: -1}
			for {
				n, err := d.Read(bufs, sizes, 0)
				if err != nil {
					return
				}
				for j := range n {
					f := bufs[j][:sizes[j]]
					w, seq := f[14], int(f[15])<<8|int(f[16])
					if seq <= last[w] {
						t.Errorf("writer %d: frame %d after %d", w, seq, last[w])
					}
					last[w] = seq
					counts[i]++
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && (len(a.in.full) > 0 || len(b.in.full) > 0) {
		time.Sleep(time.Millisecond)
	}
	a.Close()
	b.Close()
	readers.Wait()
	for i, d := range []*Chan{a, b} {
		if got, want := uint64(counts[1-i])+d.Dropped(), uint64(writers*frames); got != want {
			t.Errorf("device %d: %d read by the peer + %d dropped, want %d", i, counts[1-i], d.Dropped(), want)
		}
	}
}

func TestChannelPair_NoAllocs(t *testing.T) {
	a, b := NewChannelPair(1400, macA, macB)
	defer a.Close()
	defer b.Close()
	out := [][]byte{testFrame(1000, 1), testFrame(60, 2)}
	bufs, sizes := readBufs(ChanBatchSize, 16, 1400)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := a.Write(out, 0); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Read(bufs, sizes, 16); n != 2 || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("Write+Read allocates %v times, want 0", allocs)
	}
}
