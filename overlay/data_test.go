package overlay

import (
	"errors"
	"net/netip"
	"testing"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
)

// sinkLink is a link that keeps the last packet sent and allocates
// nothing, so the node's own allocations show.
type sinkLink struct {
	peer *security.Member
	last []byte
	sent int
	done chan struct{}
}

func (l *sinkLink) Send(pkt []byte) error {
	l.last = append(l.last[:0], pkt...)
	l.sent++
	return nil
}
func (l *sinkLink) SetHandler(func([]byte))    {}
func (l *sinkLink) Peer() *security.Member     { return l.peer }
func (l *sinkLink) Remote() netip.AddrPort     { return netip.MustParseAddrPort("192.0.2.1:1") }
func (l *sinkLink) Dialed() bool               { return false }
func (l *sinkLink) Done() <-chan struct{}      { return l.done }
func (l *sinkLink) Close() error               { return nil }
func (l *sinkLink) lastPacket() []byte         { return l.last }
func newSinkLink(m *security.Member) *sinkLink { return &sinkLink{peer: m, done: make(chan struct{})} }

func TestNode_Data(t *testing.T) {
	self := &security.Member{MemberSpec: security.MemberSpec{Name: "self"}, Address: Address{0x10}}
	other := &security.Member{MemberSpec: security.MemberSpec{Name: "other"}, Address: Address{0x20}}
	n, err := New(self, &testLinker{accept: make(chan Link)}, Default(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	pkt := make([]byte, DataHeaderLen+1400)
	if err := n.SendData(other.Address, pkt); !errors.Is(err, ErrNoLink) {
		t.Fatalf("SendData with no link: %v, want ErrNoLink", err)
	}
	l := newSinkLink(other)
	n.addLink(l, KindNear)
	p := n.peers[other.Address]

	var got []byte
	var from *security.Member
	n.HandleData(func(m *security.Member, b []byte) { from, got = m, b })
	copy(pkt[DataHeaderLen:], "frame")
	if err := n.SendData(other.Address, pkt); err != nil {
		t.Fatal(err)
	}
	// What went on the link is a data packet the peer's node hands over.
	n.receive(p, l.lastPacket())
	if from != other || string(got[:5]) != "frame" || len(got) != 1400 {
		t.Fatalf("received %q from %v", got[:5], from)
	}

	sendAllocs := testing.AllocsPerRun(100, func() {
		if err := n.SendData(other.Address, pkt); err != nil {
			t.Fatal(err)
		}
	})
	in := append([]byte(nil), l.lastPacket()...)
	recvAllocs := testing.AllocsPerRun(100, func() { n.receive(p, in) })
	if sendAllocs != 0 || recvAllocs != 0 {
		t.Errorf("allocations per packet: send %v, receive %v, want 0", sendAllocs, recvAllocs)
	}
}
