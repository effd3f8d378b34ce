package record

import (
	"math"
	"math/rand/v2"
	"testing"
)

// replayModel is the brute-force ReplayWindow: every accepted sequence
// number in a map, and the window rule applied directly.
type replayModel struct {
	size    uint64
	seen    map[uint64]bool
	highest uint64
}

func newReplayModel(size int) *replayModel {
	return &replayModel{size: uint64(size), seen: make(map[uint64]bool)}
}

func (m *replayModel) check(seq uint64) error {
	switch {
	case seq > m.highest:
		return nil
	case m.highest-seq >= m.size:
		return ErrTooOld
	case m.seen[seq]:
		return ErrReplay
	}
	return nil
}

func (m *replayModel) accept(seq uint64) error {
	if err := m.check(seq); err != nil {
		return err
	}
	m.seen[seq] = true
	m.highest = max(m.highest, seq)
	return nil
}

// replayOp is one step of a differential run.
type replayOp struct {
	seq       uint64
	checkOnly bool
}

// decodeReplayOps turns fuzz bytes into steps relative to the model's
// state, three bytes a step, so that short inputs reach the interesting
// places: the highest number, the window's edge, block boundaries, jumps
// past a full turn of the ring, and the top of the uint64 range.
func decodeReplayOps(m *replayModel, b []byte, do func(replayOp)) {
	for ; len(b) >= 3; b = b[3:] {
		op, v := b[0], uint64(b[1])<<8|uint64(b[2])
		h := m.highest
		var seq uint64
		switch op & 7 {
		case 0: // new or just accepted
			seq = h + v%64
		case 1: // behind, anywhere in or past the window
			seq = h - min(h, v)
		case 2: // whole blocks ahead
			seq = h + v*64
		case 3: // around the window's edge
			edge := h - min(h, m.size) // the first too-old number
			seq = edge - min(edge, 64) + v%128
		case 4: // far ahead
			seq = h + v<<24 + v
		case 5: // recently accepted
			seq = h - min(h, v%8)
		case 6: // near the top of the range
			seq = math.MaxUint64 - v
		case 7: // far behind
			seq = h - min(h, v<<10)
		}
		do(replayOp{seq: seq, checkOnly: op&0x80 != 0})
	}
}

// compareReplay runs one step on both and reports a mismatch.
func compareReplay(t *testing.T, w *ReplayWindow, m *replayModel, op replayOp, step int) {
	t.Helper()
	var got, want error
	if op.checkOnly {
		got, want = w.Check(op.seq), m.check(op.seq)
	} else {
		got, want = w.Accept(op.seq), m.accept(op.seq)
	}
	if got != want {
		t.Fatalf("step %d (size %d, highest %d): %s(%d) = %v, model says %v",
			step, m.size, m.highest, map[bool]string{true: "Check", false: "Accept"}[op.checkOnly], op.seq, got, want)
	}
	if w.Highest() != m.highest {
		t.Fatalf("step %d: Highest() = %d, model says %d", step, w.Highest(), m.highest)
	}
}

// sweepReplay checks every sequence number from a little past the
// window's edge up to the highest: each bit agrees with the model. It
// reads the model's map once, not per number, to keep fuzzing fast.
func sweepReplay(t *testing.T, w *ReplayWindow, m *replayModel) {
	t.Helper()
	n := min(m.highest, m.size+64) // counting down cannot overflow
	lo := m.highest - n
	seen := make([]bool, n+1)
	for seq := range m.seen {
		if seq >= lo && seq <= m.highest {
			seen[seq-lo] = true
		}
	}
	for i, s := range seen {
		seq := lo + uint64(i)
		var want error
		switch {
		case m.highest-seq >= m.size:
			want = ErrTooOld
		case s:
			want = ErrReplay
		}
		if got := w.Check(seq); got != want {
			t.Fatalf("sweep (size %d, highest %d): Check(%d) = %v, model says %v", m.size, m.highest, seq, got, want)
		}
	}
}

func TestReplayWindow_MatchesModel(t *testing.T) {
	for _, size := range []int{MinWindow, MinWindow + 64, 3000 - 3000%64, 4096, DefaultWindow} {
		for seed := range uint64(4) {
			rng := rand.New(rand.NewPCG(seed, uint64(size)))
			w, err := NewReplayWindow(size)
			if err != nil {
				t.Fatal(err)
			}
			m := newReplayModel(size)
			ops := make([]byte, 3*20000)
			for i := range ops {
				ops[i] = byte(rng.Uint32())
			}
			// Bias towards traffic: mostly forward and reordered steps.
			for i := 0; i < len(ops); i += 3 {
				if rng.IntN(4) != 0 {
					ops[i] &^= 6 // ops 0 and 1
				}
			}
			step := 0
			decodeReplayOps(m, ops, func(op replayOp) {
				compareReplay(t, w, m, op, step)
				step++
			})
			// Sweep the whole window at the end: every bit agrees.
			sweepReplay(t, w, m)
		}
	}
}

func TestReplayWindow_Edges(t *testing.T) {
	const size = MinWindow
	w, err := NewReplayWindow(size)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != size {
		t.Fatalf("Size() = %d", w.Size())
	}
	steps := []struct {
		seq  uint64
		want error
	}{
		{0, nil},
		{0, ErrReplay},
		{size - 1, nil},
		{0, ErrReplay}, // still exactly in the window
		{size, nil},
		{0, ErrTooOld},
		{1, nil}, // never accepted, last in the window
	}
	for i, s := range steps {
		if got := w.Accept(s.seq); got != s.want {
			t.Fatalf("step %d: Accept(%d) = %v, want %v", i, s.seq, got, s.want)
		}
	}
	// A jump of exactly one ring clears every stale block.
	ring := uint64(len(w.ring)) * 64
	w.Accept(size + ring)
	for seq := size + ring - size + 1; seq < size+ring; seq++ {
		if err := w.Check(seq); err != nil {
			t.Fatalf("after a one-ring jump, Check(%d) = %v", seq, err)
		}
	}
	if err := w.Check(size + ring); err != ErrReplay {
		t.Fatalf("Check(highest) = %v, want ErrReplay", err)
	}
}

func TestReplayWindow_NoAllocs(t *testing.T) {
	w, err := NewReplayWindow(DefaultWindow)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	n := testing.AllocsPerRun(1000, func() {
		seq += 100
		_ = w.Accept(seq)
		_ = w.Check(seq - 50)
		_ = w.Accept(seq - 50)
	})
	if n != 0 {
		t.Errorf("ReplayWindow allocates %v times", n)
	}
}
