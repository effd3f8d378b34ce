package memnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ringvpn/ringvpn/transport"
)

// equateAddrs compares netip values with ==.
var equateAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})

func listen(t testing.TB, n *Network, addr string) *Conn {
	t.Helper()
	c, err := n.Listen(netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatalf("Listen(%s): %v", addr, err)
	}
	return c
}

func setDefaultLink(t testing.TB, n *Network, cfg LinkConfig) {
	t.Helper()
	if err := n.SetDefaultLink(cfg); err != nil {
		t.Fatalf("SetDefaultLink(%+v): %v", cfg, err)
	}
}

func setQueueLen(t testing.TB, c *Conn, l int) {
	t.Helper()
	if err := c.SetQueueLen(l); err != nil {
		t.Fatalf("SetQueueLen(%d): %v", l, err)
	}
}

func mustWrite(t testing.TB, c *Conn, b []byte, to netip.AddrPort) {
	t.Helper()
	if err := c.WriteTo(b, to); err != nil {
		t.Fatalf("WriteTo(%v): %v", to, err)
	}
}

// sendID sends a 4-byte datagram carrying id.
func sendID(t testing.TB, c *Conn, to netip.AddrPort, id int) {
	t.Helper()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(id))
	mustWrite(t, c, b[:], to)
}

// sendIDs sends ids [0, count) from c to rx on a link without delay and
// reads what arrives as it goes, so that at most a few buffers are in use.
// It returns how many datagrams rx read.
func sendIDs(t testing.TB, n *Network, c, rx *Conn, count int) uint64 {
	t.Helper()
	var b [4]byte
	bufs := [][]byte{make([]byte, 4), make([]byte, 4)}
	sizes, from := make([]int, 2), make([]netip.AddrPort, 2)
	var read uint64
	for id := range count {
		binary.BigEndian.PutUint32(b[:], uint32(id))
		if err := c.WriteTo(b[:], rx.LocalAddr()); err != nil {
			t.Fatalf("WriteTo(%v) id %d: %v", rx.LocalAddr(), id, err)
		}
		for read < n.Stats().Delivered {
			k, err := rx.ReadBatch(bufs, sizes, from)
			if err != nil {
				t.Fatalf("ReadBatch: %v", err)
			}
			read += uint64(k)
		}
	}
	return read
}

// readOne blocks for one datagram.
func readOne(t testing.TB, c *Conn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, transport.MaxPacket)
	sizes := make([]int, 1)
	from := make([]netip.AddrPort, 1)
	n, err := c.ReadBatch([][]byte{buf}, sizes, from)
	if err != nil || n != 1 {
		t.Fatalf("ReadBatch = %d, %v; want 1, nil", n, err)
	}
	return buf[:sizes[0]], from[0]
}

// arrival is a datagram carrying id that arrived after elapsed.
type arrival struct {
	ID      int
	Elapsed time.Duration
	From    netip.AddrPort
}

// collect reads id datagrams until c is closed and sends what arrived,
// stamped with the time since start.
func collect(c *Conn, start time.Time, out chan<- []arrival) {
	var got []arrival
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes := make([]int, len(bufs))
	from := make([]netip.AddrPort, len(bufs))
	for {
		n, err := c.ReadBatch(bufs, sizes, from)
		if err != nil {
			out <- got
			return
		}
		now := time.Since(start)
		for i := range n {
			got = append(got, arrival{int(binary.BigEndian.Uint32(bufs[i][:sizes[i]])), now, from[i]})
		}
	}
}

func checkConservation(t *testing.T, s Stats) {
	t.Helper()
	in := s.Sent + s.Duplicated
	out := s.Delivered + s.Lost + s.DroppedQueueFull + s.DroppedNoListener + s.DroppedFiltered + s.InFlight
	if in != out {
		t.Errorf("stats %+v: sent+duplicated %d != delivered+lost+dropped+in flight %d", s, in, out)
	}
}

