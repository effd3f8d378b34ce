package udp_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/udp"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

// listen opens a Conn with the default configuration, closed at cleanup.
func listen(tb testing.TB, addr netip.AddrPort) *udp.Conn {
	tb.Helper()
	return listenCfg(tb, addr, udp.Default())
}

func listenCfg(tb testing.TB, addr netip.AddrPort, cfg udp.Config) *udp.Conn {
	tb.Helper()
	c, err := udp.Listen(addr, cfg)
	if err != nil {
		tb.Fatalf("Listen(%v): %v", addr, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// need6 skips the test when the host has no IPv6 loopback.
func need6(tb testing.TB) {
	tb.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		tb.Skipf("no IPv6 loopback: %v", err)
	}
	_ = c.Close()
}

// at is c's port on the loopback address ip.
func at(c *udp.Conn, ip netip.Addr) netip.AddrPort {
	return netip.AddrPortFrom(ip, c.LocalAddr().Port())
}

type packet struct {
	data []byte
	from netip.AddrPort
}

// readN reads exactly want datagrams of at most bufSize bytes from c. If
// they do not arrive within 5 s it closes c, which unblocks ReadBatch.
func readN(tb testing.TB, c *udp.Conn, want, bufSize int) []packet {
	tb.Helper()
	watchdog := time.AfterFunc(5*time.Second, func() { _ = c.Close() })
	defer watchdog.Stop()
	bufs := make([][]byte, c.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes := make([]int, len(bufs))
	from := make([]netip.AddrPort, len(bufs))
	var got []packet
	for len(got) < want {
		k := min(len(bufs), want-len(got))
		n, err := c.ReadBatch(bufs[:k], sizes, from)
		if err != nil {
			tb.Fatalf("ReadBatch after %d of %d datagrams: %v", len(got), want, err)
		}
		if n < 1 || n > k {
			tb.Fatalf("ReadBatch = %d, want 1..%d", n, k)
		}
		for i := range n {
			got = append(got, packet{bytes.Clone(bufs[i][:sizes[i]]), from[i]})
		}
	}
	if len(got) != want {
		tb.Fatalf("read %d datagrams, want %d", len(got), want)
	}
	return got
}

func TestListen_LocalAddr(t *testing.T) {
	tests := []struct {
		name   string
		addr   netip.AddrPort
		wantIP netip.Addr
		v6     bool
	}{
		{"ipv4", netip.AddrPortFrom(lo4, 0), lo4, false},
		{"ipv4-mapped is ipv4", netip.MustParseAddrPort("[::ffff:127.0.0.1]:0"), lo4, false},
		{"ipv6", netip.AddrPortFrom(lo6, 0), lo6, true},
		{"zero is dual-stack", netip.AddrPort{}, netip.IPv6Unspecified(), true},
		{"0.0.0.0 is dual-stack", netip.MustParseAddrPort("0.0.0.0:0"), netip.IPv6Unspecified(), true},
		{"[::] is dual-stack", netip.MustParseAddrPort("[::]:0"), netip.IPv6Unspecified(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.v6 {
				need6(t)
			}
			c := listen(t, tt.addr)
			got := c.LocalAddr()
			if got.Addr() != tt.wantIP || got.Port() == 0 {
				t.Errorf("LocalAddr() = %v, want %v with a real port", got, tt.wantIP)
			}
			// The reported port is the bound one: binding it again fails.
			if _, err := udp.Listen(got, udp.Default()); !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("Listen(%v) again = %v, want EADDRINUSE", got, err)
			}
			if c.BatchSize() != udp.Default().BatchSize {
				t.Errorf("BatchSize() = %d, want %d", c.BatchSize(), udp.Default().BatchSize)
			}
		})
	}
}

func TestListen_Errors(t *testing.T) {
	c := listen(t, netip.AddrPortFrom(lo4, 0))
	_, err := udp.Listen(c.LocalAddr(), udp.Default())
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), c.LocalAddr().String()) {
		t.Errorf("Listen on a used port = %v, want EADDRINUSE naming %v", err, c.LocalAddr())
	}
	if strings.Count(err.Error(), c.LocalAddr().String()) != 1 {
		t.Errorf("error %q names the address more than once", err)
	}

	bad := udp.Default()
	bad.BatchSize = 999
	_, err = udp.Listen(netip.AddrPortFrom(lo4, 0), bad)
	if err == nil || !strings.Contains(err.Error(), "transport.udp.batch_size") {
		t.Errorf("Listen with BatchSize 999 = %v, want an error naming transport.udp.batch_size", err)
	}
}

