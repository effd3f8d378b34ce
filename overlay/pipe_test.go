package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/transport"
)

// These tests run Pipes on nodes that are never started: each node's
// TypePipe messages go over pipeWire, an in-memory stand-in for the ring
// that delivers every message to its destination's handler after a
// delay, in order. The security endpoints, DTLS and sealed records are
// the real ones.

// pipeWire carries TypePipe messages between Pipes.
type pipeWire struct {
	latency time.Duration
	q       chan wireMsg
	done    chan struct{}

	mu       sync.Mutex
	ends     map[Address]*pipeEnd
	redirect map[Address]Address // dst -> the node that gets its messages instead
	posing   map[Address]Address // src -> the address its messages claim
	drop     func(from Address, h Header) bool
	tap      []wireMsg
}

type wireMsg struct {
	at  time.Time
	to  *pipeEnd
	msg Message
}

// checkLeaks makes the test fail if goroutines outlive it (the package
// has no TestMain); call it first, so it runs after every other cleanup.
func checkLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// newPipeWire starts a wire; it stops after every test cleanup that was
// registered after it.
func newPipeWire(t *testing.T, latency time.Duration) *pipeWire {
	w := &pipeWire{latency: latency, q: make(chan wireMsg, 8192), done: make(chan struct{}), ends: map[Address]*pipeEnd{}}
	go func() {
		defer close(w.done)
		for m := range w.q {
			time.Sleep(time.Until(m.at))
			m.to.ps.HandleMessage(&m.msg)
		}
	}()
	t.Cleanup(func() {
		close(w.q)
		<-w.done
	})
	return w
}

func (w *pipeWire) send(from Address, h Header, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.drop != nil && w.drop(from, h) {
		return nil
	}
	dst := h.Dst
	if r, ok := w.redirect[dst]; ok {
		dst = r
	}
	if claim, ok := w.posing[from]; ok {
		from = claim
	}
	to := w.ends[dst]
	if to == nil {
		return ErrNoRoute
	}
	h.Src, h.Hops = from, 1
	if h.Flags&FlagVia != 0 {
		h.Flags |= FlagViaReached
	}
	m := wireMsg{at: time.Now().Add(w.latency), to: to, msg: Message{Header: h, Payload: bytes.Clone(payload), From: from}}
	w.tap = append(w.tap, wireMsg{msg: Message{Header: h, Payload: bytes.Clone(payload)}})
	select {
	case w.q <- m:
	default: // a full network drops
	}
	return nil
}

func (w *pipeWire) setDrop(f func(from Address, h Header) bool) {
	w.mu.Lock()
	w.drop = f
	w.mu.Unlock()
}

func (w *pipeWire) tapped() []wireMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]wireMsg(nil), w.tap...)
}

// pipeGroup is a CA and its members.
type pipeGroup struct {
	ca     *security.CA
	bundle *security.TrustBundle
}

