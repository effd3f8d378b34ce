package security

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringvpn/ringvpn/security/record"
	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/memnet"
	"github.com/ringvpn/ringvpn/transport/udp"
)

// testGroup is a CA whose members are valid around the real clock, since
// links verify certificates against time.Now.
type testGroup struct {
	ca     *CA
	bundle *TrustBundle
}

func newTestGroup(t testing.TB, name string) *testGroup {
	t.Helper()
	now := time.Now()
	ca, err := NewCA(name, now.Add(-24*time.Hour), now.Add(24*time.Hour), "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewTrustBundle(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return &testGroup{ca: ca, bundle: b}
}

// member issues a member certificate valid in [from, to]; claim, when not
// nil, is the overlay address the certificate claims instead of its own.
func (g *testGroup) member(t testing.TB, name string, from, to time.Time, claim *Address) *Identity {
	t.Helper()
	key, err := GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	spec := MemberSpec{Name: name, IPs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/16")}}
	cert, err := g.ca.issue(key.Public(), spec, from, to, claim)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMember(cert)
	if err != nil {
		if claim == nil {
			t.Fatal(err)
		}
		m = &Member{MemberSpec: spec} // the liar's own view of itself
	}
	return &Identity{Key: key, Cert: cert, Member: m}
}

func (g *testGroup) validMember(t testing.TB, name string) *Identity {
	now := time.Now()
	return g.member(t, name, now.Add(-time.Minute), now.Add(time.Hour), nil)
}

// testNode is an Endpoint on a Mux over one memnet socket.
type testNode struct {
	mux *transport.Mux
	ep  *Endpoint
}

// startEndpoint runs an Endpoint on a Mux over conn, accepting pipes,
// until the test ends.
func startEndpoint(t testing.TB, conn transport.PacketConn, id *Identity, bundle *TrustBundle, cfg Config, log *zap.Logger) (*transport.Mux, *Endpoint) {
	t.Helper()
	mux, err := transport.NewMux(conn, transport.Default(), log)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := NewEndpoint(id, bundle, cfg, muxDialer(mux), log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := mux.Accept(context.Background())
			if err != nil {
				return
			}
			ep.Serve(p)
		}
	}()
	t.Cleanup(func() {
		ep.Close()
		mux.Close()
		<-done
	})
	return mux, ep
}

func muxDialer(m *transport.Mux) DialFunc {
	return func(ctx context.Context, r netip.AddrPort) (Pipe, error) {
		p, err := m.Dial(ctx, r)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

func newTestNode(t testing.TB, net *memnet.Network, addr string, id *Identity, bundle *TrustBundle, cfg Config, log *zap.Logger) *testNode {
	t.Helper()
	conn, err := net.Listen(netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	mux, ep := startEndpoint(t, conn, id, bundle, cfg, log)
	return &testNode{mux: mux, ep: ep}
}

func testConfig() Config {
	cfg := Default()
	cfg.HandshakeTimeout = 5 * time.Second
	return cfg
}

func accept(t testing.TB, ep *Endpoint) *Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := ep.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return l
}

// collector gathers the packets a link delivers.
type collector struct {
	mu   sync.Mutex
	pkts [][]byte
	got  chan struct{}
}

func collect(l *Link) *collector {
	c := &collector{got: make(chan struct{}, 1024)}
	l.SetHandler(func(p []byte) {
		c.mu.Lock()
		c.pkts = append(c.pkts, append([]byte(nil), p...))
		c.mu.Unlock()
		select {
		case c.got <- struct{}{}:
		default:
		}
	})
	return c
}

func (c *collector) wait(t testing.TB, n int) [][]byte {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		if len(c.pkts) >= n {
			out := c.pkts
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("got %d packets, want %d", len(c.pkts), n)
		}
	}
}

func TestLink_AuthenticatesAndCarriesPackets(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	net := memnet.New(1)
	log := zaptest.NewLogger(t)
	alice, bob := g.validMember(t, "alice"), g.validMember(t, "bob")
	a := newTestNode(t, net, "10.0.0.1:4820", alice, g.bundle, testConfig(), log)
	b := newTestNode(t, net, "10.0.0.2:4820", bob, g.bundle, testConfig(), log)

	la, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
	if err != nil {
		t.Fatal(err)
	}
	lb := accept(t, b.ep)
	if la.Peer().Address != bob.Member.Address || lb.Peer().Address != alice.Member.Address {
		t.Fatal("links name the wrong peers")
	}
	if !la.Dialed() || lb.Dialed() {
		t.Fatal("roles wrong")
	}
	ca, cb := collect(la), collect(lb)
	for i := range 100 {
		la.Send(fmt.Appendf(nil, "a->b %d", i))
		lb.Send(fmt.Appendf(nil, "b->a %d", i))
	}
	for i, p := range cb.wait(t, 100)[:100] {
		if want := fmt.Sprintf("a->b %d", i); string(p) != want {
			t.Fatalf("b got %q, want %q", p, want)
		}
	}
	ca.wait(t, 100)
	if err := la.Send(make([]byte, MaxPayload+1)); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversized send: %v", err)
	}

	// Closing tells the peer.
	la.Close()
	select {
	case <-lb.Done():
		if !errors.Is(lb.Err(), ErrPeerClosed) {
			t.Fatalf("peer's link closed with %v", lb.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("peer not told of close")
	}
	if err := la.Send([]byte("x")); !errors.Is(err, ErrLinkClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestLink_RefusesBadCertificates(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	other := newTestGroup(t, "other-ca")
	now := time.Now()
	someoneElse := g.validMember(t, "eve").Member.Address
	for _, tc := range []struct {
		name    string
		member  func(t *testing.T) *Identity
		wantErr error
		wantLog string
	}{
		{"other CA", func(t *testing.T) *Identity { return other.validMember(t, "mallory") }, ErrUnknownCA, "not in the trust bundle"},
		{"expired", func(t *testing.T) *Identity {
			return g.member(t, "old", now.Add(-2*time.Hour), now.Add(-time.Hour), nil)
		}, ErrExpired, "expired"},
		{"address not its key's", func(t *testing.T) *Identity {
			return g.member(t, "liar", now.Add(-time.Minute), now.Add(time.Hour), &someoneElse)
		}, ErrAddressMismatch, "hashes to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			log := zap.New(core)
			net := memnet.New(2)
			server := newTestNode(t, net, "10.0.0.1:4820", g.validMember(t, "server"), g.bundle, testConfig(), log)
			bad := tc.member(t)
			// The bad member trusts both CAs so only the server refuses.
			both, _ := NewTrustBundle(g.ca.Cert, other.ca.Cert)
			client := newTestNode(t, net, "10.0.0.2:4820", bad, both, testConfig(), zap.NewNop())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if l, err := client.ep.Dial(ctx, netip.MustParseAddrPort("10.0.0.1:4820")); err == nil {
				l.Close()
				t.Fatal("bad member got a link")
			}
			refused := logs.FilterMessage("peer refused").All()
			if len(refused) == 0 {
				t.Fatal("no \"peer refused\" log line")
			}
			errText := fmt.Sprint(refused[0].ContextMap()["error"])
			if !strings.Contains(errText, tc.wantLog) || !strings.Contains(errText, bad.Member.Name) {
				t.Fatalf("log says %q; want it to name %q and say %q", errText, bad.Member.Name, tc.wantLog)
			}
			if len(server.ep.Links()) != 0 {
				t.Fatal("server kept a link")
			}
			_ = tc.wantErr
		})
	}
}

func TestLink_SimultaneousOpenGivesOneLink(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			net := memnet.New(seed)
			net.SetDefaultLink(memnet.LinkConfig{Latency: 5 * time.Millisecond})
			log := zaptest.NewLogger(t)
			a := newTestNode(t, net, "10.0.0.1:4820", g.validMember(t, "a"), g.bundle, testConfig(), log)
			b := newTestNode(t, net, "10.0.0.2:4820", g.validMember(t, "b"), g.bundle, testConfig(), log)
			var la, lb *Link
			var ea, eb error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				la, ea = a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
			}()
			go func() {
				defer wg.Done()
				lb, eb = b.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.1:4820"))
			}()
			wg.Wait()
			if ea != nil || eb != nil {
				t.Fatalf("dials: %v, %v", ea, eb)
			}
			if la.Dialed() == lb.Dialed() {
				t.Fatal("both sides have the same role")
			}
			if len(a.ep.Links()) != 1 || len(b.ep.Links()) != 1 {
				t.Fatalf("links: a %d, b %d; want exactly one each", len(a.ep.Links()), len(b.ep.Links()))
			}
			cb := collect(lb)
			la.Send([]byte("hello"))
			if got := cb.wait(t, 1); !bytes.Equal(got[0], []byte("hello")) {
				t.Fatalf("got %q", got[0])
			}
		})
	}
}

