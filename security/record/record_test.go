package record

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"go/build"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	testKey = []byte("0123456789abcdef")
	testIV  = []byte("ringvpn-iv12")
	testID  = [ConnIDLen]byte{0xc0, 0xff, 0xee, 1, 2, 3, 4, 5}
)

func newPair(tb testing.TB, window int) (*Sealer, *Opener) {
	tb.Helper()
	s, err := NewSealer(testKey, testIV, testID)
	if err != nil {
		tb.Fatal(err)
	}
	o, err := NewOpener(testKey, testIV, testID, window)
	if err != nil {
		tb.Fatal(err)
	}
	return s, o
}

// seal seals payload into a fresh buffer, failing the test on error.
func seal(tb testing.TB, s *Sealer, kind byte, payload []byte) []byte {
	tb.Helper()
	rec, err := s.Seal(make([]byte, len(payload)+Overhead), kind, payload)
	if err != nil {
		tb.Fatal(err)
	}
	return rec
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func TestRecord_RoundTrip(t *testing.T) {
	s, o := newPair(t, DefaultWindow)
	var want uint64
	for _, n := range []int{0, 1, 15, 16, 17, 1400, 9000} {
		for _, inPlace := range []bool{false, true} {
			payload := pattern(n)
			kind := byte(n)
			var rec, pt []byte
			var err error
			if inPlace {
				buf := make([]byte, n+Overhead)
				copy(buf[HeaderLen:], payload)
				rec, err = s.Seal(buf, kind, buf[HeaderLen:HeaderLen+n])
			} else {
				rec, err = s.Seal(make([]byte, 0, n+Overhead+5), kind, payload)
			}
			if err != nil {
				t.Fatalf("n=%d inPlace=%v: Seal: %v", n, inPlace, err)
			}
			if len(rec) != n+Overhead {
				t.Fatalf("n=%d: len(record) = %d, want %d", n, len(rec), n+Overhead)
			}
			if n >= 16 && bytes.Contains(rec, payload) {
				t.Fatalf("n=%d: record contains the plaintext", n)
			}
			var k byte
			var seq uint64
			if inPlace {
				k, seq, pt, err = o.Open(rec[HeaderLen:], rec)
			} else {
				k, seq, pt, err = o.Open(make([]byte, n), rec)
			}
			if err != nil {
				t.Fatalf("n=%d inPlace=%v: Open: %v", n, inPlace, err)
			}
			if k != kind || seq != want || !bytes.Equal(pt, payload) {
				t.Fatalf("n=%d inPlace=%v: Open = kind %d seq %d (%d bytes), want kind %d seq %d (%d bytes)",
					n, inPlace, k, seq, len(pt), kind, want, n)
			}
			if o.Highest() != want {
				t.Fatalf("Highest() = %d, want %d", o.Highest(), want)
			}
			want++
			if s.Sent() != want {
				t.Fatalf("Sent() = %d, want %d", s.Sent(), want)
			}
		}
	}
}

// TestSealer_Seal_KnownAnswer builds a record from the specification with
// crypto/cipher alone and compares it with Seal's.
func TestSealer_Seal_KnownAnswer(t *testing.T) {
	s, _ := newPair(t, MinWindow)
	const seq = 0x0000_1234_5678_9abc
	s.next.Store(seq)
	payload := []byte("hello, ring")
	got, err := s.Seal(make([]byte, 64), 7, payload)
	if err != nil {
		t.Fatal(err)
	}

	header := []byte{0xE1, 0xc0, 0xff, 0xee, 1, 2, 3, 4, 5, 7, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}
	nonce := bytes.Clone(testIV)
	for i := range 8 {
		nonce[4+i] ^= byte(uint64(seq) >> (56 - 8*i))
	}
	block, _ := aes.NewCipher(testKey)
	aead, _ := cipher.NewGCM(block)
	want := aead.Seal(bytes.Clone(header), nonce, payload, header)
	if !bytes.Equal(got, want) {
		t.Fatalf("Seal =\n%x\nwant\n%x", got, want)
	}
}

func TestOpener_Open_Tamper(t *testing.T) {
	s, _ := newPair(t, MinWindow)
	s.next.Store(1000)
	orig := seal(t, s, 3, pattern(40))
	for i := range orig {
		want := ErrAuth
		switch {
		case i == 0:
			want = ErrType
		case i < offKind:
			want = ErrConnID
		}
		_, o := newPair(t, MinWindow)
		rec := bytes.Clone(orig)
		rec[i] ^= 0x10
		if _, _, _, err := o.Open(make([]byte, len(rec)), rec); err != want {
			t.Fatalf("byte %d flipped: err = %v, want %v", i, err, want)
		}
		// A forgery must not mark its sequence number seen nor move the
		// window: the genuine record still opens, and so does an old one.
		if o.Highest() != 0 {
			t.Fatalf("byte %d flipped: Highest() = %d after a forgery", i, o.Highest())
		}
		if _, seq, _, err := o.Open(make([]byte, len(orig)), orig); err != nil || seq != 1000 {
			t.Fatalf("byte %d flipped: genuine record: seq %d, err %v", i, seq, err)
		}
	}
}

func TestOpener_Open_Reject(t *testing.T) {
	other := [ConnIDLen]byte{9}
	otherKey := []byte("fedcba9876543210")
	tests := []struct {
		name   string
		record func(t *testing.T, s *Sealer) []byte
		dst    int // capacity of dst
		want   error
	}{
		{"empty", func(*testing.T, *Sealer) []byte { return nil }, 64, ErrShort},
		{"header only", func(t *testing.T, s *Sealer) []byte { return seal(t, s, 0, nil)[:HeaderLen] }, 64, ErrShort},
		{"one short", func(t *testing.T, s *Sealer) []byte { return seal(t, s, 0, nil)[:Overhead-1] }, 64, ErrShort},
		{"truncated tag", func(t *testing.T, s *Sealer) []byte { return seal(t, s, 0, pattern(10))[:Overhead+9] }, 64, ErrAuth},
		{"extended", func(t *testing.T, s *Sealer) []byte { return append(seal(t, s, 0, pattern(10)), 0) }, 64, ErrAuth},
		{"DTLS record", func(t *testing.T, s *Sealer) []byte {
			rec := seal(t, s, 0, nil)
			rec[0] = 23
			return rec
		}, 64, ErrType},
		{"wrong receiver", func(t *testing.T, _ *Sealer) []byte {
			s, err := NewSealer(testKey, testIV, other)
			if err != nil {
				t.Fatal(err)
			}
			return seal(t, s, 0, nil)
		}, 64, ErrConnID},
		{"wrong key", func(t *testing.T, _ *Sealer) []byte {
			s, err := NewSealer(otherKey, testIV, testID)
			if err != nil {
				t.Fatal(err)
			}
			return seal(t, s, 0, pattern(100))
		}, 128, ErrAuth},
		{"wrong IV", func(t *testing.T, _ *Sealer) []byte {
			s, err := NewSealer(testKey, []byte("other-iv-12b"), testID)
			if err != nil {
				t.Fatal(err)
			}
			return seal(t, s, 0, pattern(100))
		}, 128, ErrAuth},
		{"dst too small", func(t *testing.T, s *Sealer) []byte { return seal(t, s, 0, pattern(100)) }, 99, io.ErrShortBuffer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, o := newPair(t, MinWindow)
			rec := tt.record(t, s)
			kind, seq, pt, err := o.Open(make([]byte, 0, tt.dst), rec)
			if err != tt.want {
				t.Fatalf("Open: err = %v, want %v", err, tt.want)
			}
			if kind != 0 || seq != 0 || pt != nil {
				t.Fatalf("Open failed but returned kind %d seq %d plaintext %x", kind, seq, pt)
			}
		})
	}
}

