package security

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security/record"
)

// Record kinds carried in the authenticated header of sealed records.
const (
	kindData byte = iota
	kindKeepalive
	kindHello        // dialer -> acceptor: first record of a new link
	kindRekey        // dialer -> acceptor: first record of a replacement session; payload: old session's acceptor ID
	kindAck          // acceptor -> dialer: hello or rekey taken
	kindClose        // either way: the link is being closed
	kindRekeyRequest // acceptor -> dialer: my send key is near its limit
)

// MaxPayload is the largest packet a Link carries.
const MaxPayload = 9216

// Link errors.
var (
	ErrLinkClosed   = errors.New("security: link closed")
	ErrPeerClosed   = errors.New("security: peer closed the link")
	ErrPeerTimeout  = errors.New("security: peer silent for too long")
	ErrTooBig       = fmt.Errorf("security: packet larger than %d bytes", MaxPayload)
	ErrKeyExhausted = errors.New("security: session key used too often and not yet replaced")
)

// Pipe is the datagram pipe a Link runs over; *transport.Pipe implements
// it over one UDP socket or an in-memory network.
type Pipe interface {
	// ControlConn carries DTLS; its Close only detaches the DTLS engine.
	ControlConn() net.PacketConn
	// LocalID is the connection ID the peer puts on our records.
	LocalID() [8]byte
	// Remote is the peer's current address; SetRemote moves it.
	Remote() netip.AddrPort
	SetRemote(netip.AddrPort)
	// SetHandler installs the receiver of sealed records; b may be
	// modified in place and is valid only during the call.
	SetHandler(func(b []byte, from netip.AddrPort))
	// Send sends one datagram; b is not retained.
	Send(b []byte) error
	// Established frees the peer's address for the next handshake.
	Established()
	// Glared reports a dial that lost a simultaneous open.
	Glared() bool
	Close() error
}

// session is one DTLS handshake's keys over one pipe. A Link has one
// current session; after a rekey the previous one keeps receiving for a
// grace period.
type session struct {
	// immutable after the handshake
	pipe    Pipe
	sealer  *record.Sealer
	opener  *record.Opener
	peerID  [8]byte
	dialed  bool
	created time.Time

	link  atomic.Pointer[Link]
	early *earlyRecords // records that arrived before link was set

	// confirmation: the first hello/rekey (acceptor) or ack (dialer)
	confirmOnce sync.Once
	confirmed   chan struct{}
	firstKind   byte
	firstBody   [8]byte
	accepted    atomic.Bool // the acceptor took the hello/rekey: re-ack duplicates

	mu   sync.Mutex
	dtls *dtls.Conn // kept by the acceptor until confirmed, for retransmissions
}

func (s *session) confirm(kind byte, body []byte) {
	s.confirmOnce.Do(func() {
		s.firstKind = kind
		copy(s.firstBody[:], body)
		close(s.confirmed)
	})
}

// detach drops the DTLS engine; its goroutines end and nothing is sent.
// The pipe's control side is cut first: pion's Close writes a
// close_notify alert, and a peer still finishing its handshake would take
// that alert as the end of the session.
func (s *session) detach() {
	s.mu.Lock()
	c := s.dtls
	s.dtls = nil
	s.mu.Unlock()
	if c != nil {
		s.pipe.ControlConn().Close()
		c.Close()
	}
}

func (s *session) close() {
	s.detach()
	s.pipe.SetHandler(nil)
	s.pipe.Close()
}

// attach makes l the receiver of s's records, starting with any that
// arrived during the handshake.
func (s *session) attach(l *Link) {
	s.link.Store(l)
	if s.early != nil {
		s.early.handOver(s)
		s.early = nil
	}
	s.pipe.SetHandler(s.receive)
}

func (s *session) receive(b []byte, from netip.AddrPort) {
	if l := s.link.Load(); l != nil {
		l.receive(s, b, from)
	}
}

// Link is an authenticated, encrypted packet link with one peer member.
// Send and the handler carry one packet each; nothing above knows whether
// a pipe is a socket, a relay or an in-memory network. Safe for concurrent
// use.
type Link struct {
	// immutable after newLink
	ep            *Endpoint
	log           *zap.Logger
	closed        chan struct{}
	establishedAt time.Time

	peer    atomic.Pointer[Member]
	current atomic.Pointer[session]
	handler atomic.Pointer[func([]byte)]

	// recvMu serialises opening: the replay window has one writer.
	recvMu sync.Mutex

	// mu guards the following
	mu        sync.Mutex
	previous  *session
	rekeying  bool
	requested bool // a rekey request was sent for the current session
	tick      *time.Timer
	lastIn    uint64 // records received at the last tick
	lastOut   uint64 // records sent at the last tick
	// expiry fires when the peer's certificate, or its CA, expires.
	expiry    *time.Timer
	silent    time.Duration
	closeErr  error
	closeOnce sync.Once

	recordsIn, recordsOut atomic.Uint64
	packetsIn, packetsOut atomic.Uint64
	bytesIn, bytesOut     atomic.Uint64
	dropsIn, rekeys       atomic.Uint64
}