func TestConn_RoundTrip(t *testing.T) {
	for _, ip := range []netip.Addr{lo4, lo6} {
		t.Run(ip.String(), func(t *testing.T) {
			if ip.Is6() {
				need6(t)
			}
			a := listen(t, netip.AddrPortFrom(ip, 0))
			b := listen(t, netip.AddrPortFrom(ip, 0))

			if err := a.WriteTo([]byte("ping"), b.LocalAddr()); err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			got := readN(t, b, 1, 1500)[0]
			if string(got.data) != "ping" || got.from != a.LocalAddr() {
				t.Fatalf("b read %q from %v, want %q from %v", got.data, got.from, "ping", a.LocalAddr())
			}

			n, err := b.WriteBatch([][]byte{[]byte("pong")}, []netip.AddrPort{got.from})
			if n != 1 || err != nil {
				t.Fatalf("WriteBatch = %d, %v; want 1, nil", n, err)
			}
			got = readN(t, a, 1, 1500)[0]
			if string(got.data) != "pong" || got.from != b.LocalAddr() {
				t.Fatalf("a read %q from %v, want %q from %v", got.data, got.from, "pong", b.LocalAddr())
			}
		})
	}
}

func TestConn_DualStack(t *testing.T) {
	need6(t)
	srv := listen(t, netip.AddrPort{})
	for _, ip := range []netip.Addr{lo4, lo6} {
		t.Run(ip.String(), func(t *testing.T) {
			cl := listen(t, netip.AddrPortFrom(ip, 0))
			if err := cl.WriteTo([]byte("hello"), at(srv, ip)); err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			got := readN(t, srv, 1, 1500)[0]
			if got.from != cl.LocalAddr() || got.from.Addr().Is4In6() {
				t.Fatalf("server saw the client as %v, want %v (unmapped)", got.from, cl.LocalAddr())
			}
			// Replies to the plain address reach the client both ways.
			if err := srv.WriteTo([]byte("r1"), got.from); err != nil {
				t.Fatalf("WriteTo(%v): %v", got.from, err)
			}
			if n, err := srv.WriteBatch([][]byte{[]byte("r2")}, []netip.AddrPort{got.from}); n != 1 || err != nil {
				t.Fatalf("WriteBatch(%v) = %d, %v; want 1, nil", got.from, n, err)
			}
			replies := readN(t, cl, 2, 1500)
			for i, want := range []string{"r1", "r2"} {
				if string(replies[i].data) != want || replies[i].from.Port() != srv.LocalAddr().Port() {
					t.Errorf("reply %d = %q from %v, want %q from port %d", i, replies[i].data, replies[i].from, want, srv.LocalAddr().Port())
				}
			}
		})
	}
}

// An IPv4 socket accepts IPv4-mapped destinations.
func TestConn_IPv4_MappedDestination(t *testing.T) {
	a := listen(t, netip.AddrPortFrom(lo4, 0))
	b := listen(t, netip.AddrPortFrom(lo4, 0))
	mapped := netip.AddrPortFrom(netip.AddrFrom16(lo4.As16()), b.LocalAddr().Port())
	if err := a.WriteTo([]byte("x"), mapped); err != nil {
		t.Fatalf("WriteTo(%v): %v", mapped, err)
	}
	if n, err := a.WriteBatch([][]byte{[]byte("y")}, []netip.AddrPort{mapped}); n != 1 || err != nil {
		t.Fatalf("WriteBatch(%v) = %d, %v; want 1, nil", mapped, n, err)
	}
	readN(t, b, 2, 100)
}