func TestOpener_Open_Replay(t *testing.T) {
	s, o := newPair(t, MinWindow)
	recs := make([][]byte, 300)
	for i := range recs {
		recs[i] = seal(t, s, 0, pattern(i))
	}
	// Reordered inside the window: every record opens once.
	rng := rand.New(rand.NewPCG(1, 2))
	order := rng.Perm(len(recs))
	for _, i := range order {
		if _, seq, _, err := o.Open(make([]byte, i), bytes.Clone(recs[i])); err != nil || seq != uint64(i) {
			t.Fatalf("record %d: seq %d, err %v", i, seq, err)
		}
	}
	if o.Highest() != uint64(len(recs)-1) {
		t.Fatalf("Highest() = %d, want %d", o.Highest(), len(recs)-1)
	}
	// And never twice.
	for _, i := range order {
		if _, _, _, err := o.Open(make([]byte, i), bytes.Clone(recs[i])); err != ErrReplay {
			t.Fatalf("replay of record %d: err = %v, want ErrReplay", i, err)
		}
	}
}

func TestOpener_Open_TooOld(t *testing.T) {
	const w = MinWindow
	s, o := newPair(t, w)
	first := seal(t, s, 0, nil) // seq 0
	s.next.Store(w - 1)
	edge := seal(t, s, 0, nil) // seq w-1
	s.next.Store(w + 100)
	justIn := seal(t, s, 0, nil) // seq w+100
	s.next.Store(2*w + 99)
	newest := seal(t, s, 0, nil) // seq 2w+99: justIn is w-1 behind

	if _, _, _, err := o.Open(make([]byte, 0), newest); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		rec  []byte
		want error
	}{
		{"far behind", first, ErrTooOld},
		{"one past the edge", edge, ErrTooOld},
		{"last in window", justIn, nil},
		{"newest again", newest, ErrReplay},
	} {
		if _, _, _, err := o.Open(make([]byte, 0), c.rec); err != c.want {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if o.Highest() != 2*w+99 {
		t.Errorf("Highest() = %d, want %d", o.Highest(), 2*w+99)
	}
}

func TestSealer_Seal_Exhausted(t *testing.T) {
	s, o := newPair(t, MinWindow)
	s.next.Store(MaxSeq - 1)
	for _, want := range []uint64{MaxSeq - 1, MaxSeq} {
		rec := seal(t, s, 1, pattern(20))
		_, seq, _, err := o.Open(make([]byte, 20), rec)
		if err != nil || seq != want {
			t.Fatalf("Open: seq %#x, err %v; want seq %#x", seq, err, want)
		}
	}
	buf := make([]byte, 100)
	for range 3 {
		if rec, err := s.Seal(buf, 1, pattern(20)); err != ErrExhausted || rec != nil {
			t.Fatalf("Seal after MaxSeq: %x, %v; want ErrExhausted", rec, err)
		}
	}
	if s.Sent() != MaxSeq+1 {
		t.Fatalf("Sent() = %#x, want %#x", s.Sent(), MaxSeq+1)
	}
	if s.next.Load() != MaxSeq+1 {
		t.Fatalf("exhausted Sealer kept counting: next = %#x", s.next.Load())
	}
}

// TestSealer_Seal_ExhaustedConcurrent races several goroutines across
// MaxSeq: exactly the remaining sequence numbers are used, once each.
func TestSealer_Seal_ExhaustedConcurrent(t *testing.T) {
	const workers, perWorker, left = 8, 200, 1000
	for range 20 {
		s, _ := newPair(t, MinWindow)
		s.next.Store(MaxSeq + 1 - left)
		seqs := make([][]uint64, workers)
		run(t, workers, func(w int) {
			buf := make([]byte, Overhead)
			for range perWorker {
				rec, err := s.Seal(buf, 0, nil)
				switch err {
				case nil:
					seqs[w] = append(seqs[w], getSeq(rec[offSeq:HeaderLen]))
				case ErrExhausted:
				default:
					t.Error(err)
				}
			}
		})
		seen := make(map[uint64]bool)
		for _, ss := range seqs {
			for _, seq := range ss {
				if seen[seq] || seq < MaxSeq+1-left {
					t.Fatalf("sequence number %#x used twice or out of range", seq)
				}
				seen[seq] = true
			}
		}
		if len(seen) != left || s.Sent() != MaxSeq+1 {
			t.Fatalf("sealed %d records, Sent() = %#x; want %d, %#x", len(seen), s.Sent(), left, MaxSeq+1)
		}
	}
}

func TestSealer_Seal_ShortBuffer(t *testing.T) {
	s, _ := newPair(t, MinWindow)
	for _, c := range []int{0, Overhead - 1, Overhead + 9} {
		if _, err := s.Seal(make([]byte, c), 0, pattern(10)); err != io.ErrShortBuffer {
			t.Fatalf("cap %d: err = %v, want io.ErrShortBuffer", c, err)
		}
	}
	if s.Sent() != 0 {
		t.Fatalf("failed Seals used %d sequence numbers", s.Sent())
	}
	// Exactly enough capacity, with a non-zero length that Seal ignores.
	if rec, err := s.Seal(make([]byte, 3, Overhead+10), 0, pattern(10)); err != nil || len(rec) != Overhead+10 {
		t.Fatalf("exact capacity: len %d, err %v", len(rec), err)
	}
}

// TestRecord_Concurrent seals from several goroutines into one Sealer and
// opens every record twice from several goroutines through one Opener:
// the sequence numbers are unique and dense, and each opens exactly once.
func TestRecord_Concurrent(t *testing.T) {
	const workers, perWorker = 8, 500
	s, o := newPair(t, MaxWindow)
	recs := make([][][]byte, workers)
	run(t, workers, func(w int) {
		for range perWorker {
			rec, err := s.Seal(make([]byte, 64+Overhead), byte(w), pattern(64))
			if err != nil {
				t.Error(err)
				return
			}
			recs[w] = append(recs[w], rec)
		}
	})
	if t.Failed() {
		return
	}
	if s.Sent() != workers*perWorker {
		t.Fatalf("Sent() = %d, want %d", s.Sent(), workers*perWorker)
	}

	var all [][]byte
	for _, r := range recs {
		all = append(all, r...)
	}
	var mu sync.Mutex
	opened := make(map[uint64]int)
	// Every worker tries every record in the same shuffled order, so
	// workers often open the same record at the same moment.
	order := rand.New(rand.NewPCG(1, 0)).Perm(len(all))
	run(t, workers, func(int) {
		for _, i := range order {
			kind, seq, pt, err := o.Open(make([]byte, 64), all[i])
			switch err {
			case nil:
				if !bytes.Equal(pt, pattern(64)) || int(kind) >= workers {
					t.Errorf("seq %d: kind %d, plaintext %x", seq, kind, pt)
				}
				mu.Lock()
				opened[seq]++
				mu.Unlock()
			case ErrReplay:
			default:
				t.Errorf("Open: %v", err)
			}
		}
	})
	for seq := range uint64(workers * perWorker) {
		if opened[seq] != 1 {
			t.Errorf("seq %d opened %d times, want once", seq, opened[seq])
		}
	}
	if len(opened) != workers*perWorker {
		t.Errorf("opened %d distinct sequence numbers, want %d", len(opened), workers*perWorker)
	}
	if o.Highest() != workers*perWorker-1 {
		t.Errorf("Highest() = %d, want %d", o.Highest(), workers*perWorker-1)
	}
}

// run calls f(0..n-1) in n goroutines and waits for them, failing the test
// if they take more than ten seconds.
func run(t *testing.T, n int, f func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("workers did not finish in 10s")
	}
}

