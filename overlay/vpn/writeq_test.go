package vpn

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/tap"
)

func TestWriteQueue_FIFOAndFull(t *testing.T) {
	q := newWriteQueue(4, 16)
	bufs := [][]byte{make([]byte, 0, 16), make([]byte, 0, 16), make([]byte, 0, 16)}
	// The first frame finds the queue idle: its caller writes it.
	if inline, ok := q.push([]byte{0xee}, 0); !inline || !ok {
		t.Fatalf("first push = %v, %v; want it written inline", inline, ok)
	}
	if inline, ok := q.push([]byte{0xee}, 0); inline || !ok {
		t.Fatalf("push during the inline write = %v, %v; want it queued", inline, ok)
	}
	q.done()
	if n := q.take(bufs); n != 1 {
		t.Fatalf("take = %d, want 1", n)
	}
	q.done()
	next, want := 0, 0
	// Several rounds, so the ring wraps around.
	for round := range 5 {
		// All at time 0: never idleGap after the one before.
		for range 4 {
			if inline, ok := q.push([]byte{byte(next)}, 0); inline || !ok {
				t.Fatalf("round %d: push %d = %v, %v; want it queued", round, next, inline, ok)
			}
			next++
		}
		if _, ok := q.push([]byte{0xff}, 0); ok {
			t.Fatalf("round %d: push to a full queue accepted", round)
		}
		for _, batch := range []int{3, 1} {
			if n := q.take(bufs); n != batch {
				t.Fatalf("round %d: take = %d, want %d", round, n, batch)
			}
			if n := q.take(bufs); n != 0 {
				t.Fatalf("round %d: take during a write = %d, want 0", round, n)
			}
			q.done()
			for i := range batch {
				if !bytes.Equal(bufs[i], []byte{byte(want)}) {
					t.Fatalf("round %d: frame %x, want %d", round, bufs[i], want)
				}
				want++
			}
		}
		if n := q.take(bufs); n != 0 {
			t.Fatalf("round %d: take from an empty queue = %d", round, n)
		}
	}
	for i, b := range bufs {
		if cap(b) != 16 {
			t.Errorf("buffer %d has capacity %d after the swaps", i, cap(b))
		}
	}
}

func TestWriteQueue_NoAllocs(t *testing.T) {
	q := newWriteQueue(8, 1500)
	f := make([]byte, 1400)
	bufs := [][]byte{make([]byte, 0, 1500), make([]byte, 0, 1500)}
	for range 8 {
		q.push(f, 0)
		q.take(bufs)
		q.done()
	}
	if allocs := testing.AllocsPerRun(100, func() {
		q.push(f, 0)
		q.push(f, 0)
		q.take(bufs)
		q.done()
	}); allocs != 0 {
		t.Errorf("push and take allocate %v times, want 0", allocs)
	}
}

// gatedDevice records the batches written to it; a write waits while the
// gate is closed.
type gatedDevice struct {
	tap.Device // only Write and MTU are used
	mu         sync.Mutex
	batches    [][][]byte
	gate       chan struct{} // closed: writes go through
	entered    chan struct{} // a token per Write started
	discard    bool          // record nothing (and allocate nothing)
}

func (d *gatedDevice) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case d.entered <- struct{}{}:
	default:
	}
	<-d.gate
	if d.discard {
		return len(bufs), nil
	}
	var batch [][]byte
	for _, b := range bufs {
		batch = append(batch, bytes.Clone(b[offset:]))
	}
	d.mu.Lock()
	d.batches = append(d.batches, batch)
	d.mu.Unlock()
	return len(bufs), nil
}

// frames returns the frames written so far, and the size of each batch.
func (d *gatedDevice) frames() (all [][]byte, sizes []int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range d.batches {
		all = append(all, b...)
		sizes = append(sizes, len(b))
	}
	return all, sizes
}

// newWriterVPN returns a VPN with just what writeFrame and writeLoop use,
// its writeLoop running, on a gated device.
func newWriterVPN(t testing.TB) (*VPN, *gatedDevice) {
	d := &gatedDevice{gate: make(chan struct{}), entered: make(chan struct{}, 1024)}
	ctx, cancel := context.WithCancel(context.Background())
	v := &VPN{dev: d, log: zaptest.NewLogger(t), ctx: ctx, cancel: cancel, maxPacket: 1300, started: time.Now()}
	v.writeBufs.New = func() any { return new([1][]byte) }
	v.wq = newWriteQueue(writeQueueLen, tap.FrameLen(v.maxPacket))
	v.spawn(v.writeLoop)
	t.Cleanup(func() {
		select {
		case <-d.gate:
		default:
			close(d.gate)
		}
		cancel()
		v.wg.Wait()
	})
	return v, d
}

