package sim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/security"
)

// pipeTap records the TypePipe messages a node receives, before its
// Pipes handles them. Nodes on the way forward a message with its
// payload untouched (only TTL, hops and flags in the header change), so
// the payload seen here is exactly what every forwarder held in clear.
type pipeTap struct {
	mu   sync.Mutex
	msgs []tapped
}

type tapped struct {
	src, from, via overlay.Address
	flags          overlay.Flags
	hops           uint8
	payload        []byte
}

func (p *pipeTap) record(m *overlay.Message) {
	p.mu.Lock()
	p.msgs = append(p.msgs, tapped{src: m.Src, from: m.From, via: m.Via, flags: m.Flags, hops: m.Hops, payload: bytes.Clone(m.Payload)})
	p.mu.Unlock()
}

func (p *pipeTap) snapshot() []tapped {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.msgs)
}

// linked reports whether a's status shows a link to b or b's to a.
func linked(a, b *sim.Member) bool {
	has := func(x, y *sim.Member) bool {
		for _, p := range x.Node.Status().Peers {
			if p.Address == y.Node.Address() {
				return true
			}
		}
		return false
	}
	return has(a, b) || has(b, a)
}

func forwarded(c *sim.Cluster) map[overlay.Address]uint64 {
	out := map[overlay.Address]uint64{}
	for _, m := range c.Members() {
		out[m.Node.Address()] = m.Node.Status().Counters.Forwarded
	}
	return out
}

// diagnose logs where routed datagrams may have been lost.
func diagnose(t *testing.T, c *sim.Cluster, pipes map[overlay.Address]*overlay.Pipes) {
	t.Helper()
	for _, m := range c.Members() {
		st := m.Node.Status()
		var mux uint64
		if sl, ok := m.Linker.(*overlay.SecureLinker); ok {
			mux = sl.Mux().Stats().Dropped()
		}
		t.Logf("node%d: counters %+v, socket drops %d, pipes %+v", m.Index, st.Counters, mux, pipes[m.Node.Address()].Stats())
	}
}

