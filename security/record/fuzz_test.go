package record

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite the sealed-record seeds in testdata/fuzz")

// fuzzRecords are genuine records under the test keys, so the fuzzer
// starts from inputs that open.
func fuzzRecords(tb testing.TB) map[string][]byte {
	s, _ := newPair(tb, MinWindow)
	recs := map[string][]byte{
		"sealed-empty":    seal(tb, s, 0, nil),
		"sealed-1":        seal(tb, s, 1, []byte{0x42}),
		"sealed-ethernet": seal(tb, s, 2, pattern(60)),
	}
	s.next.Store(0x1234_5678)
	recs["sealed-seq-high"] = seal(tb, s, 3, pattern(100))
	s.next.Store(MaxSeq)
	recs["sealed-seq-max"] = seal(tb, s, 0xff, pattern(17))
	return recs
}

// FuzzOpener_Open_NoPanic feeds Open arbitrary bytes, in place or not:
// it never panics, fails only with this package's errors, and whatever
// it opens is byte for byte what Seal makes for that kind, sequence
// number and payload, and does not open twice.
func FuzzOpener_Open_NoPanic(f *testing.F) {
	for _, rec := range fuzzRecords(f) {
		f.Add(rec, true)
		f.Add(rec, false)
		tampered := bytes.Clone(rec)
		tampered[len(tampered)-1] ^= 1
		f.Add(tampered, false)
	}
	f.Add([]byte{}, false)
	f.Add([]byte{TypeByte}, true)
	f.Add(append([]byte{TypeByte}, testID[:]...), true)
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false)

	f.Fuzz(func(t *testing.T, record []byte, inPlace bool) {
		_, o := newPair(t, MinWindow)
		rec := bytes.Clone(record)
		dst := make([]byte, len(rec))
		if inPlace && len(rec) >= HeaderLen {
			dst = rec[HeaderLen:]
		}
		kind, seq, pt, err := o.Open(dst, rec)
		if err != nil {
			switch err {
			case ErrShort, ErrType, ErrConnID, ErrAuth:
			default:
				// A fresh Opener has seen nothing, and dst always fits.
				t.Fatalf("Open: unexpected error %v", err)
			}
			if kind != 0 || seq != 0 || pt != nil {
				t.Fatalf("Open failed (%v) but returned kind %d seq %d plaintext %x", err, kind, seq, pt)
			}
			return
		}

		s, _ := newPair(t, MinWindow)
		s.next.Store(seq)
		again, err := s.Seal(make([]byte, len(pt)+Overhead), kind, pt)
		if err != nil {
			t.Fatalf("Seal(kind %d, seq %d): %v", kind, seq, err)
		}
		if !bytes.Equal(again, record) {
			t.Fatalf("opened a record Seal did not make:\n got %x\nseal %x", record, again)
		}
		if o.Highest() != seq {
			t.Fatalf("Highest() = %d, want %d", o.Highest(), seq)
		}
		if _, _, _, err := o.Open(make([]byte, len(record)), record); err != ErrReplay {
			t.Fatalf("second Open: err = %v, want ErrReplay", err)
		}
	})
}

// FuzzReplayWindow_MatchesModel runs a ReplayWindow and the brute-force
// model side by side over steps decoded from the input.
func FuzzReplayWindow_MatchesModel(f *testing.F) {
	f.Add(uint8(0), []byte{0, 0, 1, 0, 0, 1, 1, 0, 1, 0x80, 0, 0})
	f.Add(uint8(1), []byte{2, 0, 40, 1, 0x08, 0x00, 3, 0, 64, 3, 0, 63, 5, 0, 3})
	f.Add(uint8(30), []byte{6, 0, 0, 1, 0, 5, 0, 0, 1, 7, 0, 1, 4, 1, 1})
	f.Add(uint8(255), []byte{2, 0xff, 0xff, 1, 0xff, 0xff, 0x83, 0, 0, 3, 0, 0x7f})

	f.Fuzz(func(t *testing.T, sizeSel uint8, ops []byte) {
		size := MinWindow + 64*int(sizeSel%64)
		w, err := NewReplayWindow(size)
		if err != nil {
			t.Fatal(err)
		}
		m := newReplayModel(size)
		step := 0
		decodeReplayOps(m, ops, func(op replayOp) {
			compareReplay(t, w, m, op, step)
			step++
		})
		sweepReplay(t, w, m)
	})
}

// TestFuzzSeeds rewrites the sealed-record seeds in testdata/fuzz when run
// with -write-seeds (after changing the test keys or the format).
func TestFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-seeds to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpener_Open_NoPanic")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, rec := range fuzzRecords(t) {
		for _, inPlace := range []bool{false, true} {
			file := filepath.Join(dir, fmt.Sprintf("%s-inplace-%v", name, inPlace))
			if err := writeSeed(file, rec, inPlace); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func writeSeed(file string, rec []byte, inPlace bool) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "go test fuzz v1\n[]byte(%q)\nbool(%v)\n", rec, inPlace)
	return errors.Join(err, f.Close())
}