func TestNetwork_Listen(t *testing.T) {
	n := New(1)
	a := listen(t, n, "10.0.0.1:4000")
	if got, want := a.LocalAddr(), netip.MustParseAddrPort("10.0.0.1:4000"); got != want {
		t.Errorf("LocalAddr = %v, want %v", got, want)
	}
	if a.PublicAddr() != a.LocalAddr() {
		t.Errorf("PublicAddr = %v, want LocalAddr %v", a.PublicAddr(), a.LocalAddr())
	}

	_, err := n.Listen(netip.MustParseAddrPort("10.0.0.1:4000"))
	if !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), "10.0.0.1:4000") {
		t.Errorf("Listen on a taken address: %v; want ErrAddrInUse naming 10.0.0.1:4000", err)
	}
	// The same port on another host, or on the IPv6 side, is free.
	listen(t, n, "10.0.0.2:4000")
	listen(t, n, "[fd00::1]:4000")

	for _, bad := range []string{"0.0.0.0:1", "[::]:1"} {
		if _, err := n.Listen(netip.MustParseAddrPort(bad)); err == nil {
			t.Errorf("Listen(%s) succeeded; want an error", bad)
		}
	}
	if _, err := n.Listen(netip.AddrPort{}); err == nil {
		t.Error("Listen(zero AddrPort) succeeded; want an error")
	}

	// An IPv4-mapped address is the IPv4 one.
	m := listen(t, n, "[::ffff:10.0.0.3]:5000")
	if got, want := m.LocalAddr(), netip.MustParseAddrPort("10.0.0.3:5000"); got != want {
		t.Errorf("LocalAddr of a mapped address = %v, want %v", got, want)
	}
}

func TestNetwork_Listen_PortZero(t *testing.T) {
	ports := func(seed uint64) []netip.AddrPort {
		n := New(seed)
		var got []netip.AddrPort
		for _, host := range []string{"10.0.0.1:0", "10.0.0.1:0", "[fd00::1]:0", "10.0.0.1:0"} {
			c := listen(t, n, host)
			ap := c.LocalAddr()
			if ap.Port() < ephemeralFirst {
				t.Errorf("picked port %d below %d", ap.Port(), ephemeralFirst)
			}
			got = append(got, ap)
		}
		return got
	}
	first := ports(42)
	if d := cmp.Diff(first, ports(42), equateAddrs); d != "" {
		t.Errorf("same seed picked different ports (-first +second):\n%s", d)
	}
	seen := map[netip.AddrPort]bool{}
	for _, ap := range first {
		if seen[ap] {
			t.Errorf("port %v picked twice", ap)
		}
		seen[ap] = true
	}
	if slices.Equal(first, ports(43)) {
		t.Errorf("seeds 42 and 43 picked the same ports %v", first)
	}
}

func TestConn_WriteRead(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{"IPv4", "192.0.2.1:1000", "192.0.2.2:2000"},
		{"IPv6", "[2001:db8::1]:1000", "[2001:db8::2]:2000"},
		{"SameHost", "192.0.2.1:1000", "192.0.2.1:2000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			a, b := listen(t, n, tc.a), listen(t, n, tc.b)
			msg := []byte("hello")
			mustWrite(t, a, msg, b.LocalAddr())
			copy(msg, "XXXXX") // the sender may reuse its buffer
			got, from := readOne(t, b)
			if string(got) != "hello" || from != a.LocalAddr() {
				t.Errorf("got %q from %v, want %q from %v", got, from, "hello", a.LocalAddr())
			}
			mustWrite(t, b, []byte("back"), from)
			if got, from := readOne(t, a); string(got) != "back" || from != b.LocalAddr() {
				t.Errorf("reply: got %q from %v, want %q from %v", got, from, "back", b.LocalAddr())
			}
		})
	}
}

func TestConn_WriteTo_MappedDestination(t *testing.T) {
	n := New(1)
	a, b := listen(t, n, "192.0.2.1:1000"), listen(t, n, "192.0.2.2:2000")
	mustWrite(t, a, []byte("x"), netip.MustParseAddrPort("[::ffff:192.0.2.2]:2000"))
	if got, _ := readOne(t, b); string(got) != "x" {
		t.Errorf("got %q, want %q", got, "x")
	}
}

func TestConn_ReadBatch(t *testing.T) {
	n := New(1)
	a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
	for i := range 5 {
		sendID(t, a, b.LocalAddr(), i)
	}
	big := bytes.Repeat([]byte{0xAB}, 100)
	mustWrite(t, a, big, b.LocalAddr())

	bufs := [][]byte{make([]byte, 4), make([]byte, 4), make([]byte, 4)}
	sizes := make([]int, 3)
	from := make([]netip.AddrPort, 3)
	var ids []int
	for _, want := range []int{3, 2} {
		k, err := b.ReadBatch(bufs, sizes, from)
		if err != nil || k != want {
			t.Fatalf("ReadBatch = %d, %v; want %d, nil", k, err, want)
		}
		for i := range k {
			ids = append(ids, int(binary.BigEndian.Uint32(bufs[i][:sizes[i]])))
		}
		// The last batch stops short of the datagram queued after the ids.
		bufs = bufs[:2]
	}
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(ids, want) {
		t.Errorf("ids = %v, want %v", ids, want)
	}

	// A datagram longer than its buffer is truncated.
	k, err := b.ReadBatch(bufs[:1], sizes, from)
	if err != nil || k != 1 || sizes[0] != 4 || !bytes.Equal(bufs[0], big[:4]) {
		t.Errorf("short buffer: ReadBatch = %d, %v, size %d, %x; want 1, nil, 4, %x", k, err, sizes[0], bufs[0], big[:4])
	}

	if _, err := b.ReadBatch(bufs, sizes[:1], from); err == nil {
		t.Error("ReadBatch with short sizes succeeded")
	}
	if k, err := b.ReadBatch(nil, nil, nil); k != 0 || err != nil {
		t.Errorf("ReadBatch(nil) = %d, %v; want 0, nil", k, err)
	}
}

