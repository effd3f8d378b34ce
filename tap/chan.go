package tap

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// In-memory device limits.
const (
	// ChanQueueLen is how many frames wait in each direction of a Chan
	// before more are dropped.
	ChanQueueLen = 256
	// ChanBatchSize is the most frames one Chan.Read returns.
	ChanBatchSize = 32
)

// queue is one direction of an in-memory link: a bounded FIFO of frames
// over a fixed set of buffers, so passing a frame allocates nothing.
type queue struct {
	free chan []byte // empty buffers, len FrameLen(mtu)
	full chan []byte // queued frames, in order
}

func newQueue(mtu int) *queue {
	q := &queue{free: make(chan []byte, ChanQueueLen), full: make(chan []byte, ChanQueueLen)}
	for range ChanQueueLen {
		q.free <- make([]byte, FrameLen(mtu))
	}
	return q
}

// push copies f into a free buffer and queues it; false if the queue is
// full. full never blocks: it has room for every buffer.
func (q *queue) push(f []byte) bool {
	select {
	case b := <-q.free:
		q.full <- append(b[:0], f...)
		return true
	default:
		return false
	}
}

// Chan is an in-memory Device. Frames it writes go to its peer (see
// NewChannelPair) or, for a device from NewChan, to Take; frames its peer
// writes or a test Injects come out of its Read. Queues are bounded: a
// frame written to a full queue is dropped and counted, as a real network
// interface drops on overflow. Chan is safe for concurrent use.
type Chan struct {
	// immutable after construction
	mtu  int
	mac  net.HardwareAddr
	name string
	in   *queue // frames for Read
	out  *queue // frames from Write

	closeOnce sync.Once
	closed    chan struct{}
	dropped   atomic.Uint64
}

var _ Device = (*Chan)(nil)

// NewChan returns a single in-memory device: a test feeds its Read with
// Inject and collects what it writes with Take.
func NewChan(mtu int, mac net.HardwareAddr) *Chan {
	return newChan(mtu, mac, "chan0", newQueue(mtu), newQueue(mtu))
}

// NewChannelPair returns two in-memory devices joined back to back, like
// the two ends of a veth pair: a frame written to a is read from b and vice
// versa. Closing one leaves the other open; frames written to it then
// queue until dropped.
func NewChannelPair(mtu int, macA, macB net.HardwareAddr) (a, b *Chan) {
	ab, ba := newQueue(mtu), newQueue(mtu)
	return newChan(mtu, macA, "chan0", ba, ab), newChan(mtu, macB, "chan1", ab, ba)
}

func newChan(mtu int, mac net.HardwareAddr, name string, in, out *queue) *Chan {
	return &Chan{mtu: mtu, mac: append(net.HardwareAddr(nil), mac...), name: name, in: in, out: out, closed: make(chan struct{})}
}

// Read implements Device.
func (c *Chan) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) < len(bufs) {
		return 0, fmt.Errorf("tap: Read of %d buffers and %d sizes; need at least one of each", len(bufs), len(sizes))
	}
	// Buffers are held to what the real device needs, so that code tested
	// on a Chan works on a TAP.
	for i := range bufs {
		if offset < 0 || len(bufs[i]) < offset+FrameLen(c.mtu) {
			return 0, shortBufferError(len(bufs[i]), offset, c.mtu)
		}
	}
	// Checked first, so that a closed device reports it even while
	// frames are still queued.
	select {
	case <-c.closed:
		return 0, ErrClosed
	default:
	}
	var f []byte
	select {
	case <-c.closed:
		return 0, ErrClosed
	case f = <-c.in.full:
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], f)
		c.in.free <- f
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case f = <-c.in.full:
		default:
			return n, nil
		}
	}
}

// Write implements Device. A frame that does not fit the queue is dropped
// (see Dropped), not an error; a frame shorter than an Ethernet header or
// longer than FrameLen(MTU()) is an error.
func (c *Chan) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		select {
		case <-c.closed:
			return i, ErrClosed
		default:
		}
		if n := len(b) - offset; offset < 0 || n < frame.EthernetHeaderLen || n > FrameLen(c.mtu) {
			return i, fmt.Errorf("tap: frame %d is %d bytes, not in [%d,%d] for MTU %d", i, n, frame.EthernetHeaderLen, FrameLen(c.mtu), c.mtu)
		}
		if !c.out.push(b[offset:]) {
			c.dropped.Add(1)
		}
	}
	return len(bufs), nil
}

// Inject queues a copy of f for Read, as if it arrived on the device. It
// returns ErrQueueFull rather than blocking when the queue is full.
func (c *Chan) Inject(f []byte) error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	if len(f) > FrameLen(c.mtu) {
		return fmt.Errorf("tap: frame of %d bytes exceeds %d for MTU %d", len(f), FrameLen(c.mtu), c.mtu)
	}
	if !c.in.push(f) {
		return ErrQueueFull
	}
	return nil
}

// Take returns the next frame the device wrote, waiting until there is one,
// ctx is done or the device is closed. On a device from NewChannelPair it
// competes with the peer's Read for the same frames.
func (c *Chan) Take(ctx context.Context) ([]byte, error) {
	select {
	case f := <-c.out.full:
		out := append([]byte(nil), f...)
		c.out.free <- f
		return out, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, ErrClosed
	}
}

// Dropped is how many written frames were dropped because the queue was
// full.
func (c *Chan) Dropped() uint64 { return c.dropped.Load() }

// BatchSize implements Device.
func (c *Chan) BatchSize() int { return ChanBatchSize }

// MTU implements Device.
func (c *Chan) MTU() int { return c.mtu }

// MAC implements Device.
func (c *Chan) MAC() net.HardwareAddr { return c.mac }

// Name implements Device: "chan0", or "chan1" for the second of a pair.
func (c *Chan) Name() string { return c.name }

// Close implements Device. Frames still queued for Read are discarded.
func (c *Chan) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}