// LinkStats is a snapshot of a link's counters.
type LinkStats struct {
	PacketsIn  uint64 `json:"packets_in"`
	PacketsOut uint64 `json:"packets_out"`
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
	DropsIn    uint64 `json:"drops_in"` // records that failed to open (forged, replayed, too old)
	Rekeys     uint64 `json:"rekeys"`
}

func (e *Endpoint) newLink(s *session, peer *Member) *Link {
	l := &Link{
		ep:            e,
		closed:        make(chan struct{}),
		establishedAt: time.Now(),
	}
	l.log = e.log.With(zap.String("peer", peer.Name), zap.Stringer("node", peer.Address))
	l.peer.Store(peer)
	l.current.Store(s)
	s.attach(l)
	return l
}

// Peer is the verified certificate of the member at the other end.
func (l *Link) Peer() *Member { return l.peer.Load() }

// Remote is the peer's current address.
func (l *Link) Remote() netip.AddrPort { return l.current.Load().pipe.Remote() }

// Dialed reports whether this side opened the current session.
func (l *Link) Dialed() bool { return l.current.Load().dialed }

// LocalID is the connection ID of the current session on this side.
func (l *Link) LocalID() [8]byte { return l.current.Load().pipe.LocalID() }

// Since is when the link was established.
func (l *Link) Since() time.Time { return l.establishedAt }

// Done is closed when the link closes; Err then says why.
func (l *Link) Done() <-chan struct{} { return l.closed }

// Err is why the link closed, or nil while it is open.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closeErr
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	return LinkStats{
		PacketsIn: l.packetsIn.Load(), PacketsOut: l.packetsOut.Load(),
		BytesIn: l.bytesIn.Load(), BytesOut: l.bytesOut.Load(),
		DropsIn: l.dropsIn.Load(), Rekeys: l.rekeys.Load(),
	}
}

// SetHandler installs the receiver of packets. It runs on the transport's
// reader goroutine: it must not block, and pkt is valid only during the
// call.
func (l *Link) SetHandler(h func(pkt []byte)) {
	if h == nil {
		l.handler.Store(nil)
		return
	}
	l.handler.Store(&h)
}

// Send seals one packet and sends it to the peer. pkt is not retained.
func (l *Link) Send(pkt []byte) error {
	if err := l.sendOn(l.current.Load(), kindData, pkt); err != nil {
		return err
	}
	l.packetsOut.Add(1)
	l.bytesOut.Add(uint64(len(pkt)))
	return nil
}

func (l *Link) sendOn(s *session, kind byte, pkt []byte) error {
	if len(pkt) > MaxPayload {
		return ErrTooBig
	}
	select {
	case <-l.closed:
		return ErrLinkClosed
	default:
	}
	sent := s.sealer.Sent()
	if limit := l.ep.cfg.RekeyAfterRecords; sent >= limit {
		if sent >= 2*limit {
			return ErrKeyExhausted
		}
		l.keyNearLimit(s)
	}
	buf := l.ep.buffers.get()
	out, err := s.sealer.Seal(buf[:0], kind, pkt)
	if err == nil {
		err = s.pipe.Send(out)
	}
	l.ep.buffers.put(buf)
	if err != nil {
		return err
	}
	l.recordsOut.Add(1)
	return nil
}

// receive opens one sealed record of session s in place.
func (l *Link) receive(s *session, b []byte, from netip.AddrPort) {
	l.recvMu.Lock()
	kind, seq, pt, err := s.opener.Open(b[record.HeaderLen:record.HeaderLen], b)
	if err != nil {
		l.recvMu.Unlock()
		l.dropsIn.Add(1)
		if ce := l.log.Check(zap.DebugLevel, "record dropped"); ce != nil {
			ce.Write(zap.Stringer("addr", from), zap.Error(err))
		}
		return
	}
	// Follow the peer to a new address only for its newest authentic
	// record, so replayed or delayed records can't redirect the link.
	if seq == s.opener.Highest() {
		s.pipe.SetRemote(from)
	}
	l.recvMu.Unlock()
	l.recordsIn.Add(1)

	switch kind {
	case kindData:
		l.packetsIn.Add(1)
		l.bytesIn.Add(uint64(len(pt)))
		if h := l.handler.Load(); h != nil {
			(*h)(pt)
		}
	case kindKeepalive:
	case kindHello, kindRekey:
		if s.dialed {
			return
		}
		s.confirm(kind, pt)
		if s.accepted.Load() {
			l.sendOn(s, kindAck, nil) // the first ack was lost
		}
	case kindAck:
		if s.dialed {
			s.confirm(kind, nil)
		}
	case kindClose:
		// Not inline: closing the pipe waits on the Mux that is calling us.
		l.ep.spawn(func() { l.closeWith(ErrPeerClosed, false) })
	case kindRekeyRequest:
		if s.dialed && s == l.current.Load() {
			l.startRekey()
		}
	}
}