func TestConn_WriteBatch(t *testing.T) {
	n := New(1)
	a, b, c := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1"), listen(t, n, "10.0.0.3:1")
	k, err := a.WriteBatch(
		[][]byte{[]byte("b1"), []byte("c1"), []byte("b2")},
		[]netip.AddrPort{b.LocalAddr(), c.LocalAddr(), b.LocalAddr()})
	if k != 3 || err != nil {
		t.Fatalf("WriteBatch = %d, %v; want 3, nil", k, err)
	}
	for _, want := range []struct {
		c   *Conn
		msg string
	}{{b, "b1"}, {b, "b2"}, {c, "c1"}} {
		if got, _ := readOne(t, want.c); string(got) != want.msg {
			t.Errorf("%v got %q, want %q", want.c.LocalAddr(), got, want.msg)
		}
	}

	huge := make([]byte, transport.MaxPacket+1)
	k, err = a.WriteBatch([][]byte{[]byte("ok"), huge}, []netip.AddrPort{b.LocalAddr(), b.LocalAddr()})
	if k != 1 || !errors.Is(err, ErrTooLarge) {
		t.Errorf("WriteBatch with an oversized datagram = %d, %v; want 1, ErrTooLarge", k, err)
	}
	if err := a.WriteTo(huge, b.LocalAddr()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("WriteTo oversized = %v, want ErrTooLarge", err)
	}
	if _, err := a.WriteBatch([][]byte{[]byte("x")}, nil); err == nil {
		t.Error("WriteBatch with short to succeeded")
	}
}

func TestConn_WriteTo_NoListener(t *testing.T) {
	n := New(1)
	a := listen(t, n, "10.0.0.1:1")
	if err := a.WriteTo([]byte("x"), netip.MustParseAddrPort("10.0.0.9:9")); err != nil {
		t.Fatalf("WriteTo nobody = %v, want nil", err)
	}
	s := n.Stats()
	if s.Sent != 1 || s.DroppedNoListener != 1 || s.Delivered != 0 {
		t.Errorf("stats = %+v; want 1 sent, 1 dropped for no listener", s)
	}
}

func TestConn_QueueFull(t *testing.T) {
	n := New(1)
	a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
	setQueueLen(t, b, 4)
	for i := range 10 {
		sendID(t, a, b.LocalAddr(), i)
	}
	s := n.Stats()
	if s.Delivered != 4 || s.DroppedQueueFull != 6 {
		t.Errorf("stats = %+v; want 4 delivered, 6 dropped for a full queue", s)
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 4)
	}
	k, err := b.ReadBatch(bufs, make([]int, 8), make([]netip.AddrPort, 8))
	if k != 4 || err != nil {
		t.Errorf("ReadBatch = %d, %v; want the 4 queued", k, err)
	}
	// Room again.
	sendID(t, a, b.LocalAddr(), 10)
	if got, _ := readOne(t, b); binary.BigEndian.Uint32(got) != 10 {
		t.Errorf("after draining got id %d, want 10", binary.BigEndian.Uint32(got))
	}

	if err := n.SetQueueLen(0); err == nil {
		t.Error("SetQueueLen(0) succeeded")
	}
	if err := n.SetQueueLen(2); err != nil {
		t.Fatal(err)
	}
	c := listen(t, n, "10.0.0.3:1")
	for i := range 3 {
		sendID(t, a, c.LocalAddr(), i)
	}
	if got := n.Stats().DroppedQueueFull; got != 7 {
		t.Errorf("DroppedQueueFull = %d after a Conn with queue length 2 got 3; want 7", got)
	}
}

