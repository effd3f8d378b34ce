package security

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v5/deadline"
	"go.uber.org/zap/zaptest"
)

// memPipe is one end of an in-memory pipe pair, standing in for a pipe
// the caller provides (the overlay's routed pipes): DTLS records go to
// the other end's control queue after delay, sealed records straight to
// its handler.
type memPipe struct {
	local   [8]byte
	remote  netip.AddrPort // names the other end's node
	delay   time.Duration
	other   *memPipe
	control chan []byte
	timeout *deadline.Deadline
	redial  func(ctx context.Context) (Pipe, error)

	handler     atomic.Pointer[func([]byte, netip.AddrPort)]
	established atomic.Bool

	mu        sync.Mutex
	failErr   error
	failed    chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

var errTestGlare = errors.New("test: lost a simultaneous open")

// memPipePair returns the two ends of a pipe between the nodes named by
// aName and bName (each end's Remote names the other node).
func memPipePair(aName, bName netip.AddrPort, delay time.Duration) (a, b *memPipe) {
	mk := func(remote netip.AddrPort, id byte) *memPipe {
		return &memPipe{
			local: [8]byte{id, byte(time.Now().UnixNano())}, remote: remote, delay: delay,
			control: make(chan []byte, 64), timeout: deadline.New(),
			failed: make(chan struct{}), closed: make(chan struct{}),
		}
	}
	a, b = mk(bName, 0xa), mk(aName, 0xb)
	a.other, b.other = b, a
	return a, b
}

func (p *memPipe) ControlConn() net.PacketConn { return memControl{p} }
func (p *memPipe) LocalID() [8]byte            { return p.local }
func (p *memPipe) Remote() netip.AddrPort      { return p.remote }
func (p *memPipe) SetRemote(netip.AddrPort)    {}
func (p *memPipe) Established()                { p.established.Store(true) }
func (p *memPipe) Glared() bool                { return errors.Is(p.err(), errTestGlare) }

func (p *memPipe) SetHandler(h func([]byte, netip.AddrPort)) {
	if h == nil {
		p.handler.Store(nil)
		return
	}
	p.handler.Store(&h)
}

func (p *memPipe) Send(b []byte) error {
	select {
	case <-p.closed:
		return net.ErrClosed
	default:
	}
	o := p.other
	select {
	case <-o.closed:
		return nil
	default:
	}
	if h := o.handler.Load(); h != nil {
		(*h)(bytes.Clone(b), o.remote)
	}
	return nil
}

func (p *memPipe) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return nil
}

func (p *memPipe) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failErr == nil {
		p.failErr = err
		close(p.failed)
	}
}

func (p *memPipe) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failErr
}

// redialingPipe is a memPipe that is also a Redialer.
type redialingPipe struct{ *memPipe }

func (p redialingPipe) Redial(ctx context.Context) (Pipe, error) { return p.redial(ctx) }

type memControl struct{ p *memPipe }

func (c memControl) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.p.control:
		return copy(b, d), net.UDPAddrFromAddrPort(c.p.remote), nil
	case <-c.p.failed:
		return 0, nil, c.p.err()
	case <-c.p.closed:
		return 0, nil, net.ErrClosed
	case <-c.p.timeout.Done():
		return 0, nil, timeoutErr{}
	}
}

func (c memControl) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.p.closed:
		return 0, net.ErrClosed
	case <-c.p.failed:
		return len(b), nil
	default:
	}
	d, o := bytes.Clone(b), c.p.other
	time.AfterFunc(c.p.delay, func() {
		select {
		case o.control <- d:
		default:
		}
	})
	return len(b), nil
}

