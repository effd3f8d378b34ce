package transport

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"

	"go.uber.org/zap"
)

// quietConn is a PacketConn that never receives and records what is sent,
// so dispatch can be driven directly.
type quietConn struct {
	mu     sync.Mutex
	sent   [][]byte
	closed chan struct{}
	once   sync.Once
}

func newQuietConn() *quietConn { return &quietConn{closed: make(chan struct{})} }

func (c *quietConn) ReadBatch([][]byte, []int, []netip.AddrPort) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}

func (c *quietConn) WriteTo(b []byte, _ netip.AddrPort) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, append([]byte(nil), b...))
	return nil
}

func (c *quietConn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	for i := range bufs {
		c.WriteTo(bufs[i], to[i])
	}
	return len(bufs), nil
}

func (c *quietConn) LocalAddr() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.1:1") }
func (c *quietConn) BatchSize() int            { return 8 }
func (c *quietConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func newTestMux(t testing.TB, cfg Config) *Mux {
	t.Helper()
	m, err := NewMux(newQuietConn(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// clientHello builds the start of a DTLS ClientHello record with random r.
func clientHello(r byte) []byte {
	b := make([]byte, 13+12+2+32+8)
	b[0] = dtlsHandshake
	b[1], b[2] = 0xfe, 0xfd
	recordLen := len(b) - 13
	b[11], b[12] = byte(recordLen>>8), byte(recordLen)
	h := b[13:]
	h[0] = clientHelloType
	bodyLen := recordLen - 12
	h[3] = byte(bodyLen)
	h[11] = byte(bodyLen)
	for i := range 32 {
		b[27+i] = r
	}
	return b
}

func sealedRecord(id ConnID, n int) []byte {
	b := make([]byte, SealedHeaderLen+n)
	b[0] = SealedRecordType
	copy(b[1:], id[:])
	return b
}

var (
	peerA = netip.MustParseAddrPort("192.0.2.1:4000")
	peerB = netip.MustParseAddrPort("[2001:db8::2]:4000")
)

func TestClientHelloRandom(t *testing.T) {
	hello := clientHello(7)
	r, ok := ClientHelloRandom(hello)
	if !ok || len(r) != 32 || r[0] != 7 || r[31] != 7 {
		t.Fatalf("ClientHelloRandom = %v, %v", r, ok)
	}
	for name, mutate := range map[string]func([]byte){
		"not handshake":      func(b []byte) { b[0] = 23 },
		"epoch 1":            func(b []byte) { b[4] = 1 },
		"server hello":       func(b []byte) { b[13] = 2 },
		"later fragment":     func(b []byte) { b[13+8] = 1 },
		"record length lies": func(b []byte) { b[11] = 0xff },
	} {
		b := clientHello(7)
		mutate(b)
		if _, ok := ClientHelloRandom(b); ok {
			t.Errorf("%s: accepted as ClientHello", name)
		}
	}
	if _, ok := ClientHelloRandom(hello[:40]); ok {
		t.Error("truncated hello accepted")
	}
}

func TestMux_DropsAndCounts(t *testing.T) {
	m := newTestMux(t, Default())
	m.dispatch(nil, peerA)
	m.dispatch([]byte{0x99, 1, 2}, peerA)           // garbage
	m.dispatch([]byte{SealedRecordType, 1}, peerA)  // short
	m.dispatch(sealedRecord(ConnID{9}, 10), peerA)  // unknown ID
	m.dispatch([]byte{23, 0xfe, 0xfd, 0, 1}, peerA) // short DTLS
	appData := make([]byte, 40)
	appData[0] = 23
	m.dispatch(appData, peerA) // DTLS, no session, not a hello
	cid := make([]byte, 40)
	cid[0] = dtlsCIDRecord
	m.dispatch(cid, peerA) // CID of no session
	got := m.Stats()
	want := Stats{Garbage: 1, Short: 3, UnknownID: 2, NoSession: 1}
	if got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
	if m.Pipes() != 0 {
		t.Fatalf("garbage created %d pipes", m.Pipes())
	}
}

func TestMux_OnlyClientHelloCreatesState_Bounded(t *testing.T) {
	cfg := Default()
	cfg.MaxPending = 3
	m := newTestMux(t, cfg)
	for port := range uint16(10) {
		m.dispatch(clientHello(byte(port)), netip.AddrPortFrom(peerA.Addr(), 5000+port))
	}
	if got := m.Pipes(); got != 3 {
		t.Fatalf("pipes = %d, want 3 (max_pending)", got)
	}
	if s := m.Stats(); s.Accepted != 3 || s.PendingFull != 7 {
		t.Fatalf("stats = %+v", s)
	}
	// A retransmitted hello goes to the same session.
	m.dispatch(clientHello(0), netip.AddrPortFrom(peerA.Addr(), 5000))
	if got := m.Pipes(); got != 3 {
		t.Fatalf("retransmission created a pipe: %d", got)
	}
	// Finishing a handshake frees a place.
	p, err := m.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.Established()
	m.dispatch(clientHello(42), netip.AddrPortFrom(peerA.Addr(), 6000))
	if got := m.Pipes(); got != 4 {
		t.Fatalf("pipes = %d after one established, want 4", got)
	}
}

func TestMux_Glare_HigherRandomWins(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ours       byte
		theirs     byte
		weLose     bool
		wantPipes  int
		wantAccept bool
	}{
		{"peer higher", 1, 9, true, 2, true},
		{"peer lower", 9, 1, false, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMux(t, Default())
			dialed, err := m.Dial(context.Background(), peerA)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dialed.ControlConn().WriteTo(clientHello(tc.ours), nil); err != nil {
				t.Fatal(err)
			}
			m.dispatch(clientHello(tc.theirs), peerA)
			if dialed.Glared() != tc.weLose {
				t.Fatalf("Glared = %v, want %v", dialed.Glared(), tc.weLose)
			}
			if m.Pipes() != tc.wantPipes {
				t.Fatalf("pipes = %d, want %d", m.Pipes(), tc.wantPipes)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = m.Accept(ctx)
			if (err == nil) != tc.wantAccept {
				t.Fatalf("Accept err = %v, want accepted=%v", err, tc.wantAccept)
			}
		})
	}
}

func TestMux_DialWaitsForHandshakeToSameAddress(t *testing.T) {
	m := newTestMux(t, Default())
	first, err := m.Dial(context.Background(), peerB)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *Pipe)
	go func() {
		p, _ := m.Dial(context.Background(), peerB)
		done <- p
	}()
	select {
	case <-done:
		t.Fatal("second dial did not wait for the first handshake")
	default:
	}
	first.Established()
	second := <-done
	if second == nil || second.LocalID() == first.LocalID() {
		t.Fatal("second dial failed or reused the connection ID")
	}
}

func TestMux_SealedRecordsFollowConnectionID(t *testing.T) {
	m := newTestMux(t, Default())
	p, _ := m.Dial(context.Background(), peerA)
	p.Established()
	var got [][]byte
	var froms []netip.AddrPort
	p.SetHandler(func(b []byte, from netip.AddrPort) {
		got = append(got, append([]byte(nil), b...))
		froms = append(froms, from)
	})
	rec := sealedRecord(p.LocalID(), 5)
	m.dispatch(rec, peerA)
	m.dispatch(rec, peerB) // the peer moved: still this session
	if len(got) != 2 || !bytes.Equal(got[0], rec) || froms[1] != peerB {
		t.Fatalf("handler got %d records from %v", len(got), froms)
	}
	p.Close()
	m.dispatch(rec, peerA)
	if len(got) != 2 || m.Stats().UnknownID != 1 {
		t.Fatal("closed pipe still receives")
	}
}

func TestMux_Dispatch_NoAllocs(t *testing.T) {
	m := newTestMux(t, Default())
	p, _ := m.Dial(context.Background(), peerA)
	p.Established()
	var n int
	p.SetHandler(func(b []byte, _ netip.AddrPort) { n += len(b) })
	rec := sealedRecord(p.LocalID(), 1400)
	if allocs := testing.AllocsPerRun(1000, func() { m.dispatch(rec, peerA) }); allocs != 0 {
		t.Fatalf("dispatch allocates %v times per sealed record", allocs)
	}
}

func BenchmarkMux_Demux(b *testing.B) {
	m := newTestMux(b, Default())
	p, _ := m.Dial(context.Background(), peerA)
	p.Established()
	var n int
	p.SetHandler(func(rec []byte, _ netip.AddrPort) { n += len(rec) })
	rec := sealedRecord(p.LocalID(), 1400)
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		m.dispatch(rec, peerA)
	}
}

func FuzzClientHelloRandom_NoPanic(f *testing.F) {
	f.Add(clientHello(1))
	f.Add([]byte{22})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := ClientHelloRandom(b)
		if ok && (len(r) != 32 || b[0] != dtlsHandshake) {
			t.Fatalf("accepted %x with random %x", b, r)
		}
	})
}