func TestConn_Close(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		errc := make(chan error, 1)
		go func() {
			buf := make([]byte, 10)
			_, err := b.ReadBatch([][]byte{buf}, make([]int, 1), make([]netip.AddrPort, 1))
			errc <- err
		}()
		synctest.Wait() // the reader is blocked
		if err := b.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked ReadBatch returned %v, want net.ErrClosed", err)
		}

		buf := make([]byte, 10)
		_, rerr := b.ReadBatch([][]byte{buf}, make([]int, 1), make([]netip.AddrPort, 1))
		_, wberr := b.WriteBatch([][]byte{buf}, []netip.AddrPort{a.LocalAddr()})
		for name, err := range map[string]error{
			"ReadBatch":   rerr,
			"WriteTo":     b.WriteTo(buf, a.LocalAddr()),
			"WriteBatch":  wberr,
			"Close":       b.Close(),
			"SetQueueLen": b.SetQueueLen(3),
		} {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s after Close = %v, want net.ErrClosed", name, err)
			}
		}
		if got := b.Rebind(); got.IsValid() {
			t.Errorf("Rebind after Close = %v, want the zero AddrPort", got)
		}

		// Datagrams to a closed Conn are dropped; its address is free.
		mustWrite(t, a, []byte("x"), b.LocalAddr())
		if s := n.Stats(); s.DroppedNoListener != 1 {
			t.Errorf("DroppedNoListener = %d, want 1", s.DroppedNoListener)
		}
		b2 := listen(t, n, "10.0.0.2:1")
		mustWrite(t, a, []byte("y"), b2.LocalAddr())
		if got, _ := readOne(t, b2); string(got) != "y" {
			t.Errorf("new Conn on the old address got %q, want %q", got, "y")
		}
	})
}

func TestConn_Close_DiscardsQueued(t *testing.T) {
	n := New(1)
	a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
	mustWrite(t, a, []byte("x"), b.LocalAddr())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadBatch([][]byte{make([]byte, 4)}, make([]int, 1), make([]netip.AddrPort, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadBatch with queued data after Close = %v, want net.ErrClosed", err)
	}
	n.freeMu.Lock()
	free := len(n.free)
	n.freeMu.Unlock()
	if free != 1 {
		t.Errorf("free list holds %d buffers after Close, want the 1 that was queued", free)
	}
}

func TestNetwork_Close(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Latency: time.Second})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		mustWrite(t, a, []byte("x"), b.LocalAddr())
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.WriteTo([]byte("x"), b.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("WriteTo on a closed network = %v, want net.ErrClosed", err)
		}
		if _, err := n.Listen(netip.MustParseAddrPort("10.0.0.3:1")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Listen on a closed network = %v, want net.ErrClosed", err)
		}
		if s := n.Stats(); s.InFlight != 0 {
			t.Errorf("InFlight = %d after Close, want 0", s.InFlight)
		}
		time.Sleep(2 * time.Second)
		if s := n.Stats(); s.Delivered != 0 {
			t.Errorf("Delivered = %d after Close, want 0", s.Delivered)
		}
		if err := n.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
	})
}

func TestLink_LatencyExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 30 * time.Millisecond
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Latency: latency})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")

		start := time.Now()
		out := make(chan []arrival, 1)
		go collect(b, start, out)
		sends := []time.Duration{0, 0, 5 * time.Millisecond, 29 * time.Millisecond, 30 * time.Millisecond, 100 * time.Millisecond}
		for i, at := range sends {
			time.Sleep(at - time.Since(start))
			sendID(t, a, b.LocalAddr(), i)
		}
		synctest.Wait()
		if s := n.Stats(); s.InFlight != 1 || s.Delivered != 5 {
			t.Errorf("at %v: stats %+v; want 5 delivered, 1 in flight", time.Since(start), s)
		}
		time.Sleep(time.Second)
		b.Close()

		var want []arrival
		for i, at := range sends {
			want = append(want, arrival{i, at + latency, a.LocalAddr()})
		}
		if d := cmp.Diff(want, <-out, equateAddrs); d != "" {
			t.Errorf("arrivals (-want +got):\n%s", d)
		}
	})
}

func TestLink_JitterBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			latency = 10 * time.Millisecond
			jitter  = 5 * time.Millisecond
			count   = 1000
			gap     = time.Millisecond
		)
		n := New(3)
		setDefaultLink(t, n, LinkConfig{Latency: latency, Jitter: jitter})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		start := time.Now()
		out := make(chan []arrival, 1)
		go collect(b, start, out)
		for i := range count {
			sendID(t, a, b.LocalAddr(), i)
			time.Sleep(gap)
		}
		time.Sleep(time.Second)
		b.Close()
		got := <-out

		if len(got) != count {
			t.Fatalf("%d arrived, want %d", len(got), count)
		}
		lo, hi := time.Hour, time.Duration(0)
		for i, r := range got {
			if r.ID != i {
				t.Fatalf("arrival %d carries id %d: jitter reordered", i, r.ID)
			}
			d := r.Elapsed - time.Duration(i)*gap
			if d < latency || d > latency+jitter {
				t.Errorf("id %d took %v, want within [%v, %v]", i, d, latency, latency+jitter)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo > latency+jitter/5 || hi < latency+jitter*4/5 {
			t.Errorf("delays span only [%v, %v]; want most of [%v, %v]", lo, hi, latency, latency+jitter)
		}
	})
}