func TestSealer_Seal_NoAllocs(t *testing.T) {
	s, _ := newPair(t, DefaultWindow)
	buf := make([]byte, 1400+Overhead)
	other := make([]byte, 1400+Overhead)
	payload := pattern(1400)
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"in place", func() { _, _ = s.Seal(buf, 0, buf[HeaderLen:HeaderLen+1400]) }},
		{"separate", func() { _, _ = s.Seal(other, 0, payload) }},
		{"short buffer", func() { _, _ = s.Seal(buf[:0:10], 0, payload) }},
	} {
		if n := testing.AllocsPerRun(1000, c.f); n != 0 {
			t.Errorf("%s: Seal allocates %v times", c.name, n)
		}
	}
}

func TestOpener_Open_NoAllocs(t *testing.T) {
	s, o := newPair(t, DefaultWindow)
	buf := make([]byte, 1400+Overhead)
	forged := seal(t, s, 0, pattern(1400))
	forged[HeaderLen] ^= 1
	replayed := seal(t, s, 0, pattern(1400))
	if _, _, _, err := o.Open(buf, bytes.Clone(replayed)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"in place", func() {
			// Seal and open in place, as the packet path does.
			rec, _ := s.Seal(buf, 0, buf[HeaderLen:HeaderLen+1400])
			if _, _, _, err := o.Open(rec[HeaderLen:], rec); err != nil {
				panic(err)
			}
		}},
		{"forged", func() {
			if _, _, _, err := o.Open(buf, forged); err != ErrAuth {
				panic(err)
			}
		}},
		{"replayed", func() {
			if _, _, _, err := o.Open(buf, replayed); err != ErrReplay {
				panic(err)
			}
		}},
	} {
		if n := testing.AllocsPerRun(1000, c.f); n != 0 {
			t.Errorf("%s: Open allocates %v times", c.name, n)
		}
	}
}

