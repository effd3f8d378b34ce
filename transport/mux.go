package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// DTLS record layout (RFC 6347 section 4.1, RFC 9146 section 4).
const (
	dtlsFirst          = 20 // RFC 7983: 20..63 is DTLS
	dtlsLast           = 63
	dtlsHeaderLen      = 13
	dtlsHandshake      = 22
	dtlsCIDRecord      = 25 // tls12_cid
	dtlsCIDOffset      = 11
	handshakeHeaderLen = 12
	clientHelloType    = 1
	randomLen          = 32
	// record header, handshake header, client_version, random
	clientHelloMinLen = dtlsHeaderLen + handshakeHeaderLen + 2 + randomLen
)

// Mux demultiplexes one PacketConn into per-session pipes.
//
// A session is created by Dial, or by a ClientHello from a peer (delivered
// by Accept). Until its handshake finishes a session is found by the peer's
// address, so one address has at most one handshaking session; afterwards
// only by its connection ID. All methods are safe for concurrent use.
type Mux struct {
	// immutable after NewMux
	cfg    Config
	log    *zap.Logger
	accept chan *Pipe
	closed chan struct{}

	conn    atomic.Pointer[connBox] // replaced by Rebind
	readers sync.WaitGroup
	stats   counters
	batch   writeBatch // datagrams held back by Cork

	// mu guards the following
	mu        sync.RWMutex
	byID      map[ConnID]*Pipe
	byAddr    map[netip.AddrPort]*Pipe // sessions still handshaking
	pending   int                      // accepted sessions still handshaking
	closeOnce sync.Once
	isClosed  bool
}

// connBox lets the socket be swapped atomically: an interface value can't
// be the target of atomic.Pointer.
type connBox struct{ PacketConn }

// NewMux starts demultiplexing conn. The Mux owns conn and closes it.
func NewMux(conn PacketConn, cfg Config, log *zap.Logger) (*Mux, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Mux{
		cfg:    cfg,
		log:    log.Named("transport"),
		accept: make(chan *Pipe, cfg.MaxPending),
		closed: make(chan struct{}),
		byID:   make(map[ConnID]*Pipe),
		byAddr: make(map[netip.AddrPort]*Pipe),
	}
	m.start(conn)
	return m, nil
}

func (m *Mux) start(conn PacketConn) {
	box := &connBox{conn}
	m.conn.Store(box)
	m.readers.Add(1)
	go m.readLoop(box)
}

// LocalAddr is the address of the current socket.
func (m *Mux) LocalAddr() netip.AddrPort { return m.conn.Load().LocalAddr() }

// Rebind moves every session onto conn and closes the old socket, as a
// node does when its local address changes. Peers follow by connection ID.
func (m *Mux) Rebind(conn PacketConn) error {
	m.mu.Lock()
	if m.isClosed {
		m.mu.Unlock()
		conn.Close()
		return net.ErrClosed
	}
	old := m.conn.Load()
	m.start(conn)
	m.mu.Unlock()
	m.log.Info("socket rebound", zap.Stringer("old", old.LocalAddr()), zap.Stringer("addr", conn.LocalAddr()))
	return old.Close()
}

// Close closes the socket and every pipe, and waits for the reader to stop.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.isClosed = true
		pipes := make([]*Pipe, 0, len(m.byID))
		for _, p := range m.byID {
			pipes = append(pipes, p)
		}
		close(m.closed)
		m.mu.Unlock()
		for _, p := range pipes {
			p.Close()
		}
		err = m.conn.Load().Close()
		m.readers.Wait()
	})
	return err
}

// Dial opens a session towards remote. If a handshake with remote is
// already under way (ours or the peer's), Dial waits for it to finish first:
// before the handshake, records can only be told apart by address.
func (m *Mux) Dial(ctx context.Context, remote netip.AddrPort) (*Pipe, error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.IsValid() || remote.Port() == 0 {
		return nil, fmt.Errorf("transport: dial %s: not a valid address and port", remote)
	}
	for {
		m.mu.Lock()
		if m.isClosed {
			m.mu.Unlock()
			return nil, net.ErrClosed
		}
		if busy := m.byAddr[remote]; busy != nil {
			wait := busy.handshakeDone
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-m.closed:
				return nil, net.ErrClosed
			}
		}
		p := m.newPipeLocked(remote, true)
		m.mu.Unlock()
		return p, nil
	}
}

