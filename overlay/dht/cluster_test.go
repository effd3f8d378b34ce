package dht_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
	"github.com/ringvpn/ringvpn/security"
)

// testConfig re-replicates and retries quickly, for a test's time.
func testConfig() dht.Config {
	c := dht.Default()
	c.RepublishInterval = 150 * time.Millisecond
	c.RequestTimeout = time.Second
	c.Retries = 4
	return c
}

// churnOverlay notices crashed peers within a second.
func churnOverlay() overlay.Config {
	c := overlaytest.FastConfig()
	c.PingInterval = 250 * time.Millisecond
	c.DeadAfter = time.Second
	return c
}

// ring is a cluster with a DHT on every live member.
type ring struct {
	t    *testing.T
	c    *sim.Cluster
	rng  *rand.Rand
	mu   sync.Mutex
	dhts map[int]*dht.DHT // by member index
}

// newRing starts a cluster, then a DHT on each of its nodes: sim.Cluster
// starts its nodes itself, so the DHTs join running nodes.
func newRing(t *testing.T, opts sim.Options, cfg dht.Config, verify dht.Verifier) *ring {
	t.Helper()
	if opts.Latency == nil {
		opts.Latency = simnet.Constant(2 * time.Millisecond)
	}
	r := &ring{t: t, c: overlaytest.NewCluster(t, opts), rng: rand.New(rand.NewPCG(opts.Seed, 7)), dhts: map[int]*dht.DHT{}}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, d := range r.dhts {
			d.Close()
			delete(r.dhts, i)
		}
	})
	for _, m := range r.c.Members() {
		r.start(m.Index, cfg, verify)
	}
	return r
}

// start (re)starts the DHT of member i.
func (r *ring) start(i int, cfg dht.Config, verify dht.Verifier) *dht.DHT {
	r.t.Helper()
	r.stop(i)
	var node *overlay.Node
	for _, m := range r.c.Members() {
		if m.Index == i {
			node = m.Node
		}
	}
	d, err := dht.New(node, cfg, verify, zaptest.NewLogger(r.t, zaptest.Level(zapcore.WarnLevel)))
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.dhts[i] = d
	r.mu.Unlock()
	return d
}

func (r *ring) stop(i int) {
	r.mu.Lock()
	d := r.dhts[i]
	delete(r.dhts, i)
	r.mu.Unlock()
	if d != nil {
		d.Close()
	}
}

func (r *ring) dht(i int) *dht.DHT {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dhts[i]
}

// random returns a random live member other than those in not.
func (r *ring) random(not ...int) int {
	ms := r.c.Members()
	for {
		m := ms[r.rng.IntN(len(ms))]
		if !slices.Contains(not, m.Index) {
			return m.Index
		}
	}
}

// closest returns the indices of the n live members closest to key,
// closest first: where the value should be.
func (r *ring) closest(key overlay.Address, n int) []int {
	ms := r.c.Members()
	slices.SortFunc(ms, func(a, b *sim.Member) int {
		if c := overlay.Distance(a.Node.Address(), key).Compare(overlay.Distance(b.Node.Address(), key)); c != 0 {
			return c
		}
		return a.Node.Address().Compare(b.Node.Address())
	})
	var out []int
	for _, m := range ms[:min(n, len(ms))] {
		out = append(out, m.Index)
	}
	return out
}

// holders returns the indices of live members that store key, sorted.
func (r *ring) holders(key overlay.Address) []int {
	var out []int
	for _, m := range r.c.Members() {
		if d := r.dht(m.Index); d != nil && d.Holds(key) {
			out = append(out, m.Index)
		}
	}
	slices.Sort(out)
	return out
}

// waitPlaced waits until exactly the n live members closest to key hold
// it (replicated where it belongs, handed off everywhere else).
func (r *ring) waitPlaced(key overlay.Address, n int, within time.Duration) {
	r.t.Helper()
	r.wait(key, n, within, true)
}