// FuzzMux_Dispatch_NoPanic feeds arbitrary datagrams from two addresses
// into a Mux with an established and a handshaking session, and checks
// that nothing panics and the Mux's bookkeeping stays consistent.
func FuzzMux_Dispatch_NoPanic(f *testing.F) {
	f.Add(clientHello(3), false)
	f.Add(sealedRecord(ConnID{}, 3), true)
	f.Add([]byte{dtlsCIDRecord, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, fromB bool) {
		cfg := Default()
		cfg.MaxPending = 2
		m := newTestMux(t, cfg)
		est, _ := m.Dial(context.Background(), peerA)
		est.Established()
		est.SetHandler(func([]byte, netip.AddrPort) {})
		m.Dial(context.Background(), peerB)
		from := peerA
		if fromB {
			from = peerB
		}
		before := m.Stats()
		m.dispatch(b, from)
		m.dispatch(b, netip.AddrPortFrom(from.Addr(), 1))
		after := m.Stats()
		handled := (after.Sealed - before.Sealed) + (after.Control - before.Control) + (after.Dropped() - before.Dropped())
		if handled != 2 {
			t.Fatalf("2 datagrams, %d accounted for: %+v", handled, after)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.pending > cfg.MaxPending || len(m.byAddr) > len(m.byID) {
			t.Fatalf("pending %d, byAddr %d, byID %d", m.pending, len(m.byAddr), len(m.byID))
		}
	})
}
