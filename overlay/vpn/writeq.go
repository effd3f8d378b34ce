package vpn

import (
	"sync"
	"time"
)

// Device write queue limits.
const (
	// writeQueueLen is how many received frames wait for the device
	// before more are dropped: some 20 ms at a gigabit, enough to ride
	// out the writer's losing its CPU for a few scheduler time slices
	// (at 512, a loaded two-core machine dropped a frame in 200).
	writeQueueLen = 2048
	// writeBatch is the most frames one device Write takes, so that a
	// device with offloads can merge a flow's segments into one write.
	writeBatch = 128
	// idleGap: a frame that comes this long after the one before, with
	// nothing queued or being written, is written at once by the
	// goroutine that has it, which saves a ping or a lone ACK the
	// hand-over to the writer (some 0.1 ms round trip on a VM); a busy
	// link, whose frames come closer, stays batched.
	idleGap = 200 * time.Microsecond
)

// writeQueue carries frames from the goroutines that receive them (link
// readers, session handlers, the device reader's local answers) to the
// one goroutine that writes them to the device, so that the device gets
// them in batches. It is a ring of buffers, each allocated the first
// time the queue reaches that depth and then reused: push copies a frame
// in, take swaps filled buffers for the taker's empty ones, and nothing
// is allocated per frame. A full queue drops rather than make a link
// reader wait for the device. One write to the device is under way at a
// time (busy), so frames keep their order.
type writeQueue struct {
	// immutable after newWriteQueue
	slotLen int
	ready   chan struct{} // holds a token when queued frames wait for the writer

	mu    sync.Mutex
	slots [][]byte // ring; each buffer nil or of capacity slotLen
	head  int
	n     int
	busy  bool          // a write to the device is under way
	last  time.Duration // when the last frame came, on the caller's clock
}

func newWriteQueue(n, slotLen int) *writeQueue {
	// The first frame finds the device idle.
	return &writeQueue{slotLen: slotLen, ready: make(chan struct{}, 1), slots: make([][]byte, n), last: -idleGap}
}

// push queues a copy of f, or with inline tells the caller to write f
// itself and then call done: when f comes idleGap after the frame before
// (now is on any monotonic clock) and nothing is queued or being
// written. ok is false if the queue is full. f must be at most slotLen
// bytes long.
func (q *writeQueue) push(f []byte, now time.Duration) (inline, ok bool) {
	q.mu.Lock()
	idle := now-q.last >= idleGap
	q.last = now
	if idle && !q.busy && q.n == 0 {
		q.busy = true
		q.mu.Unlock()
		return true, true
	}
	if q.n == len(q.slots) {
		q.mu.Unlock()
		return false, false
	}
	i := q.head + q.n
	if i >= len(q.slots) {
		i -= len(q.slots)
	}
	if q.slots[i] == nil {
		q.slots[i] = make([]byte, 0, q.slotLen)
	}
	q.slots[i] = append(q.slots[i][:0], f...)
	q.n++
	// Whoever is writing looks at the queue when done.
	wake := q.n == 1 && !q.busy
	q.mu.Unlock()
	if wake {
		q.wake()
	}
	return false, true
}

func (q *writeQueue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take moves up to len(bufs) queued frames, oldest first, into bufs,
// giving the buffers that were in bufs (each of capacity slotLen) to the
// queue in exchange, and returns how many it moved: 0 if none are queued
// or a write is under way. It does not wait. Having taken frames, the
// caller writes them and calls done.
func (q *writeQueue) take(bufs [][]byte) int {
	q.mu.Lock()
	if q.busy {
		q.mu.Unlock()
		return 0
	}
	n := min(q.n, len(bufs))
	q.busy = n > 0
	for i := range n {
		j := q.head + i
		if j >= len(q.slots) {
			j -= len(q.slots)
		}
		bufs[i], q.slots[j] = q.slots[j], bufs[i][:0]
	}
	q.head += n
	if q.head >= len(q.slots) {
		q.head -= len(q.slots)
	}
	q.n -= n
	q.mu.Unlock()
	return n
}

// done ends the write that push or take started, and wakes the writer if
// frames came meanwhile.
func (q *writeQueue) done() {
	q.mu.Lock()
	q.busy = false
	more := q.n > 0
	q.mu.Unlock()
	if more {
		q.wake()
	}
}