func TestKeysFromExporter(t *testing.T) {
	material := pattern(ExporterLen)
	cSendKey, cSendIV, cRecvKey, cRecvIV, err := KeysFromExporter(material, true)
	if err != nil {
		t.Fatal(err)
	}
	sSendKey, sSendIV, sRecvKey, sRecvIV, err := KeysFromExporter(material, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cSendKey, material[:16]) || !bytes.Equal(cSendIV, material[16:28]) ||
		!bytes.Equal(cRecvKey, material[28:44]) || !bytes.Equal(cRecvIV, material[44:56]) {
		t.Fatal("client halves are not (key, IV) from the first half, then the second")
	}
	if !bytes.Equal(cSendKey, sRecvKey) || !bytes.Equal(cSendIV, sRecvIV) ||
		!bytes.Equal(sSendKey, cRecvKey) || !bytes.Equal(sSendIV, cRecvIV) {
		t.Fatal("one side's send keys are not the other's receive keys")
	}
	if cap(cSendKey) != KeyLen || cap(cSendIV) != IVLen {
		t.Fatal("results can be appended into the rest of material")
	}

	// Records cross between the two sides and not back.
	idC, idS := [ConnIDLen]byte{'c'}, [ConnIDLen]byte{'s'}
	clientSealer, _ := NewSealer(cSendKey, cSendIV, idS)
	serverOpener, _ := NewOpener(sRecvKey, sRecvIV, idS, MinWindow)
	serverSealer, _ := NewSealer(sSendKey, sSendIV, idC)
	clientOpener, _ := NewOpener(cRecvKey, cRecvIV, idC, MinWindow)
	if _, _, _, err := serverOpener.Open(make([]byte, 4), seal(t, clientSealer, 0, pattern(4))); err != nil {
		t.Fatalf("client to server: %v", err)
	}
	if _, _, _, err := clientOpener.Open(make([]byte, 4), seal(t, serverSealer, 0, pattern(4))); err != nil {
		t.Fatalf("server to client: %v", err)
	}
	reflected, _ := NewOpener(cSendKey, cSendIV, idS, MinWindow) // the client's own keys
	if _, _, _, err := reflected.Open(make([]byte, 4), seal(t, serverSealer, 0, pattern(4))); err == nil {
		// Different connection IDs already stop this; check the keys too.
		t.Fatal("server record opened under the client's send keys")
	}
	rec := seal(t, serverSealer, 0, pattern(4))
	copy(rec[offConnID:offKind], idS[:])
	if _, _, _, err := reflected.Open(make([]byte, 4), rec); err != ErrAuth {
		t.Fatalf("server record under the client's send keys: err = %v, want ErrAuth", err)
	}

	for _, n := range []int{0, ExporterLen - 1, ExporterLen + 1} {
		if _, _, _, _, err := KeysFromExporter(make([]byte, n), true); !errors.Is(err, ErrKey) {
			t.Errorf("%d bytes: err = %v, want ErrKey", n, err)
		}
	}
}