// Accept returns the next session a peer opened with a ClientHello.
func (m *Mux) Accept(ctx context.Context) (*Pipe, error) {
	select {
	case p := <-m.accept:
		return p, nil
	default:
	}
	select {
	case p := <-m.accept:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

// Stats returns the Mux counters.
func (m *Mux) Stats() Stats { return m.stats.snapshot() }

// Pipes is the number of open sessions.
func (m *Mux) Pipes() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byID)
}

// newPipeLocked registers a handshaking pipe. m.mu must be held.
func (m *Mux) newPipeLocked(remote netip.AddrPort, dialed bool) *Pipe {
	var id ConnID
	for {
		if _, err := rand.Read(id[:]); err != nil {
			panic("transport: crypto/rand failed: " + err.Error()) // never returns an error on Linux
		}
		if _, taken := m.byID[id]; !taken {
			break
		}
	}
	p := newPipe(m, id, remote, dialed)
	m.byID[id] = p
	m.byAddr[remote] = p
	if !dialed {
		m.pending++
	}
	return p
}

// leaveHandshakeLocked stops routing by address to p. m.mu must be held.
func (m *Mux) leaveHandshakeLocked(p *Pipe) {
	if !p.handshaking {
		return
	}
	p.handshaking = false
	if m.byAddr[p.handshakeAddr] == p {
		delete(m.byAddr, p.handshakeAddr)
	}
	if !p.dialed {
		m.pending--
	}
	close(p.handshakeDone)
}

func (m *Mux) established(p *Pipe) {
	m.mu.Lock()
	m.leaveHandshakeLocked(p)
	m.mu.Unlock()
}

func (m *Mux) remove(p *Pipe) {
	m.mu.Lock()
	m.leaveHandshakeLocked(p)
	if m.byID[p.id] == p {
		delete(m.byID, p.id)
	}
	m.mu.Unlock()
}

func (m *Mux) readLoop(box *connBox) {
	defer m.readers.Done()
	batch, size := box.BatchSize(), MaxPacket
	sr, merged := box.PacketConn.(SegmentReader)
	if merged {
		// A merged read is up to 64 KiB: fewer, larger buffers.
		batch, size = max(1, batch/2), 65535
	}
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	sizes, segs := make([]int, batch), make([]int, batch)
	from := make([]netip.AddrPort, batch)
	for {
		var n int
		var err error
		if merged {
			n, err = sr.ReadSegments(bufs, sizes, segs, from)
		} else {
			n, err = box.ReadBatch(bufs, sizes, from)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || m.conn.Load() != box {
				return
			}
			m.stats.readErrors.Add(1)
			if ce := m.log.Check(zap.DebugLevel, "read error"); ce != nil {
				ce.Write(zap.Error(err))
			}
			continue
		}
		// Answers and forwarded records sent while handling the batch
		// leave together.
		m.Cork()
		for i := range n {
			b := bufs[i][:sizes[i]]
			if !merged || segs[i] <= 0 || segs[i] >= len(b) {
				m.stats.datagrams.Add(1)
				m.dispatch(b, from[i])
				continue
			}
			for len(b) > 0 {
				k := min(segs[i], len(b))
				m.stats.datagrams.Add(1)
				m.dispatch(b[:k], from[i])
				b = b[k:]
			}
		}
		m.Uncork()
	}
}

// dispatch routes one datagram. b is only valid during the call.
func (m *Mux) dispatch(b []byte, from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	switch {
	case len(b) == 0:
		m.stats.dropShort.Add(1)
	case b[0] == SealedRecordType:
		if len(b) < SealedHeaderLen {
			m.stats.dropShort.Add(1)
			return
		}
		p := m.lookup(ConnID(b[1 : 1+ConnIDLen]))
		if p == nil {
			m.stats.dropUnknownID.Add(1)
			return
		}
		h := p.handler.Load()
		if h == nil {
			m.stats.dropNoHandler.Add(1)
			return
		}
		m.stats.sealed.Add(1)
		(*h)(b, from)
	case b[0] >= dtlsFirst && b[0] <= dtlsLast:
		m.dispatchDTLS(b, from)
	default:
		m.stats.dropGarbage.Add(1)
	}
}

func (m *Mux) lookup(id ConnID) *Pipe {
	m.mu.RLock()
	p := m.byID[id]
	m.mu.RUnlock()
	return p
}

