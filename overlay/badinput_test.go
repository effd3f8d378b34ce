package overlay

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/security"
)

// testLink is one end of an in-process link: what one end sends, the
// other end's handler receives, synchronously.
type testLink struct {
	peer   *security.Member
	other  *testLink
	dialed bool
	mu     sync.Mutex
	h      func([]byte)
	done   chan struct{}
	once   sync.Once
}

func linkPair(a, b *security.Member) (*testLink, *testLink) {
	x := &testLink{peer: b, done: make(chan struct{}), dialed: true}
	y := &testLink{peer: a, done: make(chan struct{})}
	x.other, y.other = y, x
	return x, y
}

func (l *testLink) Send(pkt []byte) error {
	select {
	case <-l.done:
		return errors.New("closed")
	default:
	}
	l.other.mu.Lock()
	h := l.other.h
	l.other.mu.Unlock()
	if h != nil {
		h(append([]byte(nil), pkt...))
	}
	return nil
}
func (l *testLink) SetHandler(h func([]byte)) { l.mu.Lock(); l.h = h; l.mu.Unlock() }
func (l *testLink) Peer() *security.Member    { return l.peer }
func (l *testLink) Remote() netip.AddrPort    { return netip.MustParseAddrPort("192.0.2.1:1") }
func (l *testLink) Dialed() bool              { return l.dialed }
func (l *testLink) Done() <-chan struct{}     { return l.done }
func (l *testLink) Close() error {
	l.once.Do(func() { close(l.done) })
	l.other.once.Do(func() { close(l.other.done) })
	return nil
}

// testLinker hands out the links a test pushes.
type testLinker struct{ accept chan Link }

func (t *testLinker) Dial(context.Context, netip.AddrPort) (Link, error) {
	return nil, errors.New("no dialing in this test")
}
func (t *testLinker) Accept(ctx context.Context) (Link, error) {
	select {
	case l := <-t.accept:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (t *testLinker) LocalAddr() netip.AddrPort { return netip.MustParseAddrPort("192.0.2.2:1") }
func (t *testLinker) Close() error              { return nil }

// TestNode_BadInputIsDroppedAndCounted feeds a node garbage from a linked
// peer: every message is dropped and counted, nothing panics, and the
// node still answers a well-formed ping on the same link.
func TestNode_BadInputIsDroppedAndCounted(t *testing.T) {
	self := &security.Member{MemberSpec: security.MemberSpec{Name: "self"}, Address: Address{0x10}}
	evil := &security.Member{MemberSpec: security.MemberSpec{Name: "evil"}, Address: Address{0x20}}
	linker := &testLinker{accept: make(chan Link, 1)}
	n, err := New(self, linker, Default(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close()
	ours, theirs := linkPair(evil, self)
	pongs := make(chan uint64, 16)
	ours.SetHandler(func(pkt []byte) {
		if sent, ok := PongSent(pkt); ok {
			pongs <- sent
		}
	})
	linker.accept <- theirs
	deadline := time.Now().Add(5 * time.Second)
	for len(n.Peers()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	hdr := func(t Type, flags Flags, payload []byte) []byte {
		h := Header{Type: t, Flags: flags, TTL: 5, Src: evil.Address, Dst: self.Address}
		return appendMessage(nil, &h, payload)
	}
	bad := [][]byte{
		nil, {1}, []byte("GET / HTTP/1.1\r\n\r\n"),
		append([]byte{9}, hdr(TypeEcho, 0, nil)[1:]...), // version
		hdr(TypeEcho, 0x80, nil),                        // unknown flag
		hdr(TypeEcho, FlagVia, nil)[:HeaderLen+4],       // via cut short
		hdr(TypePing, 0, []byte{1, 2, 3}),               // short ping
		hdr(TypeNeighbors, 0, []byte{255}),              // too many entries
		hdr(TypeConnect, 0, []byte{0, 0}),               // truncated
		hdr(TypeLookup, FlagClosest, make([]byte, 40)),  // zero garbage
		hdr(TypeEcho, 0, nil),                           // empty echo
		hdr(0x0e, 0, nil),                               // unknown link-local type
		hdr(0xfe, 0, nil),                               // no handler
	}
	dropped := func() uint64 { c := n.Status().Counters; return c.Malformed + c.UnknownType + c.NoRoute + c.TTLExpired }
	for i, b := range bad {
		before := dropped()
		ours.Send(b)
		if dropped() < before+1 {
			t.Errorf("bad message %d (%x) was not counted as a drop", i, b)
		}
	}
	ours.Send(PingMessage(evil.Address, self.Address, 42))
	select {
	case sent := <-pongs:
		if sent != 42 {
			t.Fatalf("pong echoes %d", sent)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong after the garbage")
	}
	if len(n.Peers()) != 1 {
		t.Fatal("the link is gone")
	}
}
