package record

import (
	"fmt"
	"math/bits"
)

// Replay window sizes, in sequence numbers.
const (
	// MinWindow is the smallest replay window.
	MinWindow = 2048
	// MaxWindow is the largest replay window (128 KiB of bitmap).
	MaxWindow = 1 << 20
	// DefaultWindow is about WireGuard's window (8128): some 9 ms of
	// reordering at 10 Gbit/s of 1400-byte records.
	DefaultWindow = 8192
)

// A ReplayWindow remembers which sequence numbers have been accepted. It
// accepts a sequence number once if it is newer than the highest accepted
// one or at most Size()-1 behind it; anything further behind is too old.
//
// Like RFC 6479 (and WireGuard), it keeps a ring of 64-bit blocks and
// clears whole blocks as the window slides, so Accept and Check cost O(1)
// and never allocate. The ring has a power-of-two number of blocks, at
// least Size()/64+1, so the window is exactly Size() however the highest
// sequence number is aligned.
//
// A ReplayWindow is not safe for concurrent use; Opener guards its own.
type ReplayWindow struct {
	size    uint64   // window, in sequence numbers
	ring    []uint64 // bit s%64 of ring[(s/64)&mask] is set once s is accepted
	mask    uint64   // len(ring)-1
	highest uint64   // highest accepted sequence number, 0 before the first
}

// NewReplayWindow returns an empty window of size sequence numbers. size
// must be a multiple of 64 in [MinWindow, MaxWindow]; otherwise
// NewReplayWindow returns an error wrapping ErrWindowSize.
func NewReplayWindow(size int) (*ReplayWindow, error) {
	w := new(ReplayWindow)
	if err := w.init(size); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *ReplayWindow) init(size int) error {
	if size < MinWindow || size > MaxWindow || size%64 != 0 {
		return fmt.Errorf("record: replay window %d not a multiple of 64 in [%d,%d]: %w", size, MinWindow, MaxWindow, ErrWindowSize)
	}
	blocks := 1 << bits.Len(uint(size/64)) // smallest power of two > size/64
	*w = ReplayWindow{size: uint64(size), ring: make([]uint64, blocks), mask: uint64(blocks - 1)}
	return nil
}

// Size reports the window size in sequence numbers.
func (w *ReplayWindow) Size() int { return int(w.size) }

// Highest reports the highest accepted sequence number, or 0 before the
// first.
func (w *ReplayWindow) Highest() uint64 { return w.highest }

// Check reports whether Accept(seq) would succeed, without recording seq:
// nil, ErrReplay if seq was accepted before, or ErrTooOld if seq is Size()
// or more behind Highest.
func (w *ReplayWindow) Check(seq uint64) error {
	if seq > w.highest {
		return nil
	}
	if w.highest-seq >= w.size {
		return ErrTooOld
	}
	if w.ring[(seq>>6)&w.mask]&(1<<(seq&63)) != 0 {
		return ErrReplay
	}
	return nil
}

// Accept records seq and returns nil if Check(seq) would; otherwise it
// returns Check's error and changes nothing.
func (w *ReplayWindow) Accept(seq uint64) error {
	if err := w.Check(seq); err != nil {
		return err
	}
	if seq > w.highest {
		// Clear the blocks the window slides onto; past a full turn of
		// the ring, every block.
		cur, top := w.highest>>6, seq>>6
		n := min(top-cur, w.mask+1)
		for i := uint64(1); i <= n; i++ {
			w.ring[(cur+i)&w.mask] = 0
		}
		w.highest = seq
	}
	w.ring[(seq>>6)&w.mask] |= 1 << (seq & 63)
	return nil
}