func testFrame(i int) []byte {
	return append(bytes.Repeat([]byte{byte(i)}, 60), []byte(fmt.Sprint(i))...)
}

// waitFrames waits until n frames were written.
func waitFrames(t *testing.T, d *gatedDevice, n int) ([][]byte, []int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if all, sizes := d.frames(); len(all) >= n {
			return all, sizes
		}
	}
	all, _ := d.frames()
	t.Fatalf("%d frames written within 5s, want %d", len(all), n)
	return nil, nil
}

// TestWriteLoop_Batches: frames that arrive while the device is busy go
// to it together, up to writeBatch at a time, in order.
func TestWriteLoop_Batches(t *testing.T) {
	v, d := newWriterVPN(t)
	// Frame 0 finds the device idle and is written at once, by the
	// goroutine that has it, which waits for the device.
	go v.writeFrame(testFrame(0))
	<-d.entered
	for i := 1; i <= 200; i++ {
		v.writeFrame(testFrame(i))
	}
	close(d.gate)
	all, sizes := waitFrames(t, d, 201)
	for i, f := range all {
		if !bytes.Equal(f, testFrame(i)) {
			t.Fatalf("frame %d is %q", i, f)
		}
	}
	if want := []int{1, writeBatch, 200 - writeBatch}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("batches of %v frames, want %v", sizes, want)
	}
	if got := v.stats.framesIn.Load(); got != 201 {
		t.Errorf("framesIn = %d, want 201", got)
	}
}

// TestWriteLoop_FullQueueDrops: a device that does not keep up makes the
// queue drop (and count) rather than block the receiving goroutine.
func TestWriteLoop_FullQueueDrops(t *testing.T) {
	v, d := newWriterVPN(t)
	go v.writeFrame(testFrame(0))
	<-d.entered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= writeQueueLen+100; i++ {
			v.writeFrame(testFrame(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writeFrame blocked on a full queue")
	}
	if got := v.stats.dropQueueFull.Load(); got != 100 {
		t.Errorf("dropQueueFull = %d, want 100", got)
	}
	close(d.gate)
	all, _ := waitFrames(t, d, writeQueueLen+1)
	for i, f := range all {
		if !bytes.Equal(f, testFrame(i)) {
			t.Fatalf("frame %d is %q", i, f)
		}
	}
}

// TestWriteFrame_IdleWritesAtOnce: a frame that finds the device idle is
// written before writeFrame returns; frames close behind it are queued
// and follow in order.
func TestWriteFrame_IdleWritesAtOnce(t *testing.T) {
	v, d := newWriterVPN(t)
	close(d.gate)
	v.writeFrame(testFrame(0))
	if all, _ := d.frames(); len(all) != 1 {
		t.Fatalf("%d frames written when writeFrame returned, want 1", len(all))
	}
	for i := 1; i < 50; i++ {
		v.writeFrame(testFrame(i))
	}
	all, _ := waitFrames(t, d, 50)
	for i, f := range all {
		if !bytes.Equal(f, testFrame(i)) {
			t.Fatalf("frame %d is %q", i, f)
		}
	}
	time.Sleep(2 * idleGap)
	v.writeFrame(testFrame(50))
	if all, _ := d.frames(); len(all) != 51 {
		t.Fatalf("%d frames written when writeFrame returned after a pause, want 51", len(all))
	}
}

// TestWriteFrame_Oversized: a frame larger than the queue's buffers is
// written at once by the caller.
func TestWriteFrame_Oversized(t *testing.T) {
	v, d := newWriterVPN(t)
	close(d.gate)
	big := bytes.Repeat([]byte{7}, tap.FrameLen(v.maxPacket)+100)
	v.writeFrame(big)
	if all, sizes := d.frames(); len(all) != 1 || !bytes.Equal(all[0], big) || sizes[0] != 1 {
		t.Fatalf("wrote %d frames in batches %v", len(all), sizes)
	}
}

func TestWriteFrame_NoAllocs(t *testing.T) {
	v, d := newWriterVPN(t)
	d.discard = true
	close(d.gate)
	f := testFrame(1)
	// Buffers are allocated the first time the ring reaches them.
	for pushed := 0; pushed < 2*writeQueueLen; {
		inline, ok := v.wq.push(f, 0)
		if inline {
			v.wq.done()
		}
		if ok {
			pushed++
		} else {
			runtime.Gosched()
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { v.writeFrame(f) }); allocs != 0 {
		t.Errorf("writeFrame allocates %v times, want 0", allocs)
	}
}