func TestLink_LossRate(t *testing.T) {
	const count = 10000
	for _, loss := range []float64{0, 0.1, 0.5, 1} {
		n := New(7)
		setDefaultLink(t, n, LinkConfig{Loss: loss})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		read := sendIDs(t, n, a, b, count)
		s := n.Stats()
		if read != s.Delivered {
			t.Errorf("loss %v: read %d, delivered %d", loss, read, s.Delivered)
		}
		checkConservation(t, s)
		// Binomial: the standard deviation is at most 50; allow 4 of them.
		want := loss * count
		if got := float64(s.Lost); got < want-200 || got > want+200 {
			t.Errorf("loss %v: %d of %d lost, want %v±200", loss, s.Lost, count, want)
		}
		if s.Delivered+s.Lost != count {
			t.Errorf("loss %v: delivered %d + lost %d != %d", loss, s.Delivered, s.Lost, count)
		}
	}
}

func TestLink_Duplicate(t *testing.T) {
	t.Run("Always", func(t *testing.T) {
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Duplicate: 1})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		mustWrite(t, a, []byte("twice"), b.LocalAddr())
		if s := n.Stats(); s.Sent != 1 || s.Duplicated != 1 || s.Delivered != 2 {
			t.Fatalf("stats = %+v, want 1 sent, 1 duplicated, 2 delivered", s)
		}
		for range 2 {
			if got, _ := readOne(t, b); string(got) != "twice" {
				t.Errorf("got %q, want %q", got, "twice")
			}
		}
	})
	t.Run("Rate", func(t *testing.T) {
		const count = 10000
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Duplicate: 0.25, Loss: 0.2})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		read := sendIDs(t, n, a, b, count)
		s := n.Stats()
		if read != s.Delivered {
			t.Errorf("read %d, delivered %d", read, s.Delivered)
		}
		checkConservation(t, s)
		// Duplication applies to the datagrams not lost: 0.8*0.25 of all.
		if got := float64(s.Duplicated); got < 2000-200 || got > 2000+200 {
			t.Errorf("%d duplicated of %d sent with 20%% loss; want 2000±200", s.Duplicated, count)
		}
		if s.Delivered != count-s.Lost+s.Duplicated {
			t.Errorf("stats = %+v: delivered != sent - lost + duplicated", s)
		}
	})
}

func TestLink_Reorder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			latency = 10 * time.Millisecond
			count   = 1000
			gap     = 100 * time.Microsecond
		)
		n := New(5)
		setDefaultLink(t, n, LinkConfig{Latency: latency, Reorder: 0.2})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		start := time.Now()
		out := make(chan []arrival, 1)
		go collect(b, start, out)
		for i := range count {
			sendID(t, a, b.LocalAddr(), i)
			time.Sleep(gap)
		}
		time.Sleep(time.Second)
		b.Close()
		got := <-out

		s := n.Stats()
		if s.Reordered < 150 || s.Reordered > 250 {
			t.Errorf("%d of %d reordered, want 200±50", s.Reordered, count)
		}
		var late, descents uint64
		seen := make([]bool, count)
		for i, r := range got {
			if seen[r.ID] {
				t.Errorf("id %d arrived twice", r.ID)
			}
			seen[r.ID] = true
			// The default extra delay of a reordered datagram is the latency.
			switch d := r.Elapsed - time.Duration(r.ID)*gap; d {
			case latency:
			case 2 * latency:
				late++
			default:
				t.Errorf("id %d took %v, want %v or %v", r.ID, d, latency, 2*latency)
			}
			if i > 0 && r.ID < got[i-1].ID {
				descents++
			}
		}
		if len(got) != count {
			t.Errorf("%d arrived, want %d", len(got), count)
		}
		if late != s.Reordered {
			t.Errorf("%d arrived late, but Stats.Reordered = %d", late, s.Reordered)
		}
		if descents == 0 {
			t.Error("arrivals are in send order; reordering did nothing")
		}
	})
}