func newPipeGroup(t *testing.T) *pipeGroup {
	t.Helper()
	now := time.Now()
	ca, err := security.NewCA("pipe-ca", now.Add(-time.Hour), now.Add(24*time.Hour), "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	b, err := security.NewTrustBundle(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return &pipeGroup{ca: ca, bundle: b}
}

func (g *pipeGroup) identity(t *testing.T, name string) *security.Identity {
	t.Helper()
	key, err := security.GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := g.ca.Issue(key.Public(), security.MemberSpec{Name: name}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id, err := security.NewIdentity(key, cert, g.bundle, now)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// idleLinker is the Linker of a node that is never started.
type idleLinker struct{}

func (idleLinker) Dial(context.Context, netip.AddrPort) (Link, error) {
	return nil, errors.New("no direct links here")
}
func (idleLinker) Accept(ctx context.Context) (Link, error) { <-ctx.Done(); return nil, ctx.Err() }
func (idleLinker) LocalAddr() netip.AddrPort                { return netip.AddrPort{} }
func (idleLinker) Close() error                             { return nil }

// pipeEnd is one node with its endpoint and Pipes on a wire.
type pipeEnd struct {
	addr Address
	ep   *security.Endpoint
	ps   *Pipes
}

func pipeSecurity() security.Config {
	c := security.Default()
	c.HandshakeTimeout = 5 * time.Second
	return c
}

func (w *pipeWire) end(t *testing.T, g *pipeGroup, name string, pcfg PipeConfig, scfg security.Config) *pipeEnd {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Named(name)
	id := g.identity(t, name)
	noDial := func(context.Context, netip.AddrPort) (security.Pipe, error) {
		return nil, errors.New("no direct links here")
	}
	ep, err := security.NewEndpoint(id, g.bundle, scfg, noDial, log)
	if err != nil {
		t.Fatal(err)
	}
	node, err := New(id.Member, idleLinker{}, Default(), log)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := NewPipes(node, ep, pcfg, log)
	if err != nil {
		t.Fatal(err)
	}
	e := &pipeEnd{addr: id.Member.Address, ep: ep, ps: ps}
	self := e.addr
	ps.send = func(h Header, payload []byte) error { return w.send(self, h, payload) }
	w.mu.Lock()
	w.ends[self] = e
	w.mu.Unlock()
	t.Cleanup(func() {
		ps.Close()
		ep.Close()
	})
	return e
}

// ordered returns two ends with a.addr < b.addr.
func (w *pipeWire) ordered(t *testing.T, g *pipeGroup, pcfg PipeConfig) (small, large *pipeEnd) {
	a := w.end(t, g, "a", pcfg, pipeSecurity())
	b := w.end(t, g, "b", pcfg, pipeSecurity())
	if a.addr.Compare(b.addr) > 0 {
		a, b = b, a
	}
	return a, b
}

// received gathers the packets a link delivers.
type received struct {
	mu   sync.Mutex
	pkts [][]byte
	got  chan struct{}
}

func receive(l *security.Link) *received {
	r := &received{got: make(chan struct{}, 1)}
	l.SetHandler(func(p []byte) {
		r.mu.Lock()
		r.pkts = append(r.pkts, bytes.Clone(p))
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default:
		}
	})
	return r
}

func (r *received) wait(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.pkts) >= n {
			out := r.pkts
			r.mu.Unlock()
			return out
		}
		have := len(r.pkts)
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("got %d packets, want %d", have, n)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func acceptPipe(t *testing.T, ps *Pipes) *security.Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := ps.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return l
}

// noneWaiting checks that no link is queued for ps.Accept nor for the
// endpoint's own Accept (which feeds the node's neighbour links).
func noneWaiting(t *testing.T, e *pipeEnd) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if l, err := e.ps.Accept(ctx); err == nil {
		t.Fatalf("an extra link to %s waits in Pipes.Accept", l.Peer().Name)
	}
	if l, err := e.ep.Accept(ctx); err == nil {
		t.Fatalf("a routed link to %s leaked into the endpoint's Accept", l.Peer().Name)
	}
}