func TestConn_ReadBatch_Batch64(t *testing.T) {
	const count = 64
	r := listen(t, netip.AddrPortFrom(lo4, 0))
	if r.BatchSize() < count {
		t.Fatalf("default BatchSize %d < %d", r.BatchSize(), count)
	}
	senders := []*udp.Conn{listen(t, netip.AddrPortFrom(lo4, 0)), listen(t, netip.AddrPortFrom(lo4, 0))}
	size := func(i int) int { return 1 + i*(transport.MaxPacket/count) } // 1 .. ~9 KB
	payload := func(i int) []byte {
		b := make([]byte, size(i))
		for j := range b {
			b[j] = byte(i + 7*j)
		}
		return b
	}
	// Datagram i is sent by senders[i%2]; each sender sends its 32 in one batch.
	for s, c := range senders {
		var bufs [][]byte
		var to []netip.AddrPort
		for i := s; i < count; i += len(senders) {
			bufs = append(bufs, payload(i))
			to = append(to, r.LocalAddr())
		}
		if n, err := c.WriteBatch(bufs, to); n != len(bufs) || err != nil {
			t.Fatalf("sender %d: WriteBatch = %d, %v; want %d, nil", s, n, err, len(bufs))
		}
	}

	bufs := make([][]byte, count)
	for i := range bufs {
		bufs[i] = make([]byte, transport.MaxPacket)
	}
	sizes := make([]int, count)
	from := make([]netip.AddrPort, count)
	seen := make(map[int]bool)
	calls := 0
	watchdog := time.AfterFunc(5*time.Second, func() { _ = r.Close() })
	defer watchdog.Stop()
	for len(seen) < count {
		n, err := r.ReadBatch(bufs, sizes, from)
		if err != nil {
			t.Fatalf("ReadBatch after %d datagrams: %v", len(seen), err)
		}
		calls++
		for k := range n {
			got := bufs[k][:sizes[k]]
			i := (sizes[k] - 1) / (transport.MaxPacket / count)
			if seen[i] {
				t.Fatalf("datagram %d (size %d) arrived twice", i, sizes[k])
			}
			seen[i] = true
			if !bytes.Equal(got, payload(i)) {
				t.Errorf("datagram %d: %d bytes differ from the %d sent", i, len(got), size(i))
			}
			if want := senders[i%2].LocalAddr(); from[k] != want {
				t.Errorf("datagram %d from %v, want %v", i, from[k], want)
			}
		}
	}
	// All 64 were queued before the first read, so recvmmsg should have
	// taken several per call (one per call is the non-Linux fallback).
	t.Logf("64 datagrams in %d ReadBatch calls", calls)
	if batching && calls > count/2 {
		t.Errorf("64 queued datagrams took %d ReadBatch calls; batching is not working", calls)
	}
}

