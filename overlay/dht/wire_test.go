package dht

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

var cmpOpts = cmp.AllowUnexported(message{}, item{}, push{}, entry{})

func addr(b byte) overlay.Address {
	var a overlay.Address
	for i := range a {
		a[i] = b + byte(i)
	}
	return a
}

func sampleItem(k kind, data string) *item {
	return &item{Kind: k, Version: version{Time: 1700000000123456789, Tie: 42}, Expires: 1700000100000000000, Data: []byte(data)}
}

func TestConfig_Validate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults are invalid: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"replicas zero", func(c *Config) { c.Replicas = 0 }, "dht.replicas: 0 not in [1,16]"},
		{"replicas many", func(c *Config) { c.Replicas = 17 }, "dht.replicas: 17 not in [1,16]"},
		{"value size", func(c *Config) { c.MaxValueSize = 5000 }, "dht.max_value_size: 5000 not in [1,4096]"},
		{"max ttl", func(c *Config) { c.MaxTTL = time.Millisecond }, "dht.max_ttl: 1ms not in [1s,720h]"},
		{"max items", func(c *Config) { c.MaxItems = 0 }, "dht.max_items: 0 not in [1,10000000]"},
		{"republish", func(c *Config) { c.RepublishInterval = time.Millisecond }, "dht.republish_interval: 1ms not in [10ms,1h]"},
		{"timeout", func(c *Config) { c.RequestTimeout = 0 }, "dht.request_timeout: 0s not in [10ms,5m]"},
		{"retries", func(c *Config) { c.Retries = -1 }, "dht.retries: -1 not in [0,10]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mod(&c)
			err := c.Validate()
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	c := Default()
	c.Replicas, c.Retries = 0, 99
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "dht.replicas") || !strings.Contains(err.Error(), "dht.retries") {
		t.Fatalf("Validate() = %v, want both keys named", err)
	}
}

func TestMessage_RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    message
	}{
		{"get", message{Op: opGet, ID: 7, Key: addr(1)}},
		{"get via", message{Op: opGet, ID: 1 << 60, Key: addr(1), Via: addr(9)}},
		{"put plain", message{Op: opPut, ID: 2, Key: addr(3), Item: sampleItem(kindPlain, "hello")}},
		{"create empty value", message{Op: opCreate, ID: 3, Key: addr(3), Item: sampleItem(kindPlain, "")}},
		{"reply found", message{Op: opGet, Status: statusOK, ID: 4, Key: addr(5), Item: sampleItem(kindRecord, "rec")}},
		{"reply refused", message{Op: opPut, Status: statusBadRecord, ID: 5, Key: addr(5), Text: "record \"node/x\" is bad"}},
		{"everything", message{Op: opCreate, Status: statusExists, ID: 6, Key: addr(6), Via: addr(7), Item: sampleItem(kindPlain, "v"), Text: "why"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.m.append(nil)
			got, err := parseMessage(b)
			if err != nil {
				t.Fatalf("parseMessage: %v", err)
			}
			if d := cmp.Diff(tt.m, got, cmpOpts); d != "" {
				t.Fatalf("round trip (-want +got):\n%s", d)
			}
			for n := range len(b) {
				if _, err := parseMessage(b[:n]); !errors.Is(err, ErrMalformed) {
					t.Fatalf("parseMessage(first %d of %d bytes) = %v, want ErrMalformed", n, len(b), err)
				}
			}
			if _, err := parseMessage(append(slices.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("trailing byte accepted: %v", err)
			}
		})
	}
}