func TestLink_SetLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		a, b, c := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1"), listen(t, n, "10.0.0.3:1")
		if err := n.SetLink(b.LocalAddr().Addr(), a.LocalAddr().Addr(), LinkConfig{Latency: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			from, to *Conn
			want     time.Duration
		}{{a, b, 50 * time.Millisecond}, {b, a, 50 * time.Millisecond}, {a, c, 0}, {c, b, 0}} {
			start := time.Now()
			mustWrite(t, tc.from, []byte("x"), tc.to.LocalAddr())
			readOne(t, tc.to)
			if got := time.Since(start); got != tc.want {
				t.Errorf("%v -> %v took %v, want %v", tc.from.LocalAddr(), tc.to.LocalAddr(), got, tc.want)
			}
		}
	})
}

func TestLinkConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  LinkConfig
		want []string // substrings of the error; none means valid
	}{
		{"Zero", LinkConfig{}, nil},
		{"Full", LinkConfig{Latency: time.Second, Jitter: time.Second, Loss: 1, Reorder: 1, Duplicate: 1, ReorderDelay: 1}, nil},
		{"LossAboveOne", LinkConfig{Loss: 1.5}, []string{"link.loss: 1.5 not in [0,1]"}},
		{"NegativeReorder", LinkConfig{Reorder: -0.1}, []string{"link.reorder: -0.1 not in [0,1]"}},
		{"NaNDuplicate", LinkConfig{Duplicate: math.NaN()}, []string{"link.duplicate: NaN not in [0,1]"}},
		{"NegativeDelays", LinkConfig{Latency: -1, Jitter: -2, ReorderDelay: -3}, []string{"link.latency: -1ns not in [0,24h0m0s]", "link.jitter", "link.reorder_delay"}},
		{"HugeJitter", LinkConfig{Jitter: 1<<63 - 1}, []string{"link.jitter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to mention %q", err, w)
				}
			}
			// The setters refuse it and keep the old configuration.
			n := New(1)
			if err := n.SetDefaultLink(tc.cfg); err == nil {
				t.Error("SetDefaultLink accepted an invalid config")
			}
			a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
			if err := n.SetLink(a, b, tc.cfg); err == nil || !strings.Contains(err.Error(), "10.0.0.1-10.0.0.2") {
				t.Errorf("SetLink = %v, want an error naming the link", err)
			}
			if d := cmp.Diff(LinkConfig{}, n.link(a, b), equateAddrs); d != "" {
				t.Errorf("invalid config was applied (-want +got):\n%s", d)
			}
		})
	}
}

func TestConn_Rebind(t *testing.T) {
	n := New(1)
	a, b := listen(t, n, "10.0.0.1:1000"), listen(t, n, "10.0.0.2:2000")
	old := a.LocalAddr()

	mustWrite(t, a, []byte("before"), b.LocalAddr())
	if _, from := readOne(t, b); from != old {
		t.Fatalf("before Rebind peer saw %v, want %v", from, old)
	}

	pub := a.Rebind()
	if pub == old || pub.Addr() != old.Addr() {
		t.Fatalf("Rebind = %v; want a new port on %v", pub, old.Addr())
	}
	if a.PublicAddr() != pub || a.LocalAddr() != old {
		t.Errorf("after Rebind PublicAddr = %v, LocalAddr = %v; want %v, %v", a.PublicAddr(), a.LocalAddr(), pub, old)
	}

	mustWrite(t, a, []byte("after"), b.LocalAddr())
	got, from := readOne(t, b)
	if string(got) != "after" || from != pub {
		t.Errorf("after Rebind peer got %q from %v, want %q from %v", got, from, "after", pub)
	}
	// A reply to the new address arrives; one to the old address is dropped.
	mustWrite(t, b, []byte("to old"), old)
	mustWrite(t, b, []byte("to new"), pub)
	if got, from := readOne(t, a); string(got) != "to new" || from != b.LocalAddr() {
		t.Errorf("a got %q from %v, want %q from %v", got, from, "to new", b.LocalAddr())
	}
	s := n.Stats()
	if s.DroppedNoListener != 1 {
		t.Errorf("DroppedNoListener = %d, want 1 (the reply to the old address)", s.DroppedNoListener)
	}
	// Both the bound and the public address stay taken.
	for _, ap := range []netip.AddrPort{old, pub} {
		if _, err := n.Listen(ap); !errors.Is(err, ErrAddrInUse) {
			t.Errorf("Listen(%v) = %v, want ErrAddrInUse", ap, err)
		}
	}
	// Rebinding again moves on and frees the previous public address.
	pub2 := a.Rebind()
	if pub2 == pub || pub2 == old {
		t.Errorf("second Rebind = %v, want a port other than %v and %v", pub2, pub, old)
	}
	listen(t, n, pub.String())
	a.Close()
	listen(t, n, old.String())
}