func TestConn_ReadBatch_Truncates(t *testing.T) {
	a := listen(t, netip.AddrPortFrom(lo4, 0))
	b := listen(t, netip.AddrPortFrom(lo4, 0))
	big := bytes.Repeat([]byte("0123456789"), 200) // 2000 B
	if err := a.WriteTo(big, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteTo([]byte("next"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	got := readN(t, b, 2, 100)
	if !bytes.Equal(got[0].data, big[:100]) {
		t.Errorf("truncated datagram = %q (%d B), want the first 100 B", got[0].data, len(got[0].data))
	}
	if string(got[1].data) != "next" {
		t.Errorf("datagram after the truncated one = %q, want %q", got[1].data, "next")
	}
}

func TestConn_ReadBatch_AtMostBatchSize(t *testing.T) {
	cfg := udp.Default()
	cfg.BatchSize = 4
	r := listenCfg(t, netip.AddrPortFrom(lo4, 0), cfg)
	w := listen(t, netip.AddrPortFrom(lo4, 0))
	for i := range 10 {
		if err := w.WriteTo([]byte{byte(i)}, r.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 10)
	for i := range bufs {
		bufs[i] = make([]byte, 16)
	}
	sizes := make([]int, 10)
	from := make([]netip.AddrPort, 10)
	watchdog := time.AfterFunc(5*time.Second, func() { _ = r.Close() })
	defer watchdog.Stop()
	total := 0
	for total < 10 {
		n, err := r.ReadBatch(bufs, sizes, from)
		if err != nil {
			t.Fatalf("ReadBatch after %d: %v", total, err)
		}
		if n > 4 {
			t.Fatalf("ReadBatch = %d with BatchSize 4", n)
		}
		for k := range n {
			if sizes[k] != 1 || bufs[k][0] != byte(total+k) {
				t.Fatalf("datagram %d = %v, want [%d]", total+k, bufs[k][:sizes[k]], total+k)
			}
		}
		total += n
	}
	// Short sizes or from slices bound the batch instead of panicking.
	if err := w.WriteTo([]byte{1}, r.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if n, err := r.ReadBatch(bufs, sizes[:1], from); n != 1 || err != nil {
		t.Fatalf("ReadBatch with one size = %d, %v; want 1, nil", n, err)
	}
	if n, err := r.ReadBatch(nil, nil, nil); n != 0 || err != nil {
		t.Fatalf("ReadBatch(nil) = %d, %v; want 0, nil", n, err)
	}
}

// A datagram the kernel or the socket rejects is skipped; the rest of the
// batch is delivered and no error is returned.
func TestConn_WriteBatch_SkipsRejected(t *testing.T) {
	tests := []struct {
		name string
		bind netip.AddrPort
	}{
		{"ipv4", netip.AddrPortFrom(lo4, 0)},
		{"dual-stack", netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.bind.Addr().IsValid() {
				need6(t)
			}
			w := listen(t, tt.bind)
			r := listen(t, netip.AddrPortFrom(lo4, 0))
			dst := r.LocalAddr()
			bufs := [][]byte{
				[]byte("first"),
				make([]byte, 70000), // EMSGSIZE from the kernel
				[]byte("zero address"),
				[]byte("port 0"),
				[]byte("second"),
				[]byte("ipv6 from an ipv4 socket"),
				[]byte("unknown zone"),
				[]byte("third"),
			}
			to := []netip.AddrPort{
				dst,
				dst,
				{},
				netip.AddrPortFrom(lo4, 0),
				dst,
				netip.AddrPortFrom(lo6, dst.Port()), // r is IPv4-only: nobody listens there
				netip.AddrPortFrom(netip.MustParseAddr("fe80::1%no-such-interface0"), 9),
				dst,
			}
			want := 3
			if tt.name == "dual-stack" {
				want = 4 // [::1]:port is a valid destination, just closed
			}
			n, err := w.WriteBatch(bufs, to)
			if n != want || err != nil {
				t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, want)
			}
			got := readN(t, r, 3, 100)
			for i, s := range []string{"first", "second", "third"} {
				if string(got[i].data) != s {
					t.Errorf("datagram %d = %q, want %q", i, got[i].data, s)
				}
			}
			// WriteTo reports such failures, naming the destination.
			if err := w.WriteTo(make([]byte, 70000), dst); err == nil || !strings.Contains(err.Error(), dst.String()) {
				t.Errorf("WriteTo(70000 B) = %v, want an error naming %v", err, dst)
			}
		})
	}
}

func TestConn_WriteBatch_MoreThanBatchSize(t *testing.T) {
	cfg := udp.Default()
	cfg.BatchSize = 3
	w := listenCfg(t, netip.AddrPortFrom(lo4, 0), cfg)
	r := listen(t, netip.AddrPortFrom(lo4, 0))
	var bufs [][]byte
	var to []netip.AddrPort
	for i := range 10 {
		bufs = append(bufs, []byte{byte(i)})
		to = append(to, r.LocalAddr())
	}
	if n, err := w.WriteBatch(bufs, to); n != 10 || err != nil {
		t.Fatalf("WriteBatch(10) with BatchSize 3 = %d, %v; want 10, nil", n, err)
	}
	for i, p := range readN(t, r, 10, 16) {
		if len(p.data) != 1 || p.data[0] != byte(i) {
			t.Errorf("datagram %d = %v", i, p.data)
		}
	}
}

func TestConn_ConcurrentWrites(t *testing.T) {
	const writers, rounds, perBatch = 4, 20, 8
	r := listen(t, netip.AddrPortFrom(lo4, 0))
	w := listen(t, netip.AddrPortFrom(lo4, 0))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			bufs := make([][]byte, perBatch)
			to := make([]netip.AddrPort, perBatch)
			for i := range rounds {
				for k := range bufs {
					bufs[k] = fmt.Appendf(nil, "%d/%d/%d", g, i, k)
					to[k] = r.LocalAddr()
				}
				if n, err := w.WriteBatch(bufs, to); n != perBatch || err != nil {
					errs <- fmt.Errorf("writer %d: WriteBatch = %d, %v", g, n, err)
					return
				}
				if err := w.WriteTo(fmt.Appendf(nil, "%d/%d/single", g, i), r.LocalAddr()); err != nil {
					errs <- fmt.Errorf("writer %d: WriteTo: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	for _, p := range readN(t, r, writers*rounds*(perBatch+1), 64) {
		if seen[string(p.data)] {
			t.Fatalf("datagram %q twice", p.data)
		}
		seen[string(p.data)] = true
	}
}

func TestConn_Close_UnblocksReadBatch(t *testing.T) {
	c, err := udp.Listen(netip.AddrPortFrom(lo4, 0), udp.Default())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 100)}
		_, err := c.ReadBatch(bufs, make([]int, 1), make([]netip.AddrPort, 1))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let ReadBatch park in the netpoller
	select {
	case err := <-errc:
		t.Fatalf("ReadBatch returned before Close: %v", err)
	default:
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadBatch after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
}

func TestConn_AfterClose(t *testing.T) {
	c, err := udp.Listen(netip.AddrPortFrom(lo4, 0), udp.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	dst := netip.AddrPortFrom(lo4, 9)
	bufs := [][]byte{[]byte("x")}
	_, readErr := c.ReadBatch(bufs, make([]int, 1), make([]netip.AddrPort, 1))
	_, batchErr := c.WriteBatch(bufs, []netip.AddrPort{dst})
	_, emptyErr := c.WriteBatch(nil, nil)
	for name, err := range map[string]error{
		"ReadBatch":         readErr,
		"WriteTo":           c.WriteTo(bufs[0], dst),
		"WriteBatch":        batchErr,
		"WriteBatch(empty)": emptyErr,
		"Close":             c.Close(),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close = %v, want net.ErrClosed", name, err)
		}
	}
}

func TestConn_ReadBatch_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	const runs, per = 100, 8
	r := listen(t, netip.AddrPortFrom(lo4, 0))
	w := listen(t, netip.AddrPortFrom(lo4, 0))
	msg := make([]byte, 200)
	for range (runs + 1) * per { // AllocsPerRun makes one extra warm-up run
		if err := w.WriteTo(msg, r.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, per)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, per)
	from := make([]netip.AddrPort, per)
	watchdog := time.AfterFunc(5*time.Second, func() { _ = r.Close() })
	defer watchdog.Stop()
	allocs := testing.AllocsPerRun(runs, func() {
		for got := 0; got < per; {
			n, err := r.ReadBatch(bufs[got:], sizes[got:], from[got:])
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("ReadBatch allocates %v times per call, want 0", allocs)
	}
	if from[0] != w.LocalAddr() || sizes[0] != len(msg) {
		t.Errorf("last read %d B from %v, want %d B from %v", sizes[0], from[0], len(msg), w.LocalAddr())
	}
}

func TestConn_WriteTo_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	tests := []struct {
		name string
		bind netip.AddrPort
	}{
		{"ipv4", netip.AddrPortFrom(lo4, 0)},
		{"dual-stack to ipv4", netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.bind.Addr().IsValid() {
				need6(t)
			}
			w := listen(t, tt.bind)
			r := listen(t, netip.AddrPortFrom(lo4, 0))
			msg := make([]byte, 200)
			// 101 calls with the warm-up run.
			allocs := testing.AllocsPerRun(100, func() {
				if err := w.WriteTo(msg, r.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("WriteTo allocates %v times per call, want 0", allocs)
			}
			readN(t, r, 101, 1500) // they were really sent
		})
	}
}

func TestConn_WriteBatch_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	tests := []struct {
		name string
		bind netip.AddrPort
	}{
		{"ipv4", netip.AddrPortFrom(lo4, 0)},
		{"dual-stack to ipv4", netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.bind.Addr().IsValid() {
				need6(t)
			}
			w := listen(t, tt.bind)
			r := listen(t, netip.AddrPortFrom(lo4, 0))
			const per = 8
			bufs := make([][]byte, per)
			to := make([]netip.AddrPort, per)
			for i := range bufs {
				bufs[i] = make([]byte, 200)
				to[i] = r.LocalAddr()
			}
			allocs := testing.AllocsPerRun(100, func() {
				if n, err := w.WriteBatch(bufs, to); n != per || err != nil {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
			})
			if allocs != 0 {
				t.Errorf("WriteBatch allocates %v times per call, want 0", allocs)
			}
			readN(t, r, 101*per, 1500) // they were really sent
		})
	}
}