func (c memControl) Close() error                      { c.p.fail(errors.New("detached")); return nil }
func (c memControl) LocalAddr() net.Addr               { return &net.UDPAddr{} }
func (c memControl) SetDeadline(t time.Time) error     { return c.SetReadDeadline(t) }
func (c memControl) SetReadDeadline(t time.Time) error { c.p.timeout.Set(t); return nil }
func (c memControl) SetWriteDeadline(time.Time) error  { return nil }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "test: i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// pipeEndpoint is an endpoint whose DialFunc must never be used: every
// pipe comes from the test.
func pipeEndpoint(t *testing.T, g *testGroup, name string, cfg Config) *Endpoint {
	t.Helper()
	noDial := func(_ context.Context, r netip.AddrPort) (Pipe, error) {
		t.Errorf("%s: DialFunc called for %s; pipes come from the caller", name, r)
		return nil, errors.New("no dialing here")
	}
	ep, err := NewEndpoint(g.validMember(t, name), g.bundle, cfg, noDial, zaptest.NewLogger(t).Named(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// linkSink collects the links a ServePipe hands over.
type linkSink struct {
	ch    chan *Link
	close bool // close each link as it arrives (as a refusing owner does)
}

func newLinkSink() *linkSink { return &linkSink{ch: make(chan *Link, 8)} }

func (s *linkSink) accept(l *Link) {
	if s.close {
		l.Close()
	}
	s.ch <- l
}

func (s *linkSink) next(t *testing.T) *Link {
	t.Helper()
	select {
	case l := <-s.ch:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no link handed over")
		return nil
	}
}

func nothingIn(t *testing.T, ep *Endpoint, s *linkSink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ep.Accept(ctx); err == nil {
		t.Fatal("a link went to Accept")
	}
	if s != nil {
		select {
		case <-s.ch:
			t.Fatal("an extra link was handed over")
		default:
		}
	}
}

var (
	nodeA = netip.MustParseAddrPort("[100::a]:1")
	nodeB = netip.MustParseAddrPort("[100::b]:1")
)

func TestDialPipe_ServePipe_LinkBypassesAccept(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	a, b := pipeEndpoint(t, g, "a", testConfig()), pipeEndpoint(t, g, "b", testConfig())
	pa, pb := memPipePair(nodeA, nodeB, time.Millisecond)
	sink := newLinkSink()
	b.ServePipe(pb, sink.accept)
	la, err := a.DialPipe(context.Background(), pa)
	if err != nil {
		t.Fatal(err)
	}
	lb := sink.next(t)
	if !la.Dialed() || lb.Dialed() || la.Remote() != nodeB || lb.Remote() != nodeA {
		t.Fatal("roles or remotes wrong")
	}
	for end := time.Now().Add(5 * time.Second); !pa.established.Load() || !pb.established.Load(); {
		if time.Now().After(end) { // the acceptor's comes after handing over
			t.Fatal("pipes not told the handshake is over")
		}
		time.Sleep(time.Millisecond)
	}
	got := collect(lb)
	la.Send([]byte("over a pipe the caller made"))
	if p := got.wait(t, 1); string(p[0]) != "over a pipe the caller made" {
		t.Fatalf("got %q", p[0])
	}
	nothingIn(t, b, sink)

	// A failed handshake closes the pipe DialPipe was given.
	pc, _ := memPipePair(nodeA, nodeB, time.Millisecond) // nobody serves the far end
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := a.DialPipe(ctx, pc); err == nil {
		t.Fatal("dial with no peer succeeded")
	}
	select {
	case <-pc.closed:
	default:
		t.Fatal("DialPipe left a failed pipe open")
	}
}

// TestDialPipe_GlaredWaitsForThePeersLink: a DialPipe whose pipe gives
// itself up returns the link the peer's handshake makes on a pipe with
// the same Remote, and the ServePipe's accept does not see it.
func TestDialPipe_GlaredWaitsForThePeersLink(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	a, b := pipeEndpoint(t, g, "a", testConfig()), pipeEndpoint(t, g, "b", testConfig())
	sink := newLinkSink()

	// b's own dial to a gives up at once (its owner saw a's hello first).
	lost, _ := memPipePair(nodeB, nodeA, time.Millisecond)
	lost.fail(errTestGlare)
	type result struct {
		l   *Link
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := b.DialPipe(context.Background(), lost)
		done <- result{l, err}
	}()
	time.Sleep(20 * time.Millisecond) // b's DialPipe is waiting

	pa, pb := memPipePair(nodeA, nodeB, time.Millisecond)
	b.ServePipe(pb, sink.accept)
	la, err := a.DialPipe(context.Background(), pa)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("glared DialPipe: %v", r.err)
	}
	if r.l.Dialed() || r.l.Peer().Address != la.ep.Identity().Member.Address {
		t.Fatal("the glared dial did not get the peer's link")
	}
	nothingIn(t, b, sink)
	if len(a.Links()) != 1 || len(b.Links()) != 1 {
		t.Fatalf("links: %d and %d, want one each", len(a.Links()), len(b.Links()))
	}
}

// TestDialPipe_UnclaimedLinkGoesToServePipesAccept: a link delivered to
// a DialPipe that then completes its own handshake goes to the accept
// function of the ServePipe that made it, never to Accept, and the
// accept function may close it (no lock is held).
func TestDialPipe_UnclaimedLinkGoesToServePipesAccept(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	a, b := pipeEndpoint(t, g, "a", testConfig()), pipeEndpoint(t, g, "b", testConfig())
	sinkA, sinkB := newLinkSink(), newLinkSink()
	sinkB.close = true

	// b dials a slowly: its handshake is still running when a's is done.
	slowB, slowA := memPipePair(nodeB, nodeA, 150*time.Millisecond)
	a.ServePipe(slowA, sinkA.accept)
	type result struct {
		l   *Link
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := b.DialPipe(context.Background(), slowB)
		done <- result{l, err}
	}()
	time.Sleep(20 * time.Millisecond)
	pa, pb := memPipePair(nodeA, nodeB, time.Millisecond)
	b.ServePipe(pb, sinkB.accept)
	la, err := a.DialPipe(context.Background(), pa)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("slow DialPipe: %v", r.err)
	}
	if !r.l.Dialed() {
		t.Fatal("the slow dial returned the link it did not open")
	}
	handed := sinkB.next(t) // a's link, which waited on b's dial
	if handed.Dialed() {
		t.Fatal("handed the wrong link")
	}
	select {
	case <-la.Done(): // b's sink closed it and told a
	case <-time.After(5 * time.Second):
		t.Fatal("the handed-over link was not closed")
	}
	nothingIn(t, b, nil)
	sinkA.next(t) // b's slow link, accepted by a
	nothingIn(t, a, sinkA)
}

// TestDialPipe_RekeyUsesRedialer: the dialer of a link over a caller's
// pipe rekeys over the pipe its Redial returns, not through the DialFunc.
func TestDialPipe_RekeyUsesRedialer(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	cfg := testConfig()
	cfg.HandshakeTimeout = time.Second
	cfg.RekeyAfterRecords = 1 << 10
	a, b := pipeEndpoint(t, g, "a", cfg), pipeEndpoint(t, g, "b", cfg)
	sink := newLinkSink()
	var redials atomic.Int32
	var newPair func() Pipe
	newPair = func() Pipe {
		pa, pb := memPipePair(nodeA, nodeB, time.Millisecond)
		pa.redial = func(context.Context) (Pipe, error) {
			redials.Add(1)
			return newPair(), nil
		}
		b.ServePipe(pb, sink.accept)
		return redialingPipe{pa}
	}
	la, err := a.DialPipe(context.Background(), newPair())
	if err != nil {
		t.Fatal(err)
	}
	lb := sink.next(t)
	got := collect(lb)
	for range 1100 { // past RekeyAfterRecords
		la.Send([]byte("x"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for la.Stats().Rekeys == 0 || lb.Stats().Rekeys == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no rekey")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if redials.Load() == 0 {
		t.Fatal("the rekey did not ask the pipe for its successor")
	}
	n := len(got.wait(t, 1))
	la.Send([]byte("after"))
	if p := got.wait(t, n+1); string(p[len(p)-1]) != "after" {
		t.Fatalf("last packet %q", p[len(p)-1])
	}
	nothingIn(t, b, sink)
}