// keyNearLimit starts replacing a session whose key sealed
// RekeyAfterRecords records: the dialer rekeys, the acceptor asks it to.
func (l *Link) keyNearLimit(s *session) {
	if s.dialed {
		l.startRekey()
		return
	}
	l.mu.Lock()
	ask := !l.requested
	l.requested = true
	l.mu.Unlock()
	if ask {
		l.sendOn(s, kindRekeyRequest, nil)
	}
}

// start arms the keepalive, liveness and rekey timer.
func (l *Link) start() {
	l.mu.Lock()
	l.tick = time.AfterFunc(l.ep.cfg.KeepaliveInterval, l.onTick)
	if until := l.Peer().ValidUntil(); !until.IsZero() {
		l.expiry = time.AfterFunc(time.Until(until), l.onExpiry)
	}
	l.mu.Unlock()
}

func (l *Link) onTick() {
	cfg := l.ep.cfg
	if err := l.peerExpired(time.Now()); err != nil { // see onExpiry
		l.closeWith(err, true)
		return
	}
	in, out := l.recordsIn.Load(), l.recordsOut.Load()
	l.mu.Lock()
	if l.closeErr != nil {
		l.mu.Unlock()
		return
	}
	if in == l.lastIn {
		l.silent += cfg.KeepaliveInterval
	} else {
		l.silent = 0
	}
	idle := out == l.lastOut
	l.lastIn, l.lastOut = in, out
	dead := l.silent >= cfg.DeadAfter
	s := l.current.Load()
	age := time.Since(s.created)
	rekey := s.dialed && age >= cfg.RekeyAfter && !l.rekeying
	ask := !s.dialed && age >= cfg.RekeyAfter+cfg.HandshakeTimeout && !l.requested
	if ask {
		l.requested = true
	}
	if !dead {
		l.tick.Reset(cfg.KeepaliveInterval)
	}
	l.mu.Unlock()

	switch {
	case dead:
		l.closeWith(fmt.Errorf("%w: nothing received for %s", ErrPeerTimeout, cfg.DeadAfter), false)
		return
	case idle:
		l.sendOn(s, kindKeepalive, nil)
	}
	if rekey {
		l.startRekey()
	}
	if ask {
		l.sendOn(s, kindRekeyRequest, nil)
	}
}

// startRekey replaces the current session with a fresh handshake, once.
func (l *Link) startRekey() {
	l.mu.Lock()
	if l.rekeying || l.closeErr != nil {
		l.mu.Unlock()
		return
	}
	l.rekeying = true
	l.mu.Unlock()
	started := l.ep.spawn(func() {
		err := l.ep.rekey(l)
		l.mu.Lock()
		l.rekeying = false
		l.mu.Unlock()
		if err != nil {
			l.log.Warn("rekey failed", zap.Error(err))
		}
	})
	if !started {
		l.mu.Lock()
		l.rekeying = false
		l.mu.Unlock()
	}
}

// adopt makes s the current session; the old one keeps receiving records
// still in flight for one handshake timeout.
func (l *Link) adopt(s *session, peer *Member) {
	s.link.Store(l)
	l.mu.Lock()
	if l.closeErr != nil {
		l.mu.Unlock()
		s.close()
		return
	}
	old := l.current.Swap(s)
	if l.previous != nil {
		l.previous.close()
	}
	l.previous = old
	l.requested = false
	l.peer.Store(peer)
	if until := peer.ValidUntil(); l.expiry != nil && !until.IsZero() {
		l.expiry.Reset(time.Until(until)) // the peer may present a renewed certificate
	}
	l.mu.Unlock()
	l.rekeys.Add(1)
	l.ep.relink(l, old.pipe.LocalID(), s.pipe.LocalID())
	time.AfterFunc(l.ep.cfg.HandshakeTimeout, func() {
		l.mu.Lock()
		retire := l.previous == old
		if retire {
			l.previous = nil
		}
		l.mu.Unlock()
		if retire {
			old.close()
		}
	})
	l.log.Debug("session rekeyed", zap.Uint64("rekeys", l.rekeys.Load()))
}

// Close tells the peer and closes the link.
func (l *Link) Close() error {
	l.closeWith(ErrLinkClosed, true)
	return nil
}

func (l *Link) closeWith(reason error, notify bool) {
	l.closeOnce.Do(func() {
		cur := l.current.Load()
		if notify {
			l.sendOn(cur, kindClose, nil)
		}
		l.mu.Lock()
		l.closeErr = reason
		if l.tick != nil {
			l.tick.Stop()
		}
		if l.expiry != nil {
			l.expiry.Stop()
		}
		prev := l.previous
		l.previous = nil
		l.mu.Unlock()
		close(l.closed)
		cur.close()
		if prev != nil {
			prev.close()
		}
		l.ep.forget(l, cur.pipe.LocalID())
		l.log.Info("link closed", zap.String("reason", reason.Error()))
	})
}