func (m *Mux) dispatchDTLS(b []byte, from netip.AddrPort) {
	if len(b) < dtlsHeaderLen {
		m.stats.dropShort.Add(1)
		return
	}
	if b[0] == dtlsCIDRecord {
		if len(b) < dtlsCIDOffset+ConnIDLen+2 {
			m.stats.dropShort.Add(1)
			return
		}
		p := m.lookup(ConnID(b[dtlsCIDOffset : dtlsCIDOffset+ConnIDLen]))
		if p == nil {
			m.stats.dropUnknownID.Add(1)
			return
		}
		p.deliverControl(b, from)
		return
	}

	random, isHello := ClientHelloRandom(b)
	m.mu.Lock()
	p := m.byAddr[from]
	switch {
	case p == nil && !isHello:
		m.mu.Unlock()
		m.stats.dropNoSession.Add(1)
		return
	case p == nil:
		p = m.acceptLocked(from, random)
	case !isHello:
		// a later flight of a handshake under way
	case bytes.Equal(p.helloRandom[:], random):
		// a retransmitted ClientHello, or its echo with a cookie
	case p.dialed && !p.haveRandom:
		// we dialed but pion has not sent our ClientHello yet: let the
		// peer's handshake win, ours has not started.
		m.loseLocked(p, ErrGlare)
		p = m.acceptLocked(from, random)
	case p.dialed && bytes.Compare(random, p.helloRandom[:]) > 0:
		// Both sides dialed at once. Both compare the same two randoms,
		// so both keep the same handshake: the higher random's.
		m.loseLocked(p, ErrGlare)
		m.stats.glare.Add(1)
		p = m.acceptLocked(from, random)
	case p.dialed:
		m.stats.glare.Add(1)
		m.stats.dropGlare.Add(1)
		p = nil // ours wins; the peer drops its own session
	default:
		// The peer abandoned its handshake and started another.
		m.loseLocked(p, ErrReplaced)
		p = m.acceptLocked(from, random)
	}
	m.mu.Unlock()
	if p != nil {
		p.deliverControl(b, from)
	}
}

// acceptLocked creates a session for a ClientHello, or returns nil when
// the pending bound or the accept queue is full. m.mu must be held.
func (m *Mux) acceptLocked(from netip.AddrPort, random []byte) *Pipe {
	if m.isClosed {
		return nil
	}
	if m.pending >= m.cfg.MaxPending {
		m.stats.dropPendingFull.Add(1)
		return nil
	}
	p := m.newPipeLocked(from, false)
	copy(p.helloRandom[:], random)
	p.haveRandom = true
	select {
	case m.accept <- p:
		m.stats.accepted.Add(1)
		return p
	default:
		m.stats.dropPendingFull.Add(1)
		m.leaveHandshakeLocked(p)
		delete(m.byID, p.id)
		return nil
	}
}

// loseLocked stops a handshaking pipe from receiving by address and fails
// its DTLS engine with err. m.mu must be held.
func (m *Mux) loseLocked(p *Pipe, err error) {
	m.leaveHandshakeLocked(p)
	p.fail(err)
}

// ClientHelloRandom reports whether b starts with a DTLS record that holds
// the first fragment of a ClientHello, and returns the hello's random.
// It reads b only; the slice it returns aliases b.
func ClientHelloRandom(b []byte) (random []byte, ok bool) {
	if len(b) < clientHelloMinLen || b[0] != dtlsHandshake {
		return nil, false
	}
	if b[3] != 0 || b[4] != 0 { // epoch 0
		return nil, false
	}
	recordLen := int(b[11])<<8 | int(b[12])
	if recordLen < handshakeHeaderLen+2+randomLen || recordLen > len(b)-dtlsHeaderLen {
		return nil, false
	}
	h := b[dtlsHeaderLen:]
	if h[0] != clientHelloType {
		return nil, false
	}
	fragOffset := int(h[6])<<16 | int(h[7])<<8 | int(h[8])
	fragLen := int(h[9])<<16 | int(h[10])<<8 | int(h[11])
	if fragOffset != 0 || fragLen < 2+randomLen || fragLen > recordLen-handshakeHeaderLen {
		return nil, false
	}
	start := dtlsHeaderLen + handshakeHeaderLen + 2
	return b[start : start+randomLen], true
}
