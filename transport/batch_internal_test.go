package transport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"go.uber.org/zap"
)

// batchConn records sends and how they were made.
type batchConn struct {
	quietConn
	bmu     sync.Mutex
	batches []int // datagrams per WriteBatch
	singles int   // WriteTo calls
}

func (c *batchConn) WriteTo(b []byte, to netip.AddrPort) error {
	c.bmu.Lock()
	c.singles++
	c.bmu.Unlock()
	return c.quietConn.WriteTo(b, to)
}

func (c *batchConn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	c.bmu.Lock()
	c.batches = append(c.batches, len(bufs))
	c.bmu.Unlock()
	for i := range bufs {
		c.quietConn.WriteTo(bufs[i], to[i])
	}
	return len(bufs), nil
}

func (c *batchConn) sentStrings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []string
	for _, b := range c.sent {
		s = append(s, string(b))
	}
	return s
}

func newBatchMux(t *testing.T) (*Mux, *batchConn) {
	t.Helper()
	c := &batchConn{quietConn: quietConn{closed: make(chan struct{})}}
	m, err := NewMux(c, Default(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, c
}

func TestMux_Cork_HoldsUntilUncork(t *testing.T) {
	m, c := newBatchMux(t)
	if err := m.write([]byte("direct"), peerA); err != nil {
		t.Fatal(err)
	}
	m.Cork()
	buf := []byte("one")
	m.write(buf, peerA)
	copy(buf, "xxx") // the Mux keeps a copy, not the caller's buffer
	m.write([]byte("two"), peerB)
	m.write([]byte("three"), peerA)
	if got := c.sentStrings(); len(got) != 1 {
		t.Fatalf("sent while corked: %q", got)
	}
	m.Uncork()
	if got, want := c.sentStrings(), []string{"direct", "one", "two", "three"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
	if c.singles != 1 || len(c.batches) != 1 || c.batches[0] != 3 {
		t.Fatalf("%d single writes, batches %v; want 1 and [3]", c.singles, c.batches)
	}
	if s := m.Stats(); s.Flushes != 1 || s.Flushed != 3 {
		t.Fatalf("stats: %d flushes of %d datagrams, want 1 of 3", s.Flushes, s.Flushed)
	}
	m.Cork()
	m.Uncork() // nothing held: no empty batch
	if len(c.batches) != 1 {
		t.Fatalf("an empty Uncork wrote a batch")
	}
}

// Two corks: the first Uncork sends everything held, the second cork
// goes on holding what comes after.
func TestMux_Cork_Nested(t *testing.T) {
	m, c := newBatchMux(t)
	m.Cork()
	m.Cork()
	m.write([]byte("a"), peerA)
	m.Uncork()
	m.write([]byte("b"), peerA)
	if got := c.sentStrings(); fmt.Sprint(got) != "[a]" {
		t.Fatalf("after the first Uncork sent %q, want [a]", got)
	}
	m.Uncork()
	m.write([]byte("c"), peerA)
	if got := c.sentStrings(); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("sent %q, want [a b c]", got)
	}
}

// A long corked burst flushes every batchDatagrams, losing nothing.
func TestMux_Cork_FlushesWhenFull(t *testing.T) {
	m, c := newBatchMux(t)
	const n = 3*batchDatagrams + 7
	m.Cork()
	for i := range n {
		m.write(bytes.Repeat([]byte{byte(i)}, 1+i%1500), peerA)
	}
	m.Uncork()
	got := c.sentStrings()
	if len(got) != n {
		t.Fatalf("sent %d, want %d", len(got), n)
	}
	for i, s := range got {
		if want := string(bytes.Repeat([]byte{byte(i)}, 1+i%1500)); s != want {
			t.Fatalf("datagram %d differs", i)
		}
	}
	if fmt.Sprint(c.batches) != fmt.Sprint([]int{batchDatagrams, batchDatagrams, batchDatagrams, 7}) {
		t.Fatalf("batches %v", c.batches)
	}
}

// Writers racing corks and uncorks lose nothing and send nothing twice.
func TestMux_Cork_Concurrent(t *testing.T) {
	m, c := newBatchMux(t)
	const writers, each = 4, 500
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var corker sync.WaitGroup
	corker.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			m.Cork()
			m.Uncork()
		}
	})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if i%10 == 0 {
					m.Cork()
				}
				m.write(fmt.Appendf(nil, "%d/%d", w, i), peerA)
				if i%10 == 9 {
					m.Uncork()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	corker.Wait()
	seen := map[string]bool{}
	for _, s := range c.sentStrings() {
		if seen[s] {
			t.Fatalf("%q sent twice", s)
		}
		seen[s] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("sent %d datagrams, want %d", len(seen), writers*each)
	}
}

// segConn hands the Mux merged reads, as a socket with UDP GRO does.
type segConn struct {
	quietConn
	reads chan segRead
}

type segRead struct {
	data []byte
	seg  int
}

func (c *segConn) ReadSegments(bufs [][]byte, sizes, segs []int, from []netip.AddrPort) (int, error) {
	select {
	case r := <-c.reads:
		sizes[0] = copy(bufs[0], r.data)
		segs[0], from[0] = r.seg, peerA
		return 1, nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func TestMux_ReadsMergedDatagrams(t *testing.T) {
	c := &segConn{quietConn: quietConn{closed: make(chan struct{})}, reads: make(chan segRead)}
	m, err := NewMux(c, Default(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, _ := m.Dial(context.Background(), peerA)
	p.Established()
	got := make(chan []byte, 8)
	p.SetHandler(func(b []byte, _ netip.AddrPort) { got <- bytes.Clone(b) })
	r1, r2, r3 := sealedRecord(p.LocalID(), 100), sealedRecord(p.LocalID(), 100), sealedRecord(p.LocalID(), 40)
	r2[SealedHeaderLen] = 2
	merged := append(append(append([]byte{}, r1...), r2...), r3...)
	c.reads <- segRead{merged, len(r1)}
	c.reads <- segRead{r1, len(r1)} // one datagram, not merged
	for i, want := range [][]byte{r1, r2, r3, r1} {
		if b := <-got; !bytes.Equal(b, want) {
			t.Fatalf("record %d: %d bytes, want %d", i, len(b), len(want))
		}
	}
	if s := m.Stats(); s.Datagrams != 4 || s.Sealed != 4 {
		t.Fatalf("stats %+v, want 4 datagrams", s)
	}
}