func TestConn_Rebind_InFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Latency: 10 * time.Millisecond})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		mustWrite(t, b, []byte("x"), a.LocalAddr())
		a.Rebind()
		time.Sleep(time.Second)
		if s := n.Stats(); s.DroppedNoListener != 1 || s.Delivered != 0 {
			t.Errorf("stats = %+v; a datagram in flight to the old address should be dropped", s)
		}
	})
}

// outcome runs a lossy, jittery, reordering, duplicating exchange and
// returns everything a test could observe.
func outcome(t *testing.T, seed uint64) (ports []netip.AddrPort, got []arrival, s Stats) {
	synctest.Test(t, func(t *testing.T) {
		n := New(seed)
		setDefaultLink(t, n, LinkConfig{
			Latency: 20 * time.Millisecond, Jitter: 10 * time.Millisecond,
			Loss: 0.1, Reorder: 0.1, Duplicate: 0.1,
		})
		a, b := listen(t, n, "10.0.0.1:0"), listen(t, n, "[fd00::2]:0")
		a6 := listen(t, n, "[fd00::1]:0")
		ports = []netip.AddrPort{a.LocalAddr(), b.LocalAddr(), a6.LocalAddr(), a.Rebind()}
		start := time.Now()
		out := make(chan []arrival, 1)
		go collect(b, start, out)
		for i := range 500 {
			sendID(t, a6, b.LocalAddr(), i)
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Second)
		b.Close()
		got = <-out
		s = n.Stats()
		checkConservation(t, s)
	})
	return ports, got, s
}

func TestNetwork_SameSeedSameOutcome(t *testing.T) {
	p1, got1, s1 := outcome(t, 99)
	p2, got2, s2 := outcome(t, 99)
	if d := cmp.Diff(p1, p2, equateAddrs); d != "" {
		t.Errorf("ports differ (-first +second):\n%s", d)
	}
	if d := cmp.Diff(got1, got2, equateAddrs); d != "" {
		t.Errorf("arrivals differ (-first +second):\n%s", d)
	}
	if d := cmp.Diff(s1, s2, equateAddrs); d != "" {
		t.Errorf("stats differ (-first +second):\n%s", d)
	}
	if s1.Lost == 0 || s1.Duplicated == 0 || s1.Reordered == 0 {
		t.Errorf("stats %+v: the scenario should lose, duplicate and reorder", s1)
	}
	_, got3, _ := outcome(t, 100)
	if cmp.Equal(got1, got3, equateAddrs) {
		t.Error("seeds 99 and 100 gave the same arrivals")
	}
}

func TestConn_ConcurrentSenders(t *testing.T) {
	const (
		senders = 8
		each    = 2000
		total   = senders * each
	)
	for _, tc := range []struct {
		name string
		link LinkConfig
	}{
		{"Immediate", LinkConfig{}},
		{"Delayed", LinkConfig{Latency: time.Millisecond, Jitter: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			setDefaultLink(t, n, tc.link)
			rx := listen(t, n, "10.0.0.100:1")
			setQueueLen(t, rx, total)
			var txs []*Conn
			for s := range senders {
				txs = append(txs, listen(t, n, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(s + 1)}), 1).String()))
			}
			other := listen(t, n, "10.0.0.200:1")

			// The reader runs while the senders send, checking that each
			// sender's datagrams arrive once and in order.
			readErr := make(chan error, 1)
			go func() {
				next := map[netip.AddrPort]int{}
				bufs := make([][]byte, 64)
				for i := range bufs {
					bufs[i] = make([]byte, 4)
				}
				sizes, from := make([]int, 64), make([]netip.AddrPort, 64)
				for got := 0; got < total; {
					k, err := rx.ReadBatch(bufs, sizes, from)
					if err != nil {
						readErr <- fmt.Errorf("after %d datagrams: %w", got, err)
						return
					}
					for i := range k {
						id := int(binary.BigEndian.Uint32(bufs[i]))
						if id != next[from[i]] {
							readErr <- fmt.Errorf("from %v: id %d, want %d", from[i], id, next[from[i]])
							return
						}
						next[from[i]]++
					}
					got += k
				}
				readErr <- nil
			}()

			var wg sync.WaitGroup
			for _, c := range txs {
				wg.Go(func() {
					bufs := make([][]byte, 4)
					to := make([]netip.AddrPort, 4)
					for i := 0; i < each; i += 4 {
						for j := range 4 {
							bufs[j] = binary.BigEndian.AppendUint32(nil, uint32(i+j))
							to[j] = rx.LocalAddr()
						}
						if k, err := c.WriteBatch(bufs, to); k != 4 || err != nil {
							t.Errorf("WriteBatch = %d, %v", k, err)
							return
						}
					}
				})
			}
			wg.Go(func() { // races with the senders and the reader
				for range 100 {
					n.Stats()
					other.Rebind()
					mustWrite(t, other, []byte("x"), other.LocalAddr())
				}
			})
			wg.Wait()

			select {
			case err := <-readErr:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				rx.Close()
				t.Fatalf("reader did not get %d datagrams in 30s; stats %+v", total, n.Stats())
			}
			s := n.Stats()
			checkConservation(t, s)
			if s.Delivered != total || s.InFlight != 0 {
				t.Errorf("stats %+v; want %d delivered, none in flight", s, total)
			}
		})
	}
}