func TestLink_SurvivesPeerRebinding(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	net := memnet.New(3)
	log := zaptest.NewLogger(t)
	aConn, err := net.Listen(netip.MustParseAddrPort("10.0.0.1:4820"))
	if err != nil {
		t.Fatal(err)
	}
	_, aEP := startEndpoint(t, aConn, g.validMember(t, "a"), g.bundle, testConfig(), log)
	b := newTestNode(t, net, "10.0.0.2:4820", g.validMember(t, "b"), g.bundle, testConfig(), log)

	la, err := aEP.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
	if err != nil {
		t.Fatal(err)
	}
	lb := accept(t, b.ep)
	ca, cb := collect(la), collect(lb)
	la.Send([]byte("before"))
	cb.wait(t, 1)

	newAddr := aConn.Rebind()
	la.Send([]byte("after"))
	cb.wait(t, 2)
	if lb.Remote() != newAddr {
		t.Fatalf("b sends to %s, want the rebound %s", lb.Remote(), newAddr)
	}
	lb.Send([]byte("reply"))
	if got := ca.wait(t, 1); string(got[0]) != "reply" {
		t.Fatalf("a got %q", got[0])
	}
}

func TestLink_Rekeys(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	net := memnet.New(4)
	log := zaptest.NewLogger(t)
	cfg := testConfig()
	cfg.RekeyAfterRecords = 1024
	a := newTestNode(t, net, "10.0.0.1:4820", g.validMember(t, "a"), g.bundle, cfg, log)
	b := newTestNode(t, net, "10.0.0.2:4820", g.validMember(t, "b"), g.bundle, cfg, log)
	la, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
	if err != nil {
		t.Fatal(err)
	}
	lb := accept(t, b.ep)
	cb := collect(lb)
	oldID := la.LocalID()
	sent := 0
	deadline := time.Now().Add(10 * time.Second)
	for la.Stats().Rekeys == 0 && time.Now().Before(deadline) {
		if err := la.Send([]byte("payload")); err == nil {
			sent++
		}
		if sent%256 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if la.Stats().Rekeys == 0 {
		t.Fatal("no rekey after the record limit")
	}
	if la.LocalID() == oldID {
		t.Fatal("session not replaced")
	}
	for range 10 {
		la.Send([]byte("on new keys"))
	}
	got := cb.wait(t, sent+10)
	if string(got[len(got)-1]) != "on new keys" {
		t.Fatalf("last packet %q", got[len(got)-1])
	}
	if len(a.ep.Links()) != 1 || len(b.ep.Links()) != 1 {
		t.Fatal("rekey changed the number of links")
	}
}

func TestLink_DeadPeerDetected(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	net := memnet.New(5)
	log := zaptest.NewLogger(t)
	cfg := testConfig()
	cfg.KeepaliveInterval = 100 * time.Millisecond
	cfg.DeadAfter = 400 * time.Millisecond
	a := newTestNode(t, net, "10.0.0.1:4820", g.validMember(t, "a"), g.bundle, cfg, log)
	b := newTestNode(t, net, "10.0.0.2:4820", g.validMember(t, "b"), g.bundle, cfg, log)
	la, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
	if err != nil {
		t.Fatal(err)
	}
	accept(t, b.ep)
	time.Sleep(time.Second) // keepalives hold the idle link up
	select {
	case <-la.Done():
		t.Fatalf("idle link died: %v", la.Err())
	default:
	}
	net.SetDefaultLink(memnet.LinkConfig{Loss: 1})
	select {
	case <-la.Done():
		if !errors.Is(la.Err(), ErrPeerTimeout) {
			t.Fatalf("closed with %v", la.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("dead peer not detected")
	}
}

// recordingConn wraps a socket: while hold is set, it keeps outgoing sealed
// records instead of sending them, so a test can replay and reorder them.
type recordingConn struct {
	transport.PacketConn
	mu   sync.Mutex
	hold bool
	kept [][]byte
}

func (c *recordingConn) WriteTo(b []byte, to netip.AddrPort) error {
	c.mu.Lock()
	if c.hold && len(b) > 0 && b[0] == transport.SealedRecordType {
		c.kept = append(c.kept, append([]byte(nil), b...))
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.PacketConn.WriteTo(b, to)
}

// WriteBatch holds sealed records too: a Mux that is corked (while it
// handles a batch it read) sends what it holds with WriteBatch.
func (c *recordingConn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	for i := range min(len(bufs), len(to)) {
		if err := c.WriteTo(bufs[i], to[i]); err != nil {
			return i, err
		}
	}
	return min(len(bufs), len(to)), nil
}

type udpNode struct {
	conn *recordingConn
	mux  *transport.Mux
	ep   *Endpoint
}

func newUDPNode(t *testing.T, id *Identity, bundle *TrustBundle, log *zap.Logger) *udpNode {
	t.Helper()
	raw, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udp.Default())
	if err != nil {
		t.Fatal(err)
	}
	conn := &recordingConn{PacketConn: raw}
	mux, ep := startEndpoint(t, conn, id, bundle, testConfig(), log)
	return &udpNode{conn: conn, mux: mux, ep: ep}
}

func TestLink_UDP_BadDatagramsDroppedAndCounted(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	log := zaptest.NewLogger(t)
	a := newUDPNode(t, g.validMember(t, "a"), g.bundle, log)
	b := newUDPNode(t, g.validMember(t, "b"), g.bundle, log)
	la, err := a.ep.Dial(context.Background(), b.mux.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	lb := accept(t, b.ep)
	cb := collect(lb)

	// Hold 50 records back, then deliver them in reverse order: all count.
	a.conn.mu.Lock()
	a.conn.hold = true
	a.conn.mu.Unlock()
	for i := range 50 {
		la.Send(fmt.Appendf(nil, "p%d", i))
	}
	a.conn.mu.Lock()
	kept := a.conn.kept
	a.conn.hold, a.conn.kept = false, nil
	a.conn.mu.Unlock()
	if len(kept) != 50 {
		t.Fatalf("held %d records", len(kept))
	}
	attacker, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udp.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	to := b.mux.LocalAddr()
	for i := len(kept) - 1; i >= 0; i-- {
		a.conn.PacketConn.WriteTo(kept[i], to) // from a's own socket
	}
	cb.wait(t, 50)

	// Replays of all of them, garbage, truncated and forged records: none
	// is delivered, every one is counted, nothing breaks.
	before := b.mux.Stats()
	for _, rec := range kept {
		attacker.WriteTo(rec, to)
	}
	forged := append([]byte(nil), kept[0]...)
	forged[len(forged)-1] ^= 1
	forged[12] = 0xff // a sequence number never used
	attacker.WriteTo(forged, to)
	attacker.WriteTo([]byte("GET / HTTP/1.1\r\n\r\n"), to)
	attacker.WriteTo([]byte{transport.SealedRecordType, 1, 2}, to)
	attacker.WriteTo(kept[0][:20], to)
	attacker.WriteTo([]byte{22, 0xfe, 0xfd, 0, 0}, to)
	deadline := time.Now().Add(5 * time.Second)
	for lb.Stats().DropsIn < 52 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := lb.Stats().DropsIn; got != 52 {
		t.Fatalf("link dropped %d records, want 50 replays + 1 forged + 1 truncated", got)
	}
	after := b.mux.Stats()
	if after.Garbage-before.Garbage != 1 || after.Short-before.Short != 2 {
		t.Fatalf("mux counters: before %+v after %+v", before, after)
	}
	if n := len(cb.wait(t, 50)); n != 50 {
		t.Fatalf("delivered %d packets, want exactly the 50 originals", n)
	}
	// The link still works both ways: replays from another address did
	// not move b's idea of where a is.
	ca := collect(la)
	lb.Send([]byte("still here"))
	ca.wait(t, 1)
}

func TestLink_UDP_SurvivesSocketRebind(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	log := zaptest.NewLogger(t)
	a := newUDPNode(t, g.validMember(t, "a"), g.bundle, log)
	b := newUDPNode(t, g.validMember(t, "b"), g.bundle, log)
	la, err := a.ep.Dial(context.Background(), b.mux.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	lb := accept(t, b.ep)
	ca, cb := collect(la), collect(lb)
	la.Send([]byte("one"))
	cb.wait(t, 1)

	fresh, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udp.Default())
	if err != nil {
		t.Fatal(err)
	}
	oldPort := a.mux.LocalAddr().Port()
	if err := a.mux.Rebind(fresh); err != nil {
		t.Fatal(err)
	}
	if a.mux.LocalAddr().Port() == oldPort {
		t.Fatal("rebind kept the port")
	}
	la.Send([]byte("two"))
	cb.wait(t, 2)
	if lb.Remote() != a.mux.LocalAddr() {
		t.Fatalf("b follows %s, want %s", lb.Remote(), a.mux.LocalAddr())
	}
	lb.Send([]byte("back"))
	ca.wait(t, 1)
}

// The record layer repeats transport's wire constants (both are leaves);
// this is where they are held equal.
func TestWireConstantsMatchTransport(t *testing.T) {
	if record.TypeByte != transport.SealedRecordType || record.ConnIDLen != transport.ConnIDLen ||
		record.HeaderLen != transport.SealedHeaderLen {
		t.Fatal("security/record and transport disagree on the sealed record header")
	}
}
