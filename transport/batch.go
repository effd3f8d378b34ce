package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// SegmentReader is a PacketConn that can read datagrams the kernel
// merged (UDP GRO): bufs[i][:sizes[i]] holds datagrams from from[i], each
// segs[i] bytes long but the last. The Mux reads through it when the
// socket offers it; *udp.Conn does.
type SegmentReader interface {
	ReadSegments(bufs [][]byte, sizes, segs []int, from []netip.AddrPort) (int, error)
}

// writeBatch holds the datagrams sent while a Mux is corked. A batch
// flushes early at batchDatagrams, which keeps each flush within a few
// sendmmsg calls.
type writeBatch struct {
	corks atomic.Int32 // Cork calls not yet matched by Uncork

	mu   sync.Mutex
	slab []byte // the datagrams back to back; grows to what a batch needs
	bufs [][]byte
	to   []netip.AddrPort
}

const batchDatagrams = 256

// Cork holds back the datagrams sent through the Mux, from every
// goroutine, until the next Uncork, which sends them all with as few
// system calls as the socket allows: sendmmsg, and one UDP GSO message
// per run to one peer. A goroutine that is about to send many datagrams
// at once (a batch of frames from the TAP device, a batch read from the
// socket) corks around the work. Every Cork must be followed by Uncork
// soon, and nothing may wait for a reply to a datagram sent while corked.
func (m *Mux) Cork() { m.batch.corks.Add(1) }

// Uncork ends one Cork and sends every datagram held back, including
// those of goroutines whose Cork is still on.
func (m *Mux) Uncork() {
	b := &m.batch
	b.mu.Lock()
	// Flushed before the count drops: a write that finds the Mux
	// uncorked goes straight out, and must not overtake the batch.
	m.flushLocked()
	b.corks.Add(-1)
	b.mu.Unlock()
}

// write sends one datagram, or holds a copy of it while the Mux is corked.
func (m *Mux) write(p []byte, to netip.AddrPort) error {
	b := &m.batch
	if b.corks.Load() > 0 {
		b.mu.Lock()
		// Checked again under the lock: an Uncork that flushed meanwhile
		// would leave the datagram behind.
		if b.corks.Load() > 0 {
			if len(b.bufs) == batchDatagrams {
				m.flushLocked()
			}
			off := len(b.slab)
			b.slab = append(b.slab, p...)
			b.bufs = append(b.bufs, b.slab[off:len(b.slab):len(b.slab)])
			b.to = append(b.to, to)
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
	}
	return m.conn.Load().WriteTo(p, to)
}

// flushLocked sends the held datagrams. b.mu is held, which keeps them in
// order with the next batch.
func (m *Mux) flushLocked() {
	b := &m.batch
	if len(b.bufs) == 0 {
		return
	}
	n, err := m.conn.Load().WriteBatch(b.bufs, b.to)
	m.stats.flushes.Add(1)
	m.stats.flushed.Add(uint64(n))
	if err != nil && !errors.Is(err, net.ErrClosed) {
		m.stats.writeErrors.Add(1)
		if ce := m.log.Check(zap.DebugLevel, "batched write failed"); ce != nil {
			ce.Write(zap.Int("datagrams", len(b.bufs)), zap.Error(err))
		}
	}
	clear(b.bufs) // drop references to slabs a growing batch left behind
	b.slab, b.bufs, b.to = b.slab[:0], b.bufs[:0], b.to[:0]
}