func TestMessage_TextTruncated(t *testing.T) {
	m := message{Op: opPut, Status: statusFull, Key: addr(1), Text: strings.Repeat("x", 2*maxTextLen)}
	got, err := parseMessage(m.append(nil))
	if err != nil || len(got.Text) != maxTextLen {
		t.Fatalf("parseMessage = %d bytes of text, %v; want %d", len(got.Text), err, maxTextLen)
	}
	m.Text = "x" + strings.Repeat("é", maxTextLen) // a rune across the limit
	got, err = parseMessage(m.append(nil))
	if err != nil || len(got.Text) != maxTextLen-1 || !utf8.ValidString(got.Text) {
		t.Fatalf("parseMessage = %d bytes of text (valid %v), %v; want %d", len(got.Text), utf8.ValidString(got.Text), err, maxTextLen-1)
	}
}

func TestParseMessage_Rejects(t *testing.T) {
	good := (&message{Op: opGet, ID: 1, Key: addr(1)}).append(nil)
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", mod(func(b []byte) []byte { b[0] = 2; return b })},
		{"op zero", mod(func(b []byte) []byte { b[1] = 0; return b })},
		{"op unknown", mod(func(b []byte) []byte { b[1] = 4; return b })},
		{"status unknown", mod(func(b []byte) []byte { b[2] = byte(maxStatus) + 1; return b })},
		{"flags unknown", mod(func(b []byte) []byte { b[3] = 8; return b })},
		{"zero via", mod(func(b []byte) []byte { b[3] = msgVia; return append(b, make([]byte, 20)...) })},
		{"empty text", mod(func(b []byte) []byte { b[3] = msgText; return append(b, 0, 0) })},
		{"item kind", mod(func(b []byte) []byte {
			b[3] = msgItem
			return (&item{Kind: 2}).append(b)
		})},
		{"item too long", mod(func(b []byte) []byte {
			b[3] = msgItem
			return (&item{Data: make([]byte, maxDataLen+1)}).append(b)
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseMessage(tt.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseMessage = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestPush_RoundTrip(t *testing.T) {
	p := push{Entries: []entry{
		{Key: addr(1), Item: sampleItem(kindPlain, "one")},
		{Key: addr(2), Item: sampleItem(kindRecord, "two")},
		{Key: addr(3), Item: sampleItem(kindPlain, "")},
	}}
	b := p.append(nil)
	got, err := parsePush(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(p, got, cmpOpts); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
	for n := range len(b) {
		if _, err := parsePush(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("parsePush(first %d of %d bytes) = %v", n, len(b), err)
		}
	}
	if _, err := parsePush([]byte{WireVersion, 0, 0}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty push accepted: %v", err)
	}
}

// TestBatcher_SplitsPushes checks that a republish batch never exceeds
// one packet and that its pushes decode back to every entry.
func TestBatcher_SplitsPushes(t *testing.T) {
	var sent [][]byte
	b := batcher{}
	b.send = func(pkt []byte, n int) { sent = append(sent, slices.Clone(pkt)) }
	var want []entry
	for i := range 40 {
		e := entry{Key: addr(byte(i)), Item: sampleItem(kindPlain, strings.Repeat("v", 700))}
		want = append(want, e)
		b.add(e)
	}
	b.flush()
	if len(sent) < 4 {
		t.Fatalf("%d pushes for 40 items of 700 bytes, want several", len(sent))
	}
	var got []entry
	for _, pkt := range sent {
		if len(pkt) > maxPushLen {
			t.Fatalf("push of %d bytes, budget %d", len(pkt), maxPushLen)
		}
		p, err := parsePush(pkt)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Entries...)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Fatalf("entries (-want +got):\n%s", d)
	}
}

func TestVersion_Compare(t *testing.T) {
	a, b, c := version{1, 5}, version{1, 6}, version{2, 0}
	if a.Compare(b) != -1 || b.Compare(a) != 1 || b.Compare(c) != -1 || c.Compare(c) != 0 {
		t.Fatal("version order is wrong")
	}
}

func TestStore_Apply(t *testing.T) {
	now := int64(1000)
	plain := func(ts, exp int64) *item {
		return &item{Kind: kindPlain, Version: version{Time: uint64(ts)}, Expires: exp}
	}
	rec := func(ts int64, signer byte) *item {
		return &item{Kind: kindRecord, Version: version{Time: uint64(ts)}, Expires: 5000, signer: addr(signer)}
	}
	k := addr(1)
	tests := []struct {
		name   string
		have   *item
		put    *item
		create bool
		want   outcome
		kept   bool // the stored item is still have
	}{
		{"empty", nil, plain(10, 2000), false, stored, false},
		{"newer wins", plain(10, 2000), plain(11, 2000), false, stored, false},
		{"older loses", plain(10, 2000), plain(9, 2000), false, unchanged, true},
		{"same write", plain(10, 2000), plain(10, 3000), false, unchanged, true},
		{"create over live", plain(10, 2000), plain(11, 2000), true, exists, true},
		{"create retry", plain(10, 2000), plain(10, 2000), true, unchanged, true},
		{"create over expired", plain(10, 999), plain(11, 2000), true, stored, false},
		{"create renews own record", rec(10, 7), rec(11, 7), true, stored, false},
		{"create over other signer", rec(10, 7), rec(11, 8), true, exists, true},
		{"create over plain with record", plain(10, 2000), rec(11, 7), true, exists, true},
		{"put over other signer", rec(10, 7), rec(11, 8), false, stored, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(10)
			if tt.have != nil {
				s.m[k] = &slot{it: tt.have}
			}
			got, _ := s.apply(k, tt.put, tt.create, now)
			if got != tt.want {
				t.Fatalf("apply = %v, want %v", got, tt.want)
			}
			if kept := s.m[k].it == tt.have; kept != tt.kept {
				t.Fatalf("stored item kept = %v, want %v", kept, tt.kept)
			}
		})
	}
}

func TestStore_Bounds(t *testing.T) {
	s := newStore(2)
	now := int64(time.Hour)
	s.apply(addr(1), &item{Expires: now + 10}, false, now)
	s.apply(addr(2), &item{Expires: now + 1000}, false, now)
	if out, _ := s.apply(addr(3), &item{Expires: now + 1000}, false, now); out != full {
		t.Fatalf("third item in a store of 2: %v, want full", out)
	}
	if s.get(addr(1), now+10) != nil {
		t.Fatal("get returned an expired item")
	}
	// Once the first expires, a sweep makes room.
	later := now + int64(2*time.Second)
	s.m[addr(2)].it = &item{Expires: later + 1000}
	if out, _ := s.apply(addr(3), &item{Expires: later + 1000}, false, later); out != stored {
		t.Fatalf("after expiry: %v, want stored", out)
	}
	if s.len() != 2 {
		t.Fatalf("%d items, want 2", s.len())
	}
}

func TestStore_SettleHandsOff(t *testing.T) {
	s := newStore(10)
	it := &item{Expires: 100}
	s.apply(addr(1), it, false, 0)
	p := []placement{{entry: entry{Key: addr(1), Item: it}}}
	for round := 1; round <= handoffRounds; round++ {
		if n := s.settle(p, handoffRounds); n != 0 {
			t.Fatalf("dropped after %d rounds, grace is %d", round, handoffRounds)
		}
	}
	p[0].in = true
	s.settle(p, handoffRounds) // back in the set: the count restarts
	p[0].in = false
	for range handoffRounds {
		s.settle(p, handoffRounds)
	}
	if s.len() != 1 {
		t.Fatal("dropped although the count restarted")
	}
	if n := s.settle(p, handoffRounds); n != 1 || s.len() != 0 {
		t.Fatalf("settle dropped %d, %d left; want the item handed off", n, s.len())
	}
}

// TestReplicaSet_MatchesBruteForce compares replicaSet with sorting every
// candidate by distance, over random addresses.
func TestReplicaSet_MatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func() overlay.Address {
		var a overlay.Address
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		if rng.IntN(4) == 0 {
			a[0] = 0 // crowd some near each other, and near the wrap
		}
		return a
	}
	for range 2000 {
		self, key := randAddr(), randAddr()
		peers := make([]overlay.Address, rng.IntN(12))
		for i := range peers {
			peers[i] = randAddr()
		}
		r := 1 + rng.IntN(5)
		got := replicaSet(nil, self, peers, key, r)
		all := append([]overlay.Address{self}, peers...)
		slices.SortFunc(all, func(a, b overlay.Address) int {
			if c := overlay.Distance(a, key).Compare(overlay.Distance(b, key)); c != 0 {
				return c
			}
			return a.Compare(b)
		})
		want := all[:min(r, len(all))]
		if !slices.Equal(got, want) {
			t.Fatalf("replicaSet(r=%d) = %v, want %v", r, got, want)
		}
	}
}

// testIdentity makes a CA-signed identity for seeds and unit tests.
func testIdentity(tb testing.TB, kind string) (*security.Identity, *security.TrustBundle) {
	tb.Helper()
	now := time.Now()
	ca, err := security.NewCA("test-ca", now.Add(-time.Hour), now.Add(24*time.Hour), "")
	if err != nil {
		tb.Fatal(err)
	}
	bundle, err := security.NewTrustBundle(ca.Cert)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := security.GenerateKey(kind)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := ca.Issue(key.Public(), security.MemberSpec{Name: "seed"}, now.Add(-time.Hour), now.Add(12*time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	id, err := security.NewIdentity(key, cert, bundle, now)
	if err != nil {
		tb.Fatal(err)
	}
	return id, bundle
}

func FuzzMessage_Unmarshal_NoPanic(f *testing.F) {
	f.Add((&message{Op: opGet, ID: 1, Key: addr(1)}).append(nil))
	f.Add((&message{Op: opPut, ID: 2, Key: addr(2), Via: addr(3), Item: sampleItem(kindPlain, "value")}).append(nil))
	f.Add((&message{Op: opCreate, Status: statusExists, ID: 3, Key: addr(4), Text: "exists"}).append(nil))
	f.Add((&message{Op: opGet, Status: statusOK, ID: 4, Key: addr(5), Item: sampleItem(kindRecord, "\x01")}).append(nil))
	f.Add([]byte{})
	f.Add([]byte{WireVersion, 1, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		// Round trip: the encoding is canonical.
		if again := m.append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, again)
		}
	})
}

func FuzzPush_Unmarshal_NoPanic(f *testing.F) {
	f.Add((&push{Entries: []entry{{Key: addr(1), Item: sampleItem(kindPlain, "a")}}}).append(nil))
	f.Add((&push{Entries: []entry{{Key: addr(1), Item: sampleItem(kindPlain, "")}, {Key: addr(2), Item: sampleItem(kindRecord, "r")}}}).append(nil))
	f.Add([]byte{WireVersion, 0xff, 0xff})
	f.Add([]byte{WireVersion, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePush(b)
		if err != nil {
			return
		}
		if again := p.append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, again)
		}
	})
}

func FuzzRecord_Unmarshal_NoPanic(f *testing.F) {
	id, bundle := testIdentity(f, "")
	exp := time.Now().Add(time.Hour)
	for _, rec := range []struct{ ns, name, value string }{
		{NamespaceNode, ClaimName(id.Member.Address, ""), "10.0.0.1"},
		{"names", "alice", ""},
		{"x", strings.Repeat("n", MaxRecordNameLen), strings.Repeat("v", 100)},
	} {
		r, err := Sign(id, rec.ns, rec.name, []byte(rec.value), exp)
		if err != nil {
			f.Fatal(err)
		}
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{WireVersion})
	f.Add([]byte{WireVersion, 1, 'a', 1, 'b', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	v := VerifyWith(bundle)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseRecord error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed record does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, again)
		}
		// Verification of anything decoded must fail cleanly, not panic.
		v.Verify(r.Key(), r, time.Now())
	})
}