// waitReplicated waits until the n live members closest to key hold it,
// and maybe others: while the ring heals after a crash, nodes whose near
// links are not repaired yet see different replica sets, and a value
// may sit on an extra node until their views agree.
func (r *ring) waitReplicated(key overlay.Address, n int, within time.Duration) {
	r.t.Helper()
	r.wait(key, n, within, false)
}

func (r *ring) wait(key overlay.Address, n int, within time.Duration, exact bool) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		want := r.closest(key, n)
		slices.Sort(want)
		got := r.holders(key)
		if slices.Equal(got, want) || !exact && len(want) == n && !slices.ContainsFunc(want, func(i int) bool { return !slices.Contains(got, i) }) {
			return
		}

		if time.Now().After(deadline) {
			r.t.Fatalf("key %s: held by %v, want exactly the %d closest %v", key, got, n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func keyOf(s string) overlay.Address { return dht.KeyOf("test", s) }

// TestDHT_PlainOperations runs puts, gets, creates, expiry and bounds on a
// 24-node ring, each from random nodes.
func TestDHT_PlainOperations(t *testing.T) {
	cfg := testConfig()
	r := newRing(t, sim.Options{N: 24, Seed: 11}, cfg, nil)
	ctx := ctxFor(t, time.Minute)

	t.Run("put and get from random nodes", func(t *testing.T) {
		const keys = 40
		var wg sync.WaitGroup
		errs := make(chan error, keys)
		for k := range keys {
			w, rd := r.random(), r.random()
			wg.Add(1)
			go func() {
				defer wg.Done()
				key, val := keyOf(fmt.Sprint("k", k)), fmt.Appendf(nil, "value %d", k)
				if err := r.dht(w).Put(ctx, key, val, time.Minute); err != nil {
					errs <- fmt.Errorf("put %d from node%d: %w", k, w, err)
					return
				}
				got, err := r.dht(rd).Get(ctx, key)
				if err != nil || !bytes.Equal(got, val) {
					errs <- fmt.Errorf("get %d from node%d = %q, %v; want %q", k, rd, got, err, val)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		var st dht.Stats
		for _, m := range r.c.Members() {
			s := r.dht(m.Index).Stats()
			st.Puts += s.Puts
			st.Hits += s.Hits
		}
		if st.Puts < keys || st.Hits < keys {
			t.Fatalf("owners served %d puts and %d hits, want at least %d each", st.Puts, st.Hits, keys)
		}
	})

	t.Run("r replicas on the r closest nodes", func(t *testing.T) {
		for k := range 40 {
			r.waitPlaced(keyOf(fmt.Sprint("k", k)), cfg.Replicas, 5*time.Second)
		}
		var items int
		for _, m := range r.c.Members() {
			items += r.dht(m.Index).Stats().Items
		}
		if items != 40*cfg.Replicas {
			t.Fatalf("%d items stored in all, want %d", items, 40*cfg.Replicas)
		}
	})

	t.Run("newest write wins", func(t *testing.T) {
		key := keyOf("overwritten")
		for i := range 3 {
			if err := r.dht(r.random()).Put(ctx, key, []byte{byte(i)}, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		r.waitPlaced(key, cfg.Replicas, 5*time.Second)
		for range 5 {
			got, err := r.dht(r.random()).Get(ctx, key)
			if err != nil || !bytes.Equal(got, []byte{2}) {
				t.Fatalf("Get = %v, %v; want the last write [2]", got, err)
			}
		}
	})

	t.Run("get of a missing key", func(t *testing.T) {
		_, err := r.dht(r.random()).Get(ctx, keyOf("never written"))
		if !errors.Is(err, dht.ErrNotFound) {
			t.Fatalf("Get = %v, want ErrNotFound", err)
		}
	})

	t.Run("create if absent", func(t *testing.T) {
		key := keyOf("created")
		a := r.random()
		b := r.random(a)
		if err := r.dht(a).Create(ctx, key, []byte("first"), time.Minute); err != nil {
			t.Fatal(err)
		}
		err := r.dht(b).Create(ctx, key, []byte("second"), time.Minute)
		if !errors.Is(err, dht.ErrExists) {
			t.Fatalf("second Create = %v, want ErrExists", err)
		}
		if err := r.dht(a).Create(ctx, key, []byte("again"), time.Minute); !errors.Is(err, dht.ErrExists) {
			t.Fatalf("plain values are never renewed by Create: %v", err)
		}
		got, err := r.dht(b).Get(ctx, key)
		if err != nil || string(got) != "first" {
			t.Fatalf("Get = %q, %v; want the first value", got, err)
		}
		r.waitPlaced(key, cfg.Replicas, 5*time.Second)
	})

	t.Run("ttl expiry", func(t *testing.T) {
		key := keyOf("short-lived")
		const ttl = time.Second
		expires := time.Now().Add(ttl)
		if err := r.dht(r.random()).Put(ctx, key, []byte("soon gone"), ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := r.dht(r.random()).Get(ctx, key); err != nil && time.Now().Before(expires) {
			t.Fatalf("Get before expiry: %v", err)
		}
		time.Sleep(time.Until(expires) + 50*time.Millisecond)
		if got, err := r.dht(r.random()).Get(ctx, key); !errors.Is(err, dht.ErrNotFound) {
			t.Fatalf("Get after expiry = %q, %v; want ErrNotFound", got, err)
		}
		r.waitPlaced(key, 0, 2*time.Second) // swept everywhere
		if err := r.dht(r.random()).Create(ctx, key, []byte("new"), time.Minute); err != nil {
			t.Fatalf("Create over an expired value: %v", err)
		}
	})

	t.Run("bounds", func(t *testing.T) {
		d := r.dht(r.random())
		big := make([]byte, cfg.MaxValueSize+1)
		if err := d.Put(ctx, keyOf("big"), big, time.Minute); !errors.Is(err, dht.ErrTooLarge) {
			t.Fatalf("Put of %d bytes = %v, want ErrTooLarge", len(big), err)
		}
		if err := d.Put(ctx, keyOf("long"), []byte("x"), cfg.MaxTTL+time.Second); !errors.Is(err, dht.ErrBadRequest) {
			t.Fatalf("Put beyond max_ttl = %v, want ErrBadRequest", err)
		}
		// A writer that skips its own check is refused by the storing node.
		key := keyOf("big at the owner")
		w := r.random(r.closest(key, 1)...)
		err := r.dht(w).PutUnchecked(ctx, key, big, time.Minute)
		if !errors.Is(err, dht.ErrTooLarge) || !errors.Is(err, dht.ErrRefused) || !strings.Contains(err.Error(), "dht.max_value_size") {
			t.Fatalf("oversize Put at the owner = %v, want ErrRefused and ErrTooLarge naming the key", err)
		}
		if st := r.dht(r.closest(key, 1)[0]).Stats(); st.Refused == 0 {
			t.Fatal("the owner did not count the refusal")
		}
		if _, err := d.Get(ctx, key); !errors.Is(err, dht.ErrNotFound) {
			t.Fatalf("Get of a refused value = %v, want ErrNotFound", err)
		}
	})
}

// TestDHT_SurvivesChurn crashes the owner of a key, then its replicas, one
// at a time; between crashes the survivors re-replicate, so the value
// outlives every node that first held it.
func TestDHT_SurvivesChurn(t *testing.T) {
	cfg := testConfig()
	r := newRing(t, sim.Options{N: 16, Seed: 5, Overlay: churnOverlay()}, cfg, nil)
	ctx := ctxFor(t, time.Minute)
	key, val := keyOf("survivor"), []byte("still here")
	if err := r.dht(r.random()).Put(ctx, key, val, time.Minute); err != nil {
		t.Fatal(err)
	}
	r.waitPlaced(key, cfg.Replicas, 5*time.Second)
	first := r.closest(key, cfg.Replicas)
	for round, victim := range first {
		start := time.Now()
		r.stop(victim)
		r.c.Remove(victim, true)
		// Right away: the request may reach the dead node and be retried,
		// or reach a new owner that must ask its neighbours.
		got, err := r.dht(r.random()).Get(ctx, key)
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("round %d: Get after crashing node%d = %q, %v", round, victim, got, err)
		}
		took := time.Since(start)
		// The survivors notice the crash (dead_after) and re-replicate to
		// the next closest node, before the whole ring has healed.
		r.waitReplicated(key, cfg.Replicas, 10*time.Second)
		t.Logf("round %d: crashed node%d; get took %v; re-replicated on %v after %v", round, victim,
			took.Round(time.Millisecond), r.holders(key), time.Since(start).Round(time.Millisecond))
	}
	got, err := r.dht(r.random()).Get(ctx, key)
	if err != nil || !bytes.Equal(got, val) {
		t.Fatalf("Get after every first holder crashed = %q, %v", got, err)
	}
	var recovered, replicated uint64
	for _, m := range r.c.Members() {
		st := r.dht(m.Index).Stats()
		recovered += st.Recovered
		replicated += st.Replicated
	}
	t.Logf("replicated %d, recovered by new owners %d", replicated, recovered)
}

// TestDHT_NewOwnerAsksNeighbours adds a node to a ring where nothing is
// re-replicated: for the keys it now owns it has no copy, and must fetch
// from its neighbours (the old owners and replicas) to answer gets and to
// refuse creates.
func TestDHT_NewOwnerAsksNeighbours(t *testing.T) {
	cfg := testConfig()
	cfg.RepublishInterval = time.Hour
	r := newRing(t, sim.Options{N: 12, Seed: 9}, cfg, nil)
	ctx := ctxFor(t, time.Minute)
	const keys = 120
	var wg sync.WaitGroup
	for k := range keys {
		w := r.random()
		wg.Go(func() {
			if err := r.dht(w).Put(ctx, keyOf(fmt.Sprint("k", k)), fmt.Appendf(nil, "%d", k), time.Minute); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	m, err := r.c.Add()
	if err != nil {
		t.Fatal(err)
	}
	newcomer := r.start(m.Index, cfg, nil)
	if _, err := r.c.WaitRing(ctx, 3); err != nil {
		t.Fatal(err)
	}
	var owned []int
	for k := range keys {
		if r.closest(keyOf(fmt.Sprint("k", k)), 1)[0] == m.Index {
			owned = append(owned, k)
		}
	}
	if len(owned) == 0 {
		t.Fatal("the new node owns none of the keys; pick another seed")
	}
	for _, k := range owned {
		key := keyOf(fmt.Sprint("k", k))
		got, err := r.dht(r.random()).Get(ctx, key)
		if err != nil || string(got) != fmt.Sprint(k) {
			t.Fatalf("Get of key %d, now owned by the new node = %q, %v", k, got, err)
		}
		if !newcomer.Holds(key) {
			t.Fatalf("the new owner did not keep key %d it fetched", k)
		}
	}
	if st := newcomer.Stats(); st.Recovered != uint64(len(owned)) || st.Hits != uint64(len(owned)) {
		t.Fatalf("new owner stats %+v, want %d recovered and hits", st, len(owned))
	}
	// A create of a key the new owner has not seen yet is still refused.
	m2, err := r.c.Add()
	if err != nil {
		t.Fatal(err)
	}
	second := r.start(m2.Index, cfg, nil)
	if _, err := r.c.WaitRing(ctx, 3); err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		key := keyOf(fmt.Sprint("k", k))
		if r.closest(key, 1)[0] != m2.Index {
			continue
		}
		err := r.dht(r.random()).Create(ctx, key, []byte("late"), time.Minute)
		if !errors.Is(err, dht.ErrExists) {
			t.Fatalf("Create of key %d at a new owner = %v, want ErrExists", k, err)
		}
		if !second.Holds(key) {
			t.Fatalf("the new owner did not keep key %d it fetched", k)
		}
	}
	t.Logf("first newcomer owns %d keys, second recovered %d", len(owned), second.Stats().Recovered)
}

// TestDHT_SignedRecords stores claims and named records with real
// certificates on a ring that accepts only records from the group CA.
func TestDHT_SignedRecords(t *testing.T) {
	g := newGroup(t, "group-ca")
	other := newGroup(t, "other-ca")
	alice := g.member(t, "alice", "")
	bob := g.member(t, "bob", security.KeyKindEd25519)
	mallory := other.member(t, "mallory", "")
	cfg := testConfig()
	r := newRing(t, sim.Options{N: 16, Seed: 3}, cfg, dht.VerifyWith(g.bundle))
	ctx := ctxFor(t, time.Minute)
	exp := time.Now().Add(10 * time.Minute)
	aliceName := dht.ClaimName(alice.Member.Address, "vip")

	t.Run("claim about oneself", func(t *testing.T) {
		rec := sign(t, alice, dht.NamespaceNode, aliceName, "10.20.0.5", exp)
		if err := r.dht(r.random()).PutRecord(ctx, rec); err != nil {
			t.Fatal(err)
		}
		got, err := r.dht(r.random()).GetRecord(ctx, dht.NamespaceNode, aliceName)
		if err != nil || string(got.Value) != "10.20.0.5" {
			t.Fatalf("GetRecord = %v, %v", got, err)
		}
		raw, err := r.dht(r.random()).Get(ctx, rec.Key())
		if err != nil {
			t.Fatal(err)
		}
		if p, err := dht.ParseRecord(raw); err != nil || !bytes.Equal(p.Sig, rec.Sig) {
			t.Fatalf("Get returned %x, not the encoded record: %v", raw, err)
		}
		r.waitPlaced(rec.Key(), cfg.Replicas, 5*time.Second)
	})

	t.Run("plain values refused", func(t *testing.T) {
		err := r.dht(r.random()).Put(ctx, keyOf("plain"), []byte("x"), time.Minute)
		if !errors.Is(err, dht.ErrUnsigned) {
			t.Fatalf("Put = %v, want ErrUnsigned", err)
		}
		key := keyOf("plain at the owner")
		err = r.dht(r.random(r.closest(key, 1)...)).PutUnchecked(ctx, key, []byte("x"), time.Minute)
		if !errors.Is(err, dht.ErrUnsigned) || !errors.Is(err, dht.ErrRefused) {
			t.Fatalf("unchecked plain Put = %v, want ErrRefused and ErrUnsigned", err)
		}
	})

	t.Run("create by the same signer renews", func(t *testing.T) {
		if err := r.dht(r.random()).CreateRecord(ctx, sign(t, alice, "names", "alice", "v1", exp)); err != nil {
			t.Fatal(err)
		}
		err := r.dht(r.random()).CreateRecord(ctx, sign(t, bob, "names", "alice", "stolen", exp))
		if !errors.Is(err, dht.ErrExists) {
			t.Fatalf("CreateRecord by another signer = %v, want ErrExists", err)
		}
		if err := r.dht(r.random()).CreateRecord(ctx, sign(t, alice, "names", "alice", "v2", exp.Add(time.Minute))); err != nil {
			t.Fatalf("renewal by the signer: %v", err)
		}
		got, err := r.dht(r.random()).GetRecord(ctx, "names", "alice")
		if err != nil || string(got.Value) != "v2" {
			t.Fatalf("GetRecord = %v, %v; want the renewal", got, err)
		}
	})

	tampered := sign(t, alice, "names", "carol", "10.0.0.1", exp)
	tampered.Value = []byte("10.0.0.66")
	forgeries := []struct {
		name string
		rec  *dht.SignedRecord
		key  overlay.Address // zero: the record's own key
		want string
	}{
		{name: "wrong signer", rec: sign(t, bob, dht.NamespaceNode, dht.ClaimName(alice.Member.Address, "name"), "bob", exp), want: "claim about another node"},
		{name: "wrong key", rec: sign(t, alice, "names", "dave", "x", exp), key: dht.KeyOf("names", "erin"), want: "belongs at key"},
		{name: "tampered value", rec: tampered, want: "signature does not verify"},
		{name: "other CA", rec: sign(t, mallory, "names", "mallory", "x", exp), want: "not in the trust bundle"},
	}
	for _, f := range forgeries {
		t.Run("forged: "+f.name, func(t *testing.T) {
			key := f.key
			if key.IsZero() {
				key = f.rec.Key()
			}
			// Refused by the writer's own DHT, when it goes through PutRecord.
			if f.key.IsZero() {
				err := r.dht(r.random()).PutRecord(ctx, f.rec)
				if !errors.Is(err, dht.ErrBadRecord) || !strings.Contains(err.Error(), f.want) {
					t.Fatalf("PutRecord = %v, want ErrBadRecord saying %q", err, f.want)
				}
			}
			// Refused by the storing node, from a writer that does not check.
			owner := r.closest(key, 1)[0]
			before := r.dht(owner).Stats().Refused
			err := r.dht(r.random(owner)).PutRecordUnchecked(ctx, key, f.rec)
			if !errors.Is(err, dht.ErrRefused) || !errors.Is(err, dht.ErrBadRecord) || !strings.Contains(err.Error(), f.want) {
				t.Fatalf("unchecked put = %v, want ErrRefused and ErrBadRecord saying %q", err, f.want)
			}
			t.Logf("the storing node says: %v", err)
			if got := r.dht(owner).Stats().Refused; got != before+1 {
				t.Fatalf("owner counted %d refusals, want %d", got, before+1)
			}
			if _, err := r.dht(r.random()).Get(ctx, key); !errors.Is(err, dht.ErrNotFound) {
				t.Fatalf("Get of a forged record = %v, want ErrNotFound", err)
			}
		})
	}

	t.Run("oversize record", func(t *testing.T) {
		rec := sign(t, alice, "names", "big", strings.Repeat("v", cfg.MaxValueSize+1), exp)
		if err := r.dht(r.random()).PutRecord(ctx, rec); !errors.Is(err, dht.ErrTooLarge) {
			t.Fatalf("PutRecord = %v, want ErrTooLarge", err)
		}
		err := r.dht(r.random(r.closest(rec.Key(), 1)...)).PutRecordUnchecked(ctx, rec.Key(), rec)
		if !errors.Is(err, dht.ErrTooLarge) || !errors.Is(err, dht.ErrRefused) {
			t.Fatalf("unchecked PutRecord = %v, want ErrRefused and ErrTooLarge", err)
		}
	})

	t.Run("reader verifies", func(t *testing.T) {
		// Nodes without a trust bundle store a record of another CA; a
		// reader that has the bundle refuses it.
		rec := sign(t, mallory, "names", "intruder", "x", exp)
		reader := r.random(r.closest(rec.Key(), cfg.Replicas)...)
		for _, m := range r.c.Members() {
			if m.Index != reader {
				r.start(m.Index, cfg, nil)
			}
		}
		if err := r.dht(r.random(reader)).PutRecord(ctx, rec); err != nil {
			t.Fatalf("a DHT without a bundle should take it: %v", err)
		}
		_, err := r.dht(reader).GetRecord(ctx, "names", "intruder")
		if !errors.Is(err, dht.ErrBadRecord) || !errors.Is(err, security.ErrUnknownCA) {
			t.Fatalf("GetRecord at a verifying reader = %v, want ErrBadRecord wrapping ErrUnknownCA", err)
		}
		if r.dht(reader).Stats().Refused == 0 {
			t.Fatal("the reader did not count the refusal")
		}
	})
}

// TestDHT_MaxItems fills a lone node's store.
func TestDHT_MaxItems(t *testing.T) {
	cfg := testConfig()
	cfg.MaxItems = 5
	r := newRing(t, sim.Options{N: 1, Seed: 1}, cfg, nil)
	ctx := ctxFor(t, 30*time.Second)
	d := r.dht(0)
	for i := range 5 {
		if err := d.Put(ctx, keyOf(fmt.Sprint(i)), []byte("x"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Put(ctx, keyOf("one too many"), []byte("x"), time.Minute)
	if !errors.Is(err, dht.ErrFull) || !strings.Contains(err.Error(), "dht.max_items") {
		t.Fatalf("Put into a full store = %v, want ErrFull naming dht.max_items", err)
	}
	if err := d.Put(ctx, keyOf("0"), []byte("y"), time.Minute); err != nil {
		t.Fatalf("overwriting a stored key in a full store: %v", err)
	}
	if st := d.Stats(); st.Refused != 1 || st.Items != 5 {
		t.Fatalf("stats %+v, want 1 refused and 5 items", st)
	}
}

// TestDHT_NewBeforeStart registers DHTs on nodes that are not started yet
// (the order a daemon uses), on a hand-built three-node ring.
func TestDHT_NewBeforeStart(t *testing.T) {
	fabric := simnet.New(simnet.Config{Latency: simnet.Constant(2 * time.Millisecond), DeadAfter: time.Second})
	defer fabric.Close()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	var nodes []*overlay.Node
	var dhts []*dht.DHT
	defer func() {
		for _, d := range dhts {
			d.Close()
		}
		for _, n := range nodes {
			n.Close()
		}
	}()
	for i := range 3 {
		ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 4242)
		var a overlay.Address
		a[0], a[1] = byte(i*85+1), 0x5a
		self := &security.Member{MemberSpec: security.MemberSpec{Name: fmt.Sprint("node", i)}, Address: a}
		l, err := fabric.Listen(self, ep)
		if err != nil {
			t.Fatal(err)
		}
		cfg := overlaytest.FastConfig()
		if i > 0 {
			cfg.Bootstrap = []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 4242)}
		}
		n, err := overlay.New(self, l, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		d, err := dht.New(n, testConfig(), nil, log)
		if err != nil {
			t.Fatal(err)
		}
		dhts = append(dhts, d)
		n.Start()
	}
	ctx := ctxFor(t, 20*time.Second)
	for !nodes[0].InRing() || !nodes[1].InRing() || !nodes[2].InRing() {
		if ctx.Err() != nil {
			t.Fatal("the three nodes did not form a ring")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 10 {
		key := keyOf(fmt.Sprint("early", i))
		if err := dhts[i%3].Put(ctx, key, []byte{byte(i)}, time.Minute); err != nil {
			t.Fatal(err)
		}
		got, err := dhts[(i+1)%3].Get(ctx, key)
		if err != nil || !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("Get = %v, %v", got, err)
		}
	}
}

func TestNew_RejectsBadConfig(t *testing.T) {
	cfg := dht.Default()
	cfg.Replicas = 0
	if _, err := dht.New(nil, cfg, nil, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "dht.replicas") {
		t.Fatalf("New = %v, want the key named", err)
	}
	if _, err := dht.New(nil, dht.Default(), nil, zaptest.NewLogger(t)); err == nil {
		t.Fatal("New accepted a nil node")
	}
}

// TestDHT_OverDTLS runs the DHT on a small ring of real DTLS links.
func TestDHT_OverDTLS(t *testing.T) {
	g := newGroup(t, "group-ca")
	alice := g.member(t, "alice", "")
	cfg := testConfig()
	r := newRing(t, sim.Options{N: 8, Secure: true, Seed: 2}, cfg, dht.VerifyWith(g.bundle))
	ctx := ctxFor(t, 30*time.Second)
	name := dht.ClaimName(alice.Member.Address, "")
	if err := r.dht(r.random()).PutRecord(ctx, sign(t, alice, dht.NamespaceNode, name, "10.20.0.5", time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	got, err := r.dht(r.random()).GetRecord(ctx, dht.NamespaceNode, name)
	if err != nil || string(got.Value) != "10.20.0.5" {
		t.Fatalf("GetRecord = %v, %v", got, err)
	}
	r.waitPlaced(dht.KeyOf(dht.NamespaceNode, name), cfg.Replicas, 5*time.Second)
}