func TestPipes_DialCarriesPacketsBothWays(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	for _, tc := range []struct {
		name  string
		pinTo bool
	}{{"greedy", false}, {"via", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newPipeWire(t, time.Millisecond)
			a := w.end(t, g, "a", DefaultPipeConfig(), pipeSecurity())
			b := w.end(t, g, "b", DefaultPipeConfig(), pipeSecurity())
			var via Address
			if tc.pinTo {
				via = w.end(t, g, "relay", DefaultPipeConfig(), pipeSecurity()).addr
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			la, err := a.ps.Dial(ctx, b.addr, via)
			if err != nil {
				t.Fatal(err)
			}
			lb := acceptPipe(t, b.ps)
			if la.Peer().Address != b.addr || lb.Peer().Address != a.addr {
				t.Fatal("links name the wrong peers")
			}
			if !la.Dialed() || lb.Dialed() {
				t.Fatal("roles wrong")
			}
			if la.Remote() != pipeRemote(b.addr) || !la.Remote().Addr().Is6() {
				t.Fatalf("routed link's remote is %s, want the stand-in %s", la.Remote(), pipeRemote(b.addr))
			}
			ra, rb := receive(la), receive(lb)
			const n = 50
			for i := range n {
				if err := la.Send(fmt.Appendf(nil, "secret-marker a->b %d", i)); err != nil {
					t.Fatal(err)
				}
				if err := lb.Send(fmt.Appendf(nil, "secret-marker b->a %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			for i, p := range rb.wait(t, n)[:n] {
				if want := fmt.Sprintf("secret-marker a->b %d", i); string(p) != want {
					t.Fatalf("b got %q, want %q", p, want)
				}
			}
			ra.wait(t, n)
			noneWaiting(t, a)
			noneWaiting(t, b)

			// What crossed the wire is a pipe header and a DTLS or sealed
			// record; the packets are nowhere in clear.
			var sealed int
			for _, m := range w.tapped() {
				if m.msg.Type != TypePipe {
					t.Fatalf("message of type %#x on the wire", m.msg.Type)
				}
				if tc.pinTo && (m.msg.Flags&FlagVia == 0 || m.msg.Via != via) {
					t.Fatalf("message %s -> %s not pinned through the relay: flags %b via %s", m.msg.Src, m.msg.Dst, m.msg.Flags, m.msg.Via)
				}
				_, rec, err := parsePipeHeader(m.msg.Payload)
				if err != nil {
					t.Fatalf("bad pipe header on the wire: %v", err)
				}
				if rec[0] == transport.SealedRecordType {
					sealed++
				} else if rec[0] < dtlsFirst || rec[0] > dtlsLast {
					t.Fatalf("record type %d on the wire", rec[0])
				}
				if bytes.Contains(m.msg.Payload, []byte("secret-marker")) {
					t.Fatal("a packet crossed the wire in clear")
				}
			}
			if sealed < 2*n {
				t.Fatalf("%d sealed records on the wire, want at least %d", sealed, 2*n)
			}

			// Closing one end tells the other, and both pipes go.
			la.Close()
			select {
			case <-lb.Done():
				if !errors.Is(lb.Err(), security.ErrPeerClosed) {
					t.Fatalf("peer's link closed with %v", lb.Err())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("peer not told of close")
			}
			eventually(t, "both pipes closed", func() bool { return a.ps.Stats().Open == 0 && b.ps.Stats().Open == 0 })
		})
	}
}

// TestPipes_SimultaneousDialGivesOneLink: two nodes that dial each other
// at once end up with one link, whichever way the hellos cross.
func TestPipes_SimultaneousDialGivesOneLink(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	for _, tc := range []struct {
		name string
		gap  time.Duration // between the two dials
		// the larger address dials first
		largeFirst bool
	}{
		{"hellos cross", 0, false},
		{"small dials into the large one's handshake", 30 * time.Millisecond, true},
		{"large dials into the small one's handshake", 30 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 3 {
				w := newPipeWire(t, 20*time.Millisecond)
				small, large := w.ordered(t, g, DefaultPipeConfig())
				first, second := small, large
				if tc.largeFirst {
					first, second = large, small
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var l1, l2 *security.Link
				var e1, e2 error
				var wg sync.WaitGroup
				wg.Add(2)
				go func() {
					defer wg.Done()
					l1, e1 = first.ps.Dial(ctx, second.addr, Address{})
				}()
				go func() {
					defer wg.Done()
					time.Sleep(tc.gap)
					l2, e2 = second.ps.Dial(ctx, first.addr, Address{})
				}()
				wg.Wait()
				if e1 != nil || e2 != nil {
					t.Fatalf("run %d: dials: %v, %v", i, e1, e2)
				}
				if l1.Dialed() == l2.Dialed() {
					t.Fatalf("run %d: both links have the same role", i)
				}
				if n1, n2 := len(first.ep.Links()), len(second.ep.Links()); n1 != 1 || n2 != 1 {
					t.Fatalf("run %d: links: %d and %d, want one each", i, n1, n2)
				}
				switch {
				case tc.gap > 0 && !l1.Dialed():
					t.Fatalf("run %d: the later dial's handshake won", i)
				case tc.gap == 0:
					if glare := small.ps.Stats().Glare + large.ps.Stats().Glare; glare == 0 {
						t.Fatalf("run %d: no simultaneous open seen", i)
					}
				}
				noneWaiting(t, first)
				noneWaiting(t, second)
				r := receive(l2)
				l1.Send([]byte("one link"))
				if got := r.wait(t, 1); string(got[0]) != "one link" {
					t.Fatalf("run %d: got %q", i, got[0])
				}
			}
		})
	}
}

// TestPipes_SessionAndRingLinkOpenedAtOnce: a session and a relayed ring
// link opened towards each other at the same moment are two links, not a
// simultaneous open: neither dial gives up to the other, and each gets
// its own kind of link (the session dial was once handed the peer's ring
// link, so the session carried the peer's ring traffic, and the ring
// link never reached the node).
func TestPipes_SessionAndRingLinkOpenedAtOnce(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	relay := Address{0xee} // the wire ignores it; ring pipes must name one
	for _, ringFromSmall := range []bool{true, false} {
		for i := range 3 {
			w := newPipeWire(t, 20*time.Millisecond)
			small, large := w.ordered(t, g, DefaultPipeConfig())
			sessFrom, ringFrom := large, small
			if !ringFromSmall {
				sessFrom, ringFrom = small, large
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var sess, ring *security.Link
			var sessErr, ringErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				sess, sessErr = sessFrom.ps.Dial(ctx, ringFrom.addr, Address{})
			}()
			go func() {
				defer wg.Done()
				ring, ringErr = ringFrom.ps.dial(ctx, sessFrom.addr, relay, true)
			}()
			wg.Wait()
			if sessErr != nil || ringErr != nil {
				t.Fatalf("ring from small %v, run %d: dials: %v, %v", ringFromSmall, i, sessErr, ringErr)
			}
			if !sess.Dialed() || !ring.Dialed() {
				t.Fatalf("ring from small %v, run %d: a dial returned the peer's link (session dialed %v, ring dialed %v)",
					ringFromSmall, i, sess.Dialed(), ring.Dialed())
			}
			if sess.Remote() != pipeRemote(ringFrom.addr) || ring.Remote() != ringPipeRemote(sessFrom.addr) {
				t.Fatalf("ring from small %v, run %d: remotes %v (session), %v (ring)", ringFromSmall, i, sess.Remote(), ring.Remote())
			}
			if l := acceptPipe(t, ringFrom.ps); l.Peer().Address != sessFrom.addr || l.Dialed() {
				t.Fatalf("ring from small %v, run %d: accepted %s's link (dialed %v), want the session", ringFromSmall, i, l.Peer().Name, l.Dialed())
			}
			eventually(t, "the ring link reaches the node", func() bool {
				via, ok := sessFrom.ps.node.Relayed(ringFrom.addr)
				return ok && via == relay
			})
			noneWaiting(t, sessFrom)
		}
	}
}

// TestPipes_ImpostorRefused: a node on the path that answers for the
// destination completes DTLS with its own certificate, and the dial
// refuses it.
func TestPipes_ImpostorRefused(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	w := newPipeWire(t, time.Millisecond)
	a := w.end(t, g, "a", DefaultPipeConfig(), pipeSecurity())
	b := w.end(t, g, "b", DefaultPipeConfig(), pipeSecurity())
	mallory := w.end(t, g, "mallory", DefaultPipeConfig(), pipeSecurity())
	w.mu.Lock()
	w.redirect = map[Address]Address{b.addr: mallory.addr}
	w.posing = map[Address]Address{mallory.addr: b.addr}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := a.ps.Dial(ctx, b.addr, Address{})
	if err == nil {
		l.Close()
		t.Fatal("dial accepted a link to the wrong node")
	}
	if !errors.Is(err, ErrPipeWrongPeer) {
		t.Fatalf("dial: %v, want ErrPipeWrongPeer", err)
	}
	if a.ps.Stats().DropWrongPeer != 1 {
		t.Fatalf("wrong-peer drops: %d", a.ps.Stats().DropWrongPeer)
	}
}

// captureHello dials from a new node into the void and returns its
// first ClientHello record.
func captureHello(t *testing.T, w *pipeWire, g *pipeGroup) []byte {
	t.Helper()
	a := w.end(t, g, "prober", DefaultPipeConfig(), pipeSecurity())
	var hello atomic.Pointer[[]byte]
	a.ps.send = func(h Header, payload []byte) error {
		if _, rec, err := parsePipeHeader(payload); err == nil {
			if _, ok := transport.ClientHelloRandom(rec); ok {
				rec = bytes.Clone(rec)
				hello.CompareAndSwap(nil, &rec)
			}
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := a.ps.Dial(ctx, Address{1}, Address{}); err == nil {
		t.Fatal("dial into the void succeeded")
	}
	if hello.Load() == nil {
		t.Fatal("no ClientHello sent")
	}
	eventually(t, "the prober's dial cleaned up", func() bool { return a.ps.Stats().Open == 0 })
	return *hello.Load()
}

func pipeMessage(src Address, flags byte, id [8]byte, rec []byte) *Message {
	return &Message{
		Header:  Header{Type: TypePipe, Src: src},
		Payload: append(appendPipeHeader(nil, pipeHeader{flags: flags, id: id}), rec...),
	}
}

// TestPipes_InboundBoundedAndCounted: ClientHellos from many sources
// open at most MaxPending pipes; what is dropped is counted; closing
// Pipes clears everything.
func TestPipes_InboundBoundedAndCounted(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	w := newPipeWire(t, time.Millisecond)
	cfg := DefaultPipeConfig()
	cfg.MaxPending = 4
	a := w.end(t, g, "a", cfg, pipeSecurity())
	b := w.end(t, g, "b", cfg, pipeSecurity())
	hello := captureHello(t, w, g)

	for i := range cfg.MaxPending + 3 {
		b.ps.HandleMessage(pipeMessage(Address{0x77, byte(i)}, pipeFromDialer, [8]byte{byte(i)}, hello))
	}
	// Retransmissions of an accepted hello go to its pipe.
	b.ps.HandleMessage(pipeMessage(Address{0x77, 0}, pipeFromDialer, [8]byte{0}, hello))
	// Not a hello, or not from a dialer: nothing is created.
	b.ps.HandleMessage(pipeMessage(Address{0x78}, pipeFromDialer, [8]byte{9}, []byte{transport.SealedRecordType, 1, 2}))
	b.ps.HandleMessage(pipeMessage(Address{0x78}, 0, [8]byte{9}, hello))
	// Malformed.
	b.ps.HandleMessage(&Message{Header: Header{Type: TypePipe}, Payload: []byte{pipeFromDialer, 1, 2}})
	b.ps.HandleMessage(pipeMessage(Address{0x78}, 0x80, [8]byte{9}, hello))

	st := b.ps.Stats()
	want := PipeStats{Open: 4, Pending: 4, Accepted: 4, DropPendingFull: 3, DropUnknown: 2, DropMalformed: 2}
	got := PipeStats{Open: st.Open, Pending: st.Pending, Accepted: st.Accepted, DropPendingFull: st.DropPendingFull, DropUnknown: st.DropUnknown, DropMalformed: st.DropMalformed}
	if got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	b.ps.Close()
	if st := b.ps.Stats(); st.Open != 0 || st.Pending != 0 {
		t.Fatalf("after Close: %d pipes, %d pending", st.Open, st.Pending)
	}
	b.ps.HandleMessage(pipeMessage(Address{0x79}, pipeFromDialer, [8]byte{1}, hello))
	if st := b.ps.Stats(); st.Open != 0 {
		t.Fatal("a closed Pipes opened a pipe")
	}
	if _, err := b.ps.Dial(context.Background(), a.addr, Address{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("dial after Close: %v", err)
	}
}

// TestPipes_UnfinishedAndIdlePipesExpire: a pipe whose handshake stalls
// and a pipe that hears nothing are closed by the sweeper.
func TestPipes_UnfinishedAndIdlePipesExpire(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	t.Run("unfinished", func(t *testing.T) {
		w := newPipeWire(t, time.Millisecond)
		cfg := DefaultPipeConfig()
		cfg.HandshakeTimeout = 200 * time.Millisecond
		a := w.end(t, g, "a", DefaultPipeConfig(), pipeSecurity())
		b := w.end(t, g, "b", cfg, pipeSecurity())
		w.setDrop(func(from Address, _ Header) bool { return from == b.addr }) // b's answers are lost
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		defer cancel()
		if _, err := a.ps.Dial(ctx, b.addr, Address{}); err == nil {
			t.Fatal("dial succeeded with no answers")
		}
		// a's retransmitted hellos may open more; each expires.
		eventually(t, "b's half-open pipes expired", func() bool {
			st := b.ps.Stats()
			return st.Accepted >= 1 && st.Expired == st.Accepted && st.Open == 0 && st.Pending == 0
		})
	})
	t.Run("idle", func(t *testing.T) {
		w := newPipeWire(t, time.Millisecond)
		cfg := DefaultPipeConfig()
		cfg.IdleTimeout = 300 * time.Millisecond
		sec := pipeSecurity()
		sec.KeepaliveInterval, sec.DeadAfter = 10*time.Second, 30*time.Second // links stay quiet and up
		a := w.end(t, g, "a", cfg, sec)
		b := w.end(t, g, "b", cfg, sec)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		la, err := a.ps.Dial(ctx, b.addr, Address{})
		if err != nil {
			t.Fatal(err)
		}
		acceptPipe(t, b.ps)
		w.setDrop(func(Address, Header) bool { return true })
		eventually(t, "idle pipes expired", func() bool {
			return a.ps.Stats().Open == 0 && b.ps.Stats().Open == 0 && a.ps.Stats().Expired == 1
		})
		if err := la.Send([]byte("x")); err == nil {
			t.Fatal("send over an expired pipe succeeded")
		}
	})
}

// TestPipes_RekeyRedialsThroughTheRing: a routed link's dialer rekeys
// over a fresh routed pipe (security.Redialer), not through the
// endpoint's socket dialer.
func TestPipes_RekeyRedialsThroughTheRing(t *testing.T) {
	checkLeaks(t)
	g := newPipeGroup(t)
	w := newPipeWire(t, 0)
	sec := pipeSecurity()
	sec.HandshakeTimeout = time.Second // the old session's grace period
	sec.RekeyAfterRecords = 1024
	a := w.end(t, g, "a", DefaultPipeConfig(), sec)
	b := w.end(t, g, "b", DefaultPipeConfig(), sec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	la, err := a.ps.Dial(ctx, b.addr, Address{})
	if err != nil {
		t.Fatal(err)
	}
	lb := acceptPipe(t, b.ps)
	rb := receive(lb)
	for i := range 1100 {
		la.Send(fmt.Appendf(nil, "p%d", i))
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // let the wire keep up
		}
	}
	eventually(t, "both sides rekeyed", func() bool { return la.Stats().Rekeys >= 1 && lb.Stats().Rekeys >= 1 })
	if a.ps.Stats().Dialed < 2 {
		t.Fatalf("dialed %d routed pipes; the rekey did not redial", a.ps.Stats().Dialed)
	}
	have := len(rb.wait(t, 1))
	la.Send([]byte("after rekey"))
	if got := rb.wait(t, have+1); string(got[len(got)-1]) != "after rekey" {
		t.Fatalf("last packet %q", got[len(got)-1])
	}
	eventually(t, "old pipes retired", func() bool { return a.ps.Stats().Open == 1 && b.ps.Stats().Open == 1 })
	if la.LocalID() == [8]byte{} || len(a.ep.Links()) != 1 {
		t.Fatal("the link was not kept")
	}
}

func TestPipeHeader_RoundTripAndRejects(t *testing.T) {
	id := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	b := append(appendPipeHeader(nil, pipeHeader{flags: pipeFromDialer, id: id}), 0xE1, 9)
	if len(b) != PipeHeaderLen+2 {
		t.Fatalf("encoded %d bytes", len(b))
	}
	h, rec, err := parsePipeHeader(b)
	if err != nil || h.flags != pipeFromDialer || h.id != id || !bytes.Equal(rec, []byte{0xE1, 9}) {
		t.Fatalf("decoded %+v %x %v", h, rec, err)
	}
	for name, bad := range map[string][]byte{
		"empty":         nil,
		"header only":   b[:PipeHeaderLen],
		"unknown flags": append([]byte{0x04}, b[1:]...),
	} {
		if _, _, err := parsePipeHeader(bad); !errors.Is(err, ErrBadPayload) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestPipeRemote_StablePerPeerAndNotRoutable(t *testing.T) {
	a, b := Address{1, 2, 3}, Address{1, 2, 4}
	if again := (Address{1, 2, 3}); pipeRemote(a) != pipeRemote(again) || pipeRemote(a) == pipeRemote(b) {
		t.Fatal("stand-in addresses must be stable per peer and differ between peers")
	}
	for _, r := range []netip.AddrPort{pipeRemote(a), ringPipeRemote(a)} {
		if !netip.MustParsePrefix("100::/64").Contains(r.Addr()) {
			t.Fatalf("%s is not in the discard-only prefix", r)
		}
	}
	if ringPipeRemote(a) == pipeRemote(a) || ringPipeRemote(a) != ringPipeRemote(Address{1, 2, 3}) {
		t.Fatal("a ring pipe's stand-in address must be stable per peer and differ from a session's")
	}
}

// benchPipe is a pipe whose messages go nowhere (send is a no-op).
func benchPipe() (*Pipes, *routedPipe) {
	ps := &Pipes{
		log:         zap.NewNop(),
		buffers:     make(pipeBuffers, 4),
		send:        func(Header, []byte) error { return nil },
		pipes:       map[pipeKey]*routedPipe{},
		handshaking: map[Address][]*routedPipe{},
	}
	key := pipeKey{peer: Address{7}, id: [8]byte{1}, dialed: true}
	p := &routedPipe{ps: ps, key: key, remote: pipeRemote(key.peer), closed: make(chan struct{})}
	ps.pipes[key] = p
	return ps, p
}

// TestPipe_Send_NoAllocs: sending a record costs nothing beyond what
// Node.Send does (one message buffer), which the stub leaves out.
func TestPipe_Send_NoAllocs(t *testing.T) {
	_, p := benchPipe()
	rec := make([]byte, 1400)
	rec[0] = transport.SealedRecordType
	if allocs := testing.AllocsPerRun(1000, func() {
		if err := p.Send(rec); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per send", allocs)
	}
}

func TestPipes_HandleMessage_NoAllocs(t *testing.T) {
	ps, p := benchPipe()
	var got int
	p.SetHandler(func(b []byte, _ netip.AddrPort) { got += len(b) })
	rec := make([]byte, 1400)
	rec[0] = transport.SealedRecordType
	// The acceptor's message: the dialer (us) finds it under its pipe.
	m := pipeMessage(p.key.peer, 0, p.key.id, rec)
	if allocs := testing.AllocsPerRun(1000, func() { ps.HandleMessage(m) }); allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
	if got == 0 {
		t.Fatal("record not delivered")
	}
}

func BenchmarkPipe_Send(b *testing.B) {
	_, p := benchPipe()
	rec := make([]byte, 1400)
	rec[0] = transport.SealedRecordType
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		p.Send(rec)
	}
}

func FuzzPipeHeader_Parse_NoPanic(f *testing.F) {
	f.Add(append(appendPipeHeader(nil, pipeHeader{flags: pipeFromDialer, id: [8]byte{1}}), 22, 254, 253, 0, 0))
	f.Add(append(appendPipeHeader(nil, pipeHeader{id: [8]byte{1}}), transport.SealedRecordType, 1, 2, 3))
	f.Add([]byte{0x01, 1, 2})
	f.Add([]byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	ps, p := benchPipe()
	p.SetHandler(func([]byte, netip.AddrPort) {})
	p.control = make(chan []byte, 1)
	p.failed = make(chan struct{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, rec, err := parsePipeHeader(b)
		if err == nil {
			if len(rec) == 0 {
				t.Fatal("empty record decoded")
			}
			if again := append(appendPipeHeader(nil, h), rec...); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
			}
		}
		// Any record on a known pipe is delivered or dropped, never a
		// panic. (Unknown names other than a ClientHello are dropped.)
		if len(b) > 0 {
			ps.HandleMessage(pipeMessage(p.key.peer, 0, p.key.id, b))
			select {
			case <-p.control:
			default:
			}
		}
	})
}