func TestLink_InOrderAcrossChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Latency: 50 * time.Millisecond})
		a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
		start := time.Now()
		sendID(t, a, b.LocalAddr(), 0)
		// A faster link does not let the next datagram overtake the first.
		setDefaultLink(t, n, LinkConfig{})
		sendID(t, a, b.LocalAddr(), 1)
		for want := range 2 {
			got, _ := readOne(t, b)
			if id := int(binary.BigEndian.Uint32(got)); id != want || time.Since(start) != 50*time.Millisecond {
				t.Errorf("got id %d at %v, want id %d at 50ms", id, time.Since(start), want)
			}
		}
		// Once the path is empty, the perfect link delivers at once.
		sendID(t, a, b.LocalAddr(), 2)
		if s := n.Stats(); s.Delivered != 3 {
			t.Errorf("Delivered = %d, want 3", s.Delivered)
		}
	})
}

func TestNetwork_ThousandConns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const count = 1000
		n := New(1)
		setDefaultLink(t, n, LinkConfig{Latency: 10 * time.Millisecond})

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]*Conn, count)
		for i := range conns {
			conns[i] = listen(t, n, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1).String())
		}
		runtime.ReadMemStats(&after)
		perConn := (after.TotalAlloc - before.TotalAlloc) / count
		t.Logf("%d bytes allocated per idle Conn", perConn)
		if perConn > 1024 {
			t.Errorf("%d bytes allocated per idle Conn, want at most 1 KiB", perConn)
		}

		goroutines := runtime.NumGoroutine()
		start := time.Now()
		for i, c := range conns {
			sendID(t, c, conns[(i+1)%count].LocalAddr(), i)
		}
		if got := runtime.NumGoroutine(); got != goroutines {
			t.Errorf("%d goroutines with %d datagrams in flight, want %d as before", got, count, goroutines)
		}
		for i, c := range conns {
			got, from := readOne(t, c)
			want := (i + count - 1) % count
			if id := int(binary.BigEndian.Uint32(got)); id != want || from != conns[want].LocalAddr() {
				t.Fatalf("conn %d got id %d from %v, want %d from %v", i, id, from, want, conns[want].LocalAddr())
			}
		}
		if d := time.Since(start); d != 10*time.Millisecond {
			t.Errorf("all arrived after %v, want 10ms", d)
		}
	})
}

func TestConn_WriteRead_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	n := New(1)
	a, b := listen(t, n, "10.0.0.1:1"), listen(t, n, "10.0.0.2:1")
	msg := make([]byte, 1400)
	bufs := [][]byte{make([]byte, transport.MaxPacket), make([]byte, transport.MaxPacket)}
	sizes, from := make([]int, 2), make([]netip.AddrPort, 2)
	to := []netip.AddrPort{b.LocalAddr(), b.LocalAddr()}
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"WriteTo", func() {
			if err := a.WriteTo(msg, b.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if k, err := b.ReadBatch(bufs, sizes, from); k != 1 || err != nil {
				t.Fatal(k, err)
			}
		}},
		{"WriteBatch", func() {
			if k, err := a.WriteBatch([][]byte{msg, msg}, to); k != 2 || err != nil {
				t.Fatal(k, err)
			}
			if k, err := b.ReadBatch(bufs, sizes, from); k != 2 || err != nil {
				t.Fatal(k, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, tc.f); got != 0 {
				t.Errorf("%v allocations per run, want 0", got)
			}
		})
	}
}

func BenchmarkConn_WriteRead(b *testing.B) {
	for _, size := range []int{1400} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			n := New(1)
			tx, rx := listen(b, n, "10.0.0.1:1"), listen(b, n, "10.0.0.2:1")
			msg := make([]byte, size)
			bufs := [][]byte{make([]byte, transport.MaxPacket)}
			sizes, from := make([]int, 1), make([]netip.AddrPort, 1)
			dst := rx.LocalAddr()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := tx.WriteTo(msg, dst); err != nil {
					b.Fatal(err)
				}
				if _, err := rx.ReadBatch(bufs, sizes, from); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