func TestNew_BadParameters(t *testing.T) {
	tests := []struct {
		name    string
		key, iv []byte
		window  int
		want    error
	}{
		{"AES-256 key", make([]byte, 32), testIV, MinWindow, ErrKey},
		{"short key", make([]byte, 15), testIV, MinWindow, ErrKey},
		{"no key", nil, testIV, MinWindow, ErrKey},
		{"short IV", testKey, make([]byte, 11), MinWindow, ErrKey},
		{"long IV", testKey, make([]byte, 16), MinWindow, ErrKey},
		{"zero window", testKey, testIV, 0, ErrWindowSize},
		{"negative window", testKey, testIV, -2048, ErrWindowSize},
		{"small window", testKey, testIV, MinWindow - 64, ErrWindowSize},
		{"odd window", testKey, testIV, MinWindow + 32, ErrWindowSize},
		{"huge window", testKey, testIV, MaxWindow + 64, ErrWindowSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewOpener(tt.key, tt.iv, testID, tt.window); !errors.Is(err, tt.want) {
				t.Errorf("NewOpener: err = %v, want %v", err, tt.want)
			}
			if tt.want == ErrKey {
				if _, err := NewSealer(tt.key, tt.iv, testID); !errors.Is(err, tt.want) {
					t.Errorf("NewSealer: err = %v, want %v", err, tt.want)
				}
			}
		})
	}
}

// TestPackage_Imports keeps the package a leaf: it may import nothing of
// ringvpn (see STYLE.md §1).
func TestPackage_Imports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, "github.com/ringvpn/") {
			t.Errorf("imports %s", imp)
		}
	}
}
