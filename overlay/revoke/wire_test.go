package revoke

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

// list returns n pseudo-random bytes standing for a list.
func list(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestPieces_Reassemble: a list cut in pieces parses back into its
// chunks, whatever its length.
func TestPieces_Reassemble(t *testing.T) {
	for _, n := range []int{1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 5*ChunkSize + 17, MaxListSize} {
		l := list(n, uint64(n))
		ps := pieces(l)
		if len(ps) != chunks(n) {
			t.Fatalf("%d bytes: %d pieces, want %d", n, len(ps), chunks(n))
		}
		got := make([]byte, n)
		for i, b := range ps {
			if len(b) > pieceHeader+ChunkSize {
				t.Fatalf("%d bytes: piece %d is %d bytes", n, i, len(b))
			}
			p, err := parsePiece(b)
			if err != nil {
				t.Fatalf("%d bytes: piece %d: %v", n, i, err)
			}
			if p.Index != i || p.Total != n || p.Hash != sha256.Sum256(l) {
				t.Fatalf("%d bytes: piece %d parsed as %d of %d", n, i, p.Index, p.Total)
			}
			copy(got[p.Index*ChunkSize:], p.Chunk)
		}
		if !bytes.Equal(got, l) {
			t.Fatalf("%d bytes: reassembled list differs", n)
		}
	}
}

// TestParsePiece_Rejects: pieces that don't add up are malformed.
func TestParsePiece_Rejects(t *testing.T) {
	good := pieces(list(2*ChunkSize+5, 3))[1]
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":          nil,
		"short header":   good[:pieceHeader-1],
		"version":        mod(func(b []byte) []byte { b[0] = 2; return b }),
		"total zero":     mod(func(b []byte) []byte { copy(b[33:37], []byte{0, 0, 0, 0}); return b }),
		"total too long": mod(func(b []byte) []byte { copy(b[33:37], []byte{0, 1, 0, 0}); return b }),
		"index past end": mod(func(b []byte) []byte { b[38] = 3; return b }),
		"chunk short":    good[:len(good)-1],
		"chunk long":     append(bytes.Clone(good), 0),
		"last too long":  mod(func(b []byte) []byte { b[38] = 2; return b }),
	}
	for name, b := range cases {
		if _, err := parsePiece(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestHead_RoundTrip: short lists ride in the head, long ones as chunk
// hashes, and heads that don't add up are malformed.
func TestHead_RoundTrip(t *testing.T) {
	for _, n := range []int{1, InlineMax, InlineMax + 1, MaxListSize} {
		l := list(n, uint64(n))
		h := headOf(l)
		b := h.append(nil)
		if len(b) > MaxRecordValue {
			t.Fatalf("%d bytes: head of %d bytes, above %d", n, len(b), MaxRecordValue)
		}
		got, err := parseHead(b)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got.Hash != h.Hash || got.Total != n || !bytes.Equal(got.Inline, h.Inline) || len(got.Chunks) != len(h.Chunks) {
			t.Fatalf("%d bytes: head %+v parsed as %+v", n, h, got)
		}
		if (n <= InlineMax) != (got.Inline != nil) {
			t.Fatalf("%d bytes: inline %v", n, got.Inline != nil)
		}
		for i, c := range got.Chunks {
			if c != chunkHash(chunkOf(l, i)) {
				t.Fatalf("%d bytes: chunk %d hash differs", n, i)
			}
		}
	}
	inline := headOf(list(100, 1)).append(nil)
	chunked := headOf(list(3000, 1)).append(nil)
	bad := map[string][]byte{
		"empty":             nil,
		"inline hash wrong": append(bytes.Clone(inline[:len(inline)-1]), inline[len(inline)-1]^1),
		"inline short":      inline[:len(inline)-1],
		"chunk hashes cut":  chunked[:len(chunked)-1],
		"count wrong":       func() []byte { b := bytes.Clone(chunked); b[38]++; return b }(),
		"too long":          append(bytes.Clone(chunked), make([]byte, 1000)...),
	}
	for name, b := range bad {
		if _, err := parseHead(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestDigest_RoundTrip: digests parse back; wrong counts and flags are
// malformed.
func TestDigest_RoundTrip(t *testing.T) {
	d := digest{Reply: true, Entries: []entry{{CA: caID{1}, Number: 7, Hash: hash{2}}, {CA: caID{3}, Number: 1 << 63, Hash: hash{4}}}}
	b := d.append(nil)
	got, err := parseDigest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Reply || len(got.Entries) != 2 || got.Entries[1] != d.Entries[1] || got.find(caID{3}) == nil || got.find(caID{9}) != nil {
		t.Fatalf("digest %+v parsed as %+v", d, got)
	}
	for name, b := range map[string][]byte{
		"short": b[:2],
		"cut":   b[:len(b)-1],
		"flags": append([]byte{WireVersion, 2, 0}, nil...),
		"too many": append([]byte{WireVersion, 0, MaxDigestEntries + 1},
			make([]byte, (MaxDigestEntries+1)*digestEntry)...),
	} {
		if _, err := parseDigest(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestCheckRecord: the DHT keeps only heads under CA ids and chunks
// under their own hash.
func TestCheckRecord(t *testing.T) {
	id := caID{0xab}
	l := list(3000, 9)
	h := headOf(l)
	c0 := chunkOf(l, 0)
	cases := []struct {
		name  string
		rname string
		value []byte
		ok    bool
	}{
		{"head", headName(id), h.append(nil), true},
		{"chunk", chunkName(id, h.Chunks[0]), c0, true},
		{"chunk under another hash", chunkName(id, h.Chunks[1]), c0, false},
		{"junk head", headName(id), []byte("junk"), false},
		{"upper-case hex", strings.ToUpper(headName(id)), h.append(nil), false},
		{"short name", headName(id)[:30], h.append(nil), false},
		{"extra part", chunkName(id, h.Chunks[0]) + "/x", c0, false},
		{"empty chunk", chunkName(id, chunkHash(nil)), nil, false},
	}
	for _, c := range cases {
		if err := checkRecord(c.rname, c.value); (err == nil) != c.ok {
			t.Errorf("%s: checkRecord = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// FuzzPiece_Parse_NoPanic: any bytes from the network either parse into
// a piece that encodes back to them, or are refused.
func FuzzPiece_Parse_NoPanic(f *testing.F) {
	for _, p := range pieces(list(2*ChunkSize+5, 3)) {
		f.Add(p)
	}
	f.Add(pieces([]byte{0x30})[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePiece(b)
		if err != nil {
			return
		}
		if !bytes.Equal(p.append(nil), b) {
			t.Fatalf("piece %+v does not encode back", p)
		}
	})
}

// FuzzHead_Parse_NoPanic: any DHT value either parses into a head that
// encodes back to it, or is refused.
func FuzzHead_Parse_NoPanic(f *testing.F) {
	f.Add(headOf(list(100, 1)).append(nil))
	f.Add(headOf(list(3000, 1)).append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHead(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.append(nil), b) {
			t.Fatalf("head does not encode back")
		}
		if h.Inline != nil && sha256.Sum256(h.Inline) != h.Hash {
			t.Fatalf("inline list does not match its hash")
		}
	})
}

// FuzzDigest_Parse_NoPanic: any bytes either parse into a digest that
// encodes back to them, or are refused.
func FuzzDigest_Parse_NoPanic(f *testing.F) {
	d := digest{Entries: []entry{{CA: caID{1}, Number: 7, Hash: hash{2}}}}
	f.Add(d.append(nil))
	f.Add((&digest{Reply: true}).append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDigest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(d.append(nil), b) {
			t.Fatalf("digest %+v does not encode back", d)
		}
	})
}

// FuzzCheckRecord_NoPanic: the DHT rules take any name and value without
// panicking, and a chunk they take matches its name.
func FuzzCheckRecord_NoPanic(f *testing.F) {
	l := list(3000, 9)
	h := headOf(l)
	f.Add(headName(caID{1}), h.append(nil))
	f.Add(chunkName(caID{1}, h.Chunks[0]), chunkOf(l, 0))
	f.Fuzz(func(t *testing.T, name string, value []byte) {
		if checkRecord(name, value) != nil {
			return
		}
		if _, ch, isChunk, _ := parseName(name); isChunk && chunkHash(value) != ch {
			t.Fatalf("chunk %q taken with another hash", name)
		}
	})
}

// handleSpreader is a Spreader with no node, for feeding messages to its
// handler: it holds no list, so it never sends.
func handleSpreader() *Spreader {
	return &Spreader{
		revs: security.NewRevocations(nil), log: zap.NewNop(), closed: make(chan struct{}),
		seen: map[hash]bool{}, fromNet: map[hash]arrival{}, tokens: verifyRate, tokensAt: time.Now(),
		known: map[hash]bool{}, peers: map[overlay.Address]bool{}, pushed: map[pushKey]time.Time{}, replied: map[overlay.Address]time.Time{},
	}
}

// FuzzSpreader_Handle_NoPanic feeds a Spreader a sequence of messages
// (each: a type byte, a 2-byte length, the payload): whatever they are,
// it must not panic, and it keeps at most maxAssemblies lists in pieces.
func FuzzSpreader_Handle_NoPanic(f *testing.F) {
	frame := func(typ byte, msgs ...[]byte) []byte {
		var b []byte
		for _, m := range msgs {
			b = append(b, typ)
			b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
			b = append(b, m...)
		}
		return b
	}
	ps := pieces(list(3*ChunkSize+1, 5))
	f.Add(frame(0, ps...))
	f.Add(frame(0, ps[3], ps[0], ps[0], ps[2], ps[1]))
	f.Add(frame(1, (&digest{Entries: []entry{{CA: caID{1}, Number: 2, Hash: hash{3}}}}).append(nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := handleSpreader()
		for len(data) >= 3 {
			typ := TypePiece
			if data[0]&1 == 1 {
				typ = TypeDigest
			}
			n := min(int(binary.BigEndian.Uint16(data[1:3])), len(data)-3)
			s.handle(inbound{typ: typ, payload: data[3 : 3+n]})
			data = data[3+n:]
			if len(s.asm) > maxAssemblies {
				t.Fatalf("%d assemblies", len(s.asm))
			}
		}
		if len(s.revs.Lists()) != 0 {
			t.Fatal("took a list from junk")
		}
	})
}
