package simnet

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

// member returns a member named name with an address derived from it.
func member(name string) *security.Member {
	sum := sha256.Sum256([]byte(name))
	var a security.Address
	copy(a[:], sum[:])
	return &security.Member{MemberSpec: security.MemberSpec{Name: name}, Address: a}
}

// hostAddr is node i's address: one host per node.
func hostAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 4242)
}

// newFabric returns a Fabric closed when the test ends.
func newFabric(t testing.TB, cfg Config) *Fabric {
	t.Helper()
	f := New(cfg)
	t.Cleanup(func() { f.Close() })
	return f
}

// listen registers node i.
func listen(t testing.TB, f *Fabric, i int) *Linker {
	t.Helper()
	l, err := f.Listen(member(fmt.Sprintf("node%d", i)), hostAddr(i))
	if err != nil {
		t.Fatalf("Listen(node%d): %v", i, err)
	}
	return l
}

// connect dials b from a and returns both ends: a's, then b's.
func connect(t testing.TB, a, b *Linker) (*Link, *Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		l   overlay.Link
		err error
	}
	acc := make(chan result, 1)
	go func() {
		l, err := b.Accept(ctx)
		acc <- result{l, err}
	}()
	la, err := a.Dial(ctx, b.LocalAddr())
	if err != nil {
		t.Fatalf("Dial(%v): %v", b.LocalAddr(), err)
	}
	r := <-acc
	if r.err != nil {
		t.Fatalf("Accept at %v: %v", b.LocalAddr(), r.err)
	}
	return la.(*Link), r.l.(*Link)
}

// mustSend sends pkt on l.
func mustSend(t testing.TB, l *Link, pkt []byte) {
	t.Helper()
	if err := l.Send(pkt); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

// seqPacket is a packet from sender src carrying sequence number seq.
func seqPacket(src, seq int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], uint32(src))
	binary.BigEndian.PutUint32(b[4:], uint32(seq))
	return b[:]
}

func parseSeqPacket(b []byte) (src, seq int) {
	return int(binary.BigEndian.Uint32(b[:4])), int(binary.BigEndian.Uint32(b[4:8]))
}

// isDone reports whether c is closed.
func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