// waitQuiet waits until no node's links have changed for quiet (the
// maintainers keep adjusting long links for a while after the ring is
// correct, and a datagram in flight on a link being replaced is lost).
func waitQuiet(t *testing.T, c *sim.Cluster, quiet time.Duration) {
	t.Helper()
	snapshot := func() string {
		var b strings.Builder
		for _, m := range c.Members() {
			for _, p := range m.Node.Status().Peers {
				b.WriteString(p.Address.String())
			}
			b.WriteByte(';')
		}
		return b.String()
	}
	start, since, last := time.Now(), time.Now(), snapshot()
	for time.Since(since) < quiet {
		if time.Since(start) > 30*time.Second {
			t.Logf("links still changing after %v", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(100 * time.Millisecond)
		if s := snapshot(); s != last {
			since, last = time.Now(), s
		}
	}
	t.Logf("links quiet for %v, %v after the ring was correct", quiet, time.Since(start).Round(100*time.Millisecond))
}

// exchange sends n numbered packets each way and waits until all have
// arrived, sending again the ones a lossy moment of the ring dropped.
func exchange(t *testing.T, la, lb *security.Link, n int, marker string) {
	t.Helper()
	var mu sync.Mutex
	got := map[string]map[int]bool{"a->b": {}, "b->a": {}}
	count := func(dir string) func([]byte) {
		return func(p []byte) {
			var i int
			if _, err := fmt.Sscanf(string(p), marker+" "+dir+" %d", &i); err != nil {
				t.Errorf("%s: unexpected packet %q", dir, p)
				return
			}
			mu.Lock()
			got[dir][i] = true
			mu.Unlock()
		}
	}
	lb.SetHandler(count("a->b"))
	la.SetHandler(count("b->a"))
	resent := 0
	for round := range 6 {
		mu.Lock()
		var ab, ba []int
		for i := range n {
			if !got["a->b"][i] {
				ab = append(ab, i)
			}
			if !got["b->a"][i] {
				ba = append(ba, i)
			}
		}
		mu.Unlock()
		if len(ab)+len(ba) == 0 {
			if resent > 0 {
				t.Logf("%s: %d packets sent again", marker, resent)
			}
			return
		}
		if round > 0 {
			resent += len(ab) + len(ba)
		}
		for _, i := range ab {
			if err := la.Send(fmt.Appendf(nil, "%s a->b %d", marker, i)); err != nil {
				t.Fatalf("send a->b: %v", err)
			}
			time.Sleep(500 * time.Microsecond)
		}
		for _, i := range ba {
			if err := lb.Send(fmt.Appendf(nil, "%s b->a %d", marker, i)); err != nil {
				t.Fatalf("send b->a: %v", err)
			}
			time.Sleep(500 * time.Microsecond)
		}
		time.Sleep(time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Errorf("%s: received %d a->b and %d b->a of %d after 6 rounds", marker, len(got["a->b"]), len(got["b->a"]), n)
}

// lost is how many records a's pipes sent that b's have not received
// (a and b have pipes only with each other here).
func lost(a, b *overlay.Pipes) int64 {
	return int64(a.Stats().RecordsOut) - int64(b.Stats().RecordsIn)
}

// closeTells closes l and checks that its peer's link peer ends with
// ErrPeerClosed. Link.Close sends one record; if the ring lost a record
// from l's side meanwhile, the peer may only learn by its timeout.
func closeTells(t *testing.T, l, peer *security.Link, from, to *overlay.Pipes) {
	t.Helper()
	lostBefore := lost(from, to)
	l.Close()
	select {
	case <-peer.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("peer's link still open")
	}
	if errors.Is(peer.Err(), security.ErrPeerClosed) {
		return
	}
	if lostAfter := lost(from, to); lostAfter > lostBefore {
		t.Logf("the ring lost %d records as the link closed; the peer learned by timeout (%v)", lostAfter-lostBefore, peer.Err())
		return
	}
	t.Fatalf("peer's link closed with %v, and no record was lost", peer.Err())
}

// checkSealed checks what the forwarders of the pipe messages from src
// held: a pipe header and a DTLS or sealed record, never the marker. It
// returns the messages that were forwarded (hops >= 1).
func checkSealed(t *testing.T, msgs []tapped, src overlay.Address, marker string) []tapped {
	t.Helper()
	var fwd []tapped
	for _, m := range msgs {
		if m.src != src {
			continue
		}
		if bytes.Contains(m.payload, []byte(marker)) {
			t.Fatalf("%s: a forwarded pipe message carries the packet in clear", marker)
		}
		if len(m.payload) <= overlay.PipeHeaderLen {
			t.Fatalf("%s: short pipe message", marker)
		}
		switch rec := m.payload[overlay.PipeHeaderLen]; {
		case rec == 0xE1, rec >= 20 && rec <= 63: // sealed, DTLS
		default:
			t.Fatalf("%s: pipe message carries record type %d", marker, rec)
		}
		if m.hops >= 1 {
			fwd = append(fwd, m)
		}
	}
	return fwd
}

// TestRoutedPipe_Secure12 opens end-to-end DTLS links over routed pipes
// between two nodes of a 12-node DTLS ring that are not linked to each
// other: packets flow both ways through nodes that forward them sealed;
// a relay pinned to a chosen node works; closing one end tells the
// other.
func TestRoutedPipe_Secure12(t *testing.T) {
	var mu sync.Mutex
	pipes := map[overlay.Address]*overlay.Pipes{}
	taps := map[overlay.Address]*pipeTap{}
	attach := func(m *sim.Member) error {
		sl, ok := m.Linker.(*overlay.SecureLinker)
		if !ok {
			return errors.New("not a secure cluster")
		}
		log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).With(zap.Int("sim", m.Index))
		ps, err := overlay.NewPipes(m.Node, sl.Endpoint(), overlay.DefaultPipeConfig(), log)
		if err != nil {
			return err
		}
		tap := &pipeTap{}
		m.Node.Handle(overlay.TypePipe, func(msg *overlay.Message) {
			tap.record(msg)
			ps.HandleMessage(msg)
		})
		mu.Lock()
		pipes[m.Node.Address()], taps[m.Node.Address()] = ps, tap
		mu.Unlock()
		t.Cleanup(func() { ps.Close() })
		return nil
	}
	c := overlaytest.NewCluster(t, sim.Options{N: 12, Secure: true, Seed: 12, OnNode: attach})
	waitQuiet(t, c, 2*time.Second)
	ms := c.Members()
	t.Cleanup(func() {
		if t.Failed() {
			diagnose(t, c, pipes)
		}
	})

	// Unlinked pairs, those whose routed messages cross the most nodes
	// first. The ring keeps adjusting its long links, so a pair may get
	// linked during the test; then the next pair is tried.
	type pair struct {
		a, b *sim.Member
		hops int
	}
	var pairs []pair
	for i, x := range ms {
		for _, y := range ms[i+1:] {
			if linked(x, y) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			r, err := x.Node.Echo(ctx, y.Node.Address())
			cancel()
			if err == nil && r.Hops >= 1 {
				pairs = append(pairs, pair{x, y, r.Hops})
			}
		}
	}
	slices.SortStableFunc(pairs, func(p, q pair) int { return q.hops - p.hops })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 100

	// Greedy routing.
	var (
		a, b          *sim.Member
		pa, pb        *overlay.Pipes
		tapA, tapB    *pipeTap
		la, lb        *security.Link
		handed        map[overlay.Address]uint64
		fwdAB, fwdBA  []tapped
		before, after map[overlay.Address]uint64
		fromA, fromB  int
		err           error
	)
	ends := map[overlay.Address]bool{} // of every pair tried
	for _, p := range pairs[:min(len(pairs), 4)] {
		if linked(p.a, p.b) {
			continue
		}
		a, b = p.a, p.b
		ends[a.Node.Address()], ends[b.Node.Address()] = true, true
		pa, pb = pipes[a.Node.Address()], pipes[b.Node.Address()]
		tapA, tapB = taps[a.Node.Address()], taps[b.Node.Address()]
		fromA, fromB = len(tapA.snapshot()), len(tapB.snapshot())
		t.Logf("node%d -> node%d: not linked, %d forwarding nodes between them", a.Index, b.Index, p.hops)
		before = forwarded(c)
		la, err = pa.Dial(ctx, b.Node.Address(), overlay.Address{})
		if err != nil {
			t.Fatal(err)
		}
		lb, err = pb.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if la.Peer().Address != b.Node.Address() || lb.Peer().Address != a.Node.Address() || !la.Dialed() || lb.Dialed() {
			t.Fatal("routed links name the wrong peers or roles")
		}
		exchange(t, la, lb, n, "routed-secret")
		if t.Failed() {
			t.FailNow()
		}
		after = forwarded(c)
		fwdAB = checkSealed(t, tapB.snapshot()[fromB:], a.Node.Address(), "routed-secret")
		fwdBA = checkSealed(t, tapA.snapshot()[fromA:], b.Node.Address(), "routed-secret")
		if len(fwdAB) >= n && len(fwdBA) >= n {
			break
		}
		if !linked(a, b) {
			t.Fatalf("only %d a->b and %d b->a pipe messages were forwarded", len(fwdAB), len(fwdBA))
		}
		t.Logf("node%d and node%d got linked during the test; next pair", a.Index, b.Index)
		la.Close()
		lb.Close()
		a = nil
	}
	if a == nil {
		t.Fatal("no pair of nodes stayed unlinked with a node between them")
	}
	// Each last forwarder counted what it handed over (other traffic
	// only adds to its counter).
	handed = map[overlay.Address]uint64{}
	for _, m := range append(fwdAB, fwdBA...) {
		handed[m.from]++
	}
	for fwd, k := range handed {
		if fwd == a.Node.Address() || fwd == b.Node.Address() {
			t.Fatal("a pipe message that crossed nodes was handed over by an end")
		}
		if d := after[fwd] - before[fwd]; d < k {
			t.Fatalf("forwarder %s handed over %d pipe messages but counted %d forwards", fwd, k, d)
		}
		if st := pipes[fwd].Stats(); !ends[fwd] && (st.Open != 0 || st.Accepted != 0 || st.Dialed != 0) {
			t.Fatalf("forwarder %s terminated a pipe: %+v", fwd, st)
		}
	}
	t.Logf("greedy: %d a->b and %d b->a pipe messages forwarded, last forwarders %d", len(fwdAB), len(fwdBA), len(handed))

	// A relay: a second link, pinned through a node off the greedy path.
	var via *sim.Member
	for _, m := range ms {
		if m != a && m != b && handed[m.Node.Address()] == 0 && (via == nil || !linked(m, a)) {
			via = m
		}
	}
	if via == nil {
		t.Fatal("no relay candidate")
	}
	v := via.Node.Address()
	beforeVia := via.Node.Status().Counters.Forwarded
	ra, err := pa.Dial(ctx, b.Node.Address(), v)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := pb.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, ra, rb, n, "relayed-secret")
	if t.Failed() {
		t.FailNow()
	}
	var relayed uint64
	for _, tap := range []struct {
		msgs []tapped
		src  overlay.Address
	}{{tapB.snapshot()[fromB:], a.Node.Address()}, {tapA.snapshot()[fromA:], b.Node.Address()}} {
		for _, m := range checkSealed(t, tap.msgs, tap.src, "relayed-secret") {
			if m.flags&overlay.FlagVia == 0 {
				continue // the greedy link's
			}
			if m.via != v || m.flags&overlay.FlagViaReached == 0 {
				t.Fatalf("relayed message via %s, reached %v; want through %s", m.via, m.flags&overlay.FlagViaReached != 0, v)
			}
			relayed++
		}
	}
	if relayed < 2*n {
		t.Fatalf("only %d relayed pipe messages (both ways) arrived through %s", relayed, v)
	}
	if d := via.Node.Status().Counters.Forwarded - beforeVia; d < relayed {
		t.Fatalf("relay node%d forwarded %d messages, fewer than the %d that passed it", via.Index, d, relayed)
	}
	t.Logf("relay through node%d: %d pipe messages passed it", via.Index, relayed)

	// Closing one end tells the other; the pipes go with the links.
	closeTells(t, la, lb, pa, pb)
	closeTells(t, rb, ra, pb, pa)
	deadline := time.Now().Add(10 * time.Second)
	for pa.Stats().Open != 0 || pb.Stats().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pipes left open: %d and %d", pa.Stats().Open, pb.Stats().Open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
