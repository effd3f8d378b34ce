package overlay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/deadline"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/security/record"
	"github.com/ringvpn/ringvpn/transport"
)

// Routed pipes carry an end-to-end DTLS session hop by hop over the ring,
// to a node's overlay address: the way to reach a peer before (or
// instead of) a direct link, and the base of relays, which are routed
// pipes pinned to a chosen forwarder with FlagVia. Each datagram of the
// session (a DTLS handshake record or a sealed record) travels as the
// payload of one exact-mode TypePipe message; the nodes in between
// forward it like any routed message and cannot read it.
//
// A TypePipe payload is a pipe header and one record:
//
//	 0       1       2       3       4       5       6       7       8
//	+-------+-------+-------+-------+-------+-------+-------+-------+-------+
//	| flags |                    pipe ID (8 bytes)                          |
//	+-------+-------+-------+-------+-------+-------+-------+-------+-------+
//	|  record: DTLS (first byte 20..63) or sealed (0xE1, receiver's ID) ... |
//
// flags bit 0 (pipeFromDialer) is set when the sender opened the pipe;
// bit 1 (pipeRing) when the opener's pipe carries a ring link (a relayed
// neighbour link, see relay.go) rather than a session for Pipes.Accept;
// the other bits are zero (a message with any of them set is dropped).
// The pipe ID is chosen by the side that opened the pipe (it is also that
// side's connection ID), so a pipe is named by (opener's address, pipe
// ID), as a TCP connection is by its initiator's port: the receiver finds
// it under (message source, pipe ID, which side opened it). A ClientHello
// from the opener under a name the receiver does not know creates the
// accepting side; any other record under an unknown name is dropped and
// counted.

// PipeHeaderLen is the length of the pipe header in a TypePipe payload.
const PipeHeaderLen = 9

// pipeFromDialer marks a TypePipe message sent by the side that opened
// the pipe; pipeRing one whose pipe carries a relayed ring link.
const (
	pipeFromDialer byte = 1 << 0
	pipeRing       byte = 1 << 1
)

// MaxPipePayload is the largest packet a link over a routed pipe carries:
// the routed message (header with via, pipe header, sealed record) must
// fit in one packet of the links it crosses.
const MaxPipePayload = maxPipeRecord - record.Overhead

// maxPipeRecord is the largest record a routed pipe sends.
const maxPipeRecord = security.MaxPayload - HeaderLen - ViaLen - PipeHeaderLen

// RFC 7983: a first byte in 20..63 is DTLS.
const (
	dtlsFirst = 20
	dtlsLast  = 63
)

// pipeControlQueue is how many handshake records may wait for one pipe's
// DTLS engine.
const pipeControlQueue = 64

// Routed pipe errors.
var (
	ErrPipeTooBig    = fmt.Errorf("overlay: routed pipe record larger than %d bytes", maxPipeRecord)
	ErrPipeWrongPeer = errors.New("overlay: routed pipe answered by a node other than its destination")
	errPipeGlare     = errors.New("overlay: routed pipe lost a simultaneous open")
	errPipeDetached  = errors.New("overlay: routed pipe's control side detached")
)

// PipeConfig tunes routed pipes. The YAML keys are the mapstructure names
// under `overlay.pipes:`.
type PipeConfig struct {
	// MaxPending bounds the pipes peers opened with a ClientHello whose
	// handshake has not finished; ClientHellos beyond it are dropped and
	// counted (the peer retransmits).
	MaxPending int `mapstructure:"max_pending"`
	// AcceptQueue is how many accepted links may wait for Accept; more are
	// closed and counted.
	AcceptQueue int `mapstructure:"accept_queue"`
	// HandshakeTimeout closes a pipe whose handshake has not finished after
	// this long. The security endpoint gives up first on its own
	// handshakes (security.handshake_timeout); this catches the rest.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	// IdleTimeout closes a pipe that has received nothing for this long.
	// A link closes its pipe itself when the peer falls silent
	// (security.dead_after); this catches the rest.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
}

// DefaultPipeConfig returns the defaults.
func DefaultPipeConfig() PipeConfig {
	return PipeConfig{
		MaxPending:       64,
		AcceptQueue:      64,
		HandshakeTimeout: 30 * time.Second,
		IdleTimeout:      2 * time.Minute,
	}
}

// Validate reports every invalid field, naming its key.
func (c PipeConfig) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.MaxPending >= 1 && c.MaxPending <= 1<<16, "overlay.pipes.max_pending: %d not in [1,65536]", c.MaxPending)
	check(c.AcceptQueue >= 1 && c.AcceptQueue <= 1<<16, "overlay.pipes.accept_queue: %d not in [1,65536]", c.AcceptQueue)
	check(c.HandshakeTimeout >= 10*time.Millisecond, "overlay.pipes.handshake_timeout: %v is below 10ms", c.HandshakeTimeout)
	check(c.IdleTimeout >= 10*time.Millisecond, "overlay.pipes.idle_timeout: %v is below 10ms", c.IdleTimeout)
	return errors.Join(errs...)
}

// Pipes opens and accepts routed pipes for one node and runs DTLS over
// them with the node's security endpoint.
//
// Links over routed pipes come out of Pipes.Accept, never out of the
// endpoint's Accept: that one feeds the node's neighbour links, and a
// routed link taken for a neighbour would route its own datagrams over
// itself. The exception is a relayed ring link (pipeRing, relay.go): it
// is pinned to a relay and its records travel over direct links only, so
// it is handed to the node as a neighbour link. They are registered with the endpoint like every link (Links,
// rekeys, Close).
//
// Simultaneous opens: when both nodes Dial each other at once, the
// handshake opened by the node with the smaller overlay address wins and
// both Dials return the one link it makes (the loser's Dial returns a
// link whose Dialed is false). A ClientHello that arrives while this
// node's own dial to the sender is in its DTLS handshake is dropped if
// this node's address is the smaller, and otherwise makes this node give
// its dial up (the pipe reports Glared, and security.Endpoint.DialPipe
// then waits for the peer's link). A dial whose first ClientHello would
// go out while the peer's handshake towards us is already in its DTLS
// handshake gives itself up the same way, whatever the addresses. A Dial
// to a node that already has a link with us makes a second link: Pipes
// does not keep one link per peer, its user does. Sessions and relayed
// ring links are different links: a pipe only glares with a pipe of its
// own kind, and the kinds have different Remotes (pipeRemote,
// ringPipeRemote), since the endpoint hands the winner's link to the
// losing dial by Remote.
//
// A pipe has no goroutine: records are handled on the node's link reader
// goroutines, and one sweeper per Pipes closes unfinished and idle pipes.
// Safe for concurrent use.
type Pipes struct {
	// immutable after NewPipes
	node      *Node
	ep        *security.Endpoint
	cfg       PipeConfig
	log       *zap.Logger
	self      Address
	localAddr *net.UDPAddr
	accepted  chan *security.Link
	closed    chan struct{}
	swept     chan struct{} // closed when the sweeper ends
	buffers   pipeBuffers
	// send routes one message (Node.Send); in-package tests replace it.
	send func(h Header, payload []byte) error

	stats pipeCounters

	// mu guards the following
	mu          sync.RWMutex
	pipes       map[pipeKey]*routedPipe
	handshaking map[Address][]*routedPipe // by peer, until Established or Close
	pending     int                       // accepted pipes still handshaking
	isClosed    bool
	closeOnce   sync.Once
}

// pipeKey names a pipe on this node.
type pipeKey struct {
	peer   Address
	id     [8]byte // the opener's pipe ID
	dialed bool    // this node opened it
}

type pipeCounters struct {
	dialed, accepted, recordsIn, recordsOut, glare, dropGlare, expired         atomic.Uint64
	dropMalformed, dropUnknown, dropPendingFull, dropAcceptFull, dropWrongPeer atomic.Uint64
	dropControlFull, dropNoHandler, sendErrors                                 atomic.Uint64
}

// PipeStats counts routed pipes and their records.
type PipeStats struct {
	Open            int    `json:"open"`    // pipes in the table
	Pending         int    `json:"pending"` // accepted pipes still handshaking
	Dialed          uint64 `json:"dialed"`
	Accepted        uint64 `json:"accepted"`
	RecordsIn       uint64 `json:"records_in"`
	RecordsOut      uint64 `json:"records_out"`
	Glare           uint64 `json:"glare"`      // simultaneous opens resolved
	DropGlare       uint64 `json:"drop_glare"` // ClientHellos dropped because our own dial wins
	Expired         uint64 `json:"expired"`    // pipes closed for an unfinished handshake or idleness
	DropMalformed   uint64 `json:"drop_malformed"`
	DropUnknown     uint64 `json:"drop_unknown"` // records for no pipe we have
	DropPendingFull uint64 `json:"drop_pending_full"`
	DropAcceptFull  uint64 `json:"drop_accept_full"`
	DropWrongPeer   uint64 `json:"drop_wrong_peer"` // links whose certificate is not the pipe's node
	DropControlFull uint64 `json:"drop_control_full"`
	DropNoHandler   uint64 `json:"drop_no_handler"`
	SendErrors      uint64 `json:"send_errors"`
}

// NewPipes attaches routed pipes to node, running DTLS with ep (the
// endpoint of the node's SecureLinker, so that routed and direct links
// share keys, certificates and rekeying). It installs the TypePipe
// handler and starts the sweeper; Close, or closing the node, ends them.
func NewPipes(node *Node, ep *security.Endpoint, cfg PipeConfig, log *zap.Logger) (*Pipes, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if node == nil || ep == nil {
		return nil, errors.New("overlay: routed pipes need a node and a security endpoint")
	}
	self := node.Address()
	ps := &Pipes{
		node:        node,
		ep:          ep,
		cfg:         cfg,
		log:         log.Named("pipes"),
		self:        self,
		localAddr:   net.UDPAddrFromAddrPort(pipeRemote(self)),
		accepted:    make(chan *security.Link, cfg.AcceptQueue),
		closed:      make(chan struct{}),
		swept:       make(chan struct{}),
		buffers:     make(pipeBuffers, 64),
		send:        node.Send,
		pipes:       make(map[pipeKey]*routedPipe),
		handshaking: make(map[Address][]*routedPipe),
	}
	node.Handle(TypePipe, ps.HandleMessage)
	node.relays.Store(ps)
	go ps.sweepLoop()
	return ps, nil
}

// pipeRemote is the Remote of every routed pipe to the node at a: an
// address in the discard-only prefix 100::/64 (RFC 6666), which no real
// peer sends from, made of 80 bits of a (the interface ID and the port).
// It names the peer: the security endpoint resolves simultaneous opens
// by it, and link logs show it as the link's address.
func pipeRemote(a Address) netip.AddrPort {
	var ip [16]byte
	ip[0] = 0x01
	copy(ip[8:], a[:8])
	return netip.AddrPortFrom(netip.AddrFrom16(ip), binary.BigEndian.Uint16(a[8:10]))
}

// ringPipeRemote is the Remote of the pipes that carry relayed ring links
// to a: pipeRemote(a) with the port's top bit flipped. A session and a
// ring link opened at the same moment are two links, not a simultaneous
// open; with one Remote, a session dial that gave up to the peer's
// session could be handed the peer's ring link instead.
func ringPipeRemote(a Address) netip.AddrPort {
	r := pipeRemote(a)
	return netip.AddrPortFrom(r.Addr(), r.Port()^0x8000)
}

// Dial opens a routed pipe to the node at dst and runs a DTLS handshake
// over it. With a non-zero via (not dst or this node), every datagram
// both ways is routed through via first: a relay (the accepting side
// answers through the via the opener's messages name). The link's peer is
// checked to be dst, so a node on the path cannot answer in its place.
// If dst dials us at the same moment, the link may be the one dst
// opened (see Pipes).
func (ps *Pipes) Dial(ctx context.Context, dst, via Address) (*security.Link, error) {
	return ps.dial(ctx, dst, via, false)
}

// dial is Dial; ring marks the pipe as a relayed ring link, which the
// peer hands to its node rather than to Accept.
func (ps *Pipes) dial(ctx context.Context, dst, via Address, ring bool) (*security.Link, error) {
	p, err := ps.newDialed(dst, via, ring)
	if err != nil {
		return nil, err
	}
	l, err := ps.ep.DialPipe(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("overlay: routed pipe to %s: %w", dst, err)
	}
	if l.Peer().Address != dst {
		ps.stats.dropWrongPeer.Add(1)
		l.Close()
		return nil, fmt.Errorf("%w: %s (%s) answered for %s", ErrPipeWrongPeer, l.Peer().Name, l.Peer().Address, dst)
	}
	return l, nil
}

// Accept returns the next link a peer opened over a routed pipe.
func (ps *Pipes) Accept(ctx context.Context) (*security.Link, error) {
	select {
	case l := <-ps.accepted:
		return l, nil
	default:
	}
	select {
	case l := <-ps.accepted:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-ps.closed:
		return nil, ErrClosed
	}
}

// Stats returns the counters.
func (ps *Pipes) Stats() PipeStats {
	ps.mu.RLock()
	open, pending := len(ps.pipes), ps.pending
	ps.mu.RUnlock()
	s := &ps.stats
	return PipeStats{
		Open: open, Pending: pending,
		Dialed: s.dialed.Load(), Accepted: s.accepted.Load(),
		RecordsIn: s.recordsIn.Load(), RecordsOut: s.recordsOut.Load(),
		Glare: s.glare.Load(), DropGlare: s.dropGlare.Load(), Expired: s.expired.Load(),
		DropMalformed: s.dropMalformed.Load(), DropUnknown: s.dropUnknown.Load(),
		DropPendingFull: s.dropPendingFull.Load(), DropAcceptFull: s.dropAcceptFull.Load(),
		DropWrongPeer: s.dropWrongPeer.Load(), DropControlFull: s.dropControlFull.Load(),
		DropNoHandler: s.dropNoHandler.Load(), SendErrors: s.sendErrors.Load(),
	}
}

// Close closes every link over a routed pipe of this node (peers are
// told), every pipe, and the links still waiting for Accept, and stops
// the sweeper. The TypePipe handler stays installed and drops everything.
func (ps *Pipes) Close() error {
	ps.closeOnce.Do(ps.shutdown)
	<-ps.swept
	return nil
}

func (ps *Pipes) shutdown() {
	ps.mu.Lock()
	ps.isClosed = true
	close(ps.closed)
	pipes := make([]*routedPipe, 0, len(ps.pipes))
	ours := make(map[[8]byte]bool, len(ps.pipes))
	for _, p := range ps.pipes {
		pipes = append(pipes, p)
		ours[p.local] = true
	}
	ps.mu.Unlock()
	for _, l := range ps.ep.Links() {
		if ours[l.LocalID()] {
			l.Close()
		}
	}
	for _, p := range pipes {
		p.Close()
	}
	for {
		select {
		case l := <-ps.accepted:
			l.Close()
			continue
		default:
		}
		return
	}
}

func (ps *Pipes) sweepLoop() {
	defer close(ps.swept)
	every := max(min(ps.cfg.HandshakeTimeout, ps.cfg.IdleTimeout)/4, 5*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ps.closed:
			return
		case <-ps.node.Done():
			ps.closeOnce.Do(ps.shutdown)
			return
		case <-t.C:
			ps.sweep(time.Now())
		}
	}
}

// sweep closes pipes whose handshake is overdue and pipes that have
// received nothing for IdleTimeout.
func (ps *Pipes) sweep(now time.Time) {
	type expiry struct {
		p           *routedPipe
		handshaking bool
	}
	var expired []expiry
	ps.mu.Lock()
	for _, p := range ps.pipes {
		if p.handshaking {
			if now.Sub(p.created) >= ps.cfg.HandshakeTimeout {
				expired = append(expired, expiry{p, true})
			}
			continue
		}
		if in := p.recordsIn.Load(); in != p.lastIn {
			p.lastIn, p.heardAt = in, now
			continue
		}
		if now.Sub(p.heardAt) >= ps.cfg.IdleTimeout {
			expired = append(expired, expiry{p, false})
		}
	}
	ps.mu.Unlock()
	for _, x := range expired {
		ps.stats.expired.Add(1)
		if ce := ps.log.Check(zap.DebugLevel, "routed pipe expired"); ce != nil {
			ce.Write(zap.Stringer("peer", x.p.key.peer), zap.Bool("handshaking", x.handshaking))
		}
		x.p.Close()
	}
}

// newDialed registers a pipe this node opens to dst.
func (ps *Pipes) newDialed(dst, via Address, ring bool) (*routedPipe, error) {
	if dst == ps.self || dst.IsZero() {
		return nil, fmt.Errorf("overlay: routed pipe to %s: not a peer address", dst)
	}
	if via == dst || via == ps.self {
		via = Address{}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.isClosed {
		return nil, ErrClosed
	}
	key := pipeKey{peer: dst, dialed: true}
	for {
		key.id = randomPipeID()
		if _, taken := ps.pipes[key]; !taken {
			break
		}
	}
	ps.stats.dialed.Add(1)
	return ps.newPipeLocked(key, via, key.id, ring), nil
}

// newPipeLocked registers a handshaking pipe, which carries a relayed
// ring link if ring; ps.mu must be held.
func (ps *Pipes) newPipeLocked(key pipeKey, via Address, local [8]byte, ring bool) *routedPipe {
	remote := pipeRemote(key.peer)
	if ring {
		remote = ringPipeRemote(key.peer)
	}
	p := &routedPipe{
		ps:          ps,
		key:         key,
		via:         via,
		ring:        ring,
		local:       local,
		remote:      remote,
		raddr:       net.UDPAddrFromAddrPort(remote),
		created:     time.Now(),
		control:     make(chan []byte, pipeControlQueue),
		closed:      make(chan struct{}),
		failed:      make(chan struct{}),
		readTimeout: deadline.New(),
		handshaking: true,
	}
	ps.pipes[key] = p
	ps.handshaking[key.peer] = append(ps.handshaking[key.peer], p)
	if !key.dialed {
		ps.pending++
	}
	return p
}

// leaveHandshakeLocked takes p out of the handshake index; ps.mu must be
// held.
func (ps *Pipes) leaveHandshakeLocked(p *routedPipe, now time.Time) {
	if !p.handshaking {
		return
	}
	p.handshaking = false
	p.heardAt, p.lastIn = now, p.recordsIn.Load()
	hs := ps.handshaking[p.key.peer]
	for i, q := range hs {
		if q == p {
			hs = append(hs[:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(ps.handshaking, p.key.peer)
	} else {
		ps.handshaking[p.key.peer] = hs
	}
	if !p.key.dialed {
		ps.pending--
	}
}

func randomPipeID() [8]byte {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		panic("overlay: crypto/rand failed: " + err.Error()) // never returns an error on Linux
	}
	return id
}

// HandleMessage is the TypePipe handler that NewPipes installs on the
// node; it is exported so a caller can wrap it (a test's tap). m.Payload
// may be modified in place (sealed records are opened in place).
func (ps *Pipes) HandleMessage(m *Message) {
	ph, rec, err := parsePipeHeader(m.Payload)
	if err != nil || m.Src == ps.self || m.Src.IsZero() {
		ps.stats.dropMalformed.Add(1)
		return
	}
	key := pipeKey{peer: m.Src, id: ph.id, dialed: ph.flags&pipeFromDialer == 0}
	ps.mu.RLock()
	p := ps.pipes[key]
	ps.mu.RUnlock()
	if p == nil {
		ps.open(m, key, rec, ph.flags&pipeRing != 0)
		return
	}
	p.receive(rec)
}

// open makes the accepting side of a pipe for a ClientHello under a name
// this node does not know, resolving simultaneous opens (see Pipes).
func (ps *Pipes) open(m *Message, key pipeKey, rec []byte, ring bool) {
	if key.dialed {
		ps.stats.dropUnknown.Add(1) // an answer on a pipe we no longer have
		return
	}
	if _, ok := transport.ClientHelloRandom(rec); !ok {
		ps.stats.dropUnknown.Add(1)
		return
	}
	var via Address
	if m.Flags&FlagVia != 0 {
		via = m.Via
	}
	if ring && via.IsZero() {
		ps.stats.dropMalformed.Add(1) // a relayed ring link names its relay
		return
	}
	ps.mu.Lock()
	if ps.isClosed {
		ps.mu.Unlock()
		ps.stats.dropUnknown.Add(1)
		return
	}
	if ps.pending >= ps.cfg.MaxPending {
		ps.mu.Unlock()
		ps.stats.dropPendingFull.Add(1)
		return
	}
	var lost []*routedPipe
	for _, q := range ps.handshaking[key.peer] {
		if !q.key.dialed || !q.started || q.sealed.Load() || q.failedErr() != nil || q.ring != ring {
			continue // not a dial of ours of this kind in its DTLS handshake
		}
		if ps.self.Compare(key.peer) < 0 {
			ps.mu.Unlock()
			ps.stats.glare.Add(1)
			ps.stats.dropGlare.Add(1)
			return // our handshake wins; the peer gives its own up
		}
		lost = append(lost, q)
	}
	for _, q := range lost {
		q.fail(errPipeGlare)
		ps.stats.glare.Add(1)
	}
	p := ps.newPipeLocked(key, via, randomPipeID(), ring)
	p.started = true
	ps.mu.Unlock()
	ps.stats.accepted.Add(1)
	if ce := ps.log.Check(zap.DebugLevel, "routed pipe opened by peer"); ce != nil {
		ce.Write(zap.Stringer("peer", key.peer), zap.Stringer("via", via), zap.Int("glared", len(lost)))
	}
	p.deliverControl(rec)
	ps.ep.ServePipe(p, func(l *security.Link) { ps.onAccepted(p, l) })
}

// onAccepted queues a link made over an accepted pipe for Accept.
func (ps *Pipes) onAccepted(p *routedPipe, l *security.Link) {
	if l.Peer().Address != p.key.peer {
		ps.stats.dropWrongPeer.Add(1)
		ps.log.Warn("routed pipe refused: the certificate is not the sender's",
			zap.Stringer("peer", p.key.peer), zap.String("name", l.Peer().Name), zap.Stringer("node", l.Peer().Address))
		l.Close()
		return
	}
	if p.ring {
		ps.node.addLinkVia(l, 0, p.via)
		return
	}
	ps.mu.RLock()
	queued := false
	if !ps.isClosed {
		select {
		case ps.accepted <- l:
			queued = true
		default:
			ps.stats.dropAcceptFull.Add(1)
		}
	}
	ps.mu.RUnlock()
	if !queued {
		l.Close()
	}
}

// startDial is called before a dialed pipe's first ClientHello goes out;
// false means the pipe gave itself up to the peer's handshake towards us,
// which is already under way (see Pipes).
func (ps *Pipes) startDial(p *routedPipe) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p.started {
		return true
	}
	p.started = true
	for _, q := range ps.handshaking[p.key.peer] {
		if !q.key.dialed && q.ring == p.ring && !q.sealed.Load() && q.failedErr() == nil {
			p.fail(errPipeGlare)
			ps.stats.glare.Add(1)
			return false
		}
	}
	return true
}

// write routes one record of p. The message is built in a buffer from
// the free list; Node.Send copies it into the message it routes.
func (ps *Pipes) write(p *routedPipe, rec []byte) error {
	if len(rec) > maxPipeRecord {
		return ErrPipeTooBig
	}
	flags := byte(0)
	if p.key.dialed {
		flags = pipeFromDialer
		if p.ring {
			flags |= pipeRing
		}
	}
	buf := ps.buffers.get()
	b := appendPipeHeader(buf[:0], pipeHeader{flags: flags, id: p.key.id})
	b = append(b, rec...)
	h := Header{Type: TypePipe, Dst: p.key.peer}
	if !p.via.IsZero() {
		h.Flags, h.Via = FlagVia, p.via
	}
	err := ps.send(h, b)
	ps.buffers.put(buf)
	if err != nil {
		ps.stats.sendErrors.Add(1)
		return err
	}
	p.recordsOut.Add(1)
	ps.stats.recordsOut.Add(1)
	return nil
}

// pipeHeader is the decoded pipe header of a TypePipe payload.
type pipeHeader struct {
	flags byte
	id    [8]byte
}

// appendPipeHeader encodes h.
func appendPipeHeader(b []byte, h pipeHeader) []byte {
	b = append(b, h.flags)
	return append(b, h.id[:]...)
}

// parsePipeHeader decodes the pipe header of a TypePipe payload and
// returns it with the record (a sub-slice of b, never empty).
func parsePipeHeader(b []byte) (pipeHeader, []byte, error) {
	var h pipeHeader
	if len(b) <= PipeHeaderLen {
		return h, nil, ErrBadPayload
	}
	h.flags = b[0]
	if h.flags&^(pipeFromDialer|pipeRing) != 0 {
		return h, nil, ErrBadPayload
	}
	copy(h.id[:], b[1:PipeHeaderLen])
	return h, b[PipeHeaderLen:], nil
}

// pipeBuffers is a bounded free list of message buffers.
type pipeBuffers chan *[PipeHeaderLen + maxPipeRecord]byte

func (f pipeBuffers) get() *[PipeHeaderLen + maxPipeRecord]byte {
	select {
	case b := <-f:
		return b
	default:
		return new([PipeHeaderLen + maxPipeRecord]byte)
	}
}

func (f pipeBuffers) put(b *[PipeHeaderLen + maxPipeRecord]byte) {
	select {
	case f <- b:
	default:
	}
}

// routedPipe is one end of a routed pipe; it implements security.Pipe
// and security.Redialer.
type routedPipe struct {
	// immutable after newPipeLocked
	ps          *Pipes
	key         pipeKey
	via         Address // zero: plain greedy routing
	ring        bool    // carries a relayed ring link (pipeRing)
	local       [8]byte // our connection ID (the pipe ID if we opened it)
	remote      netip.AddrPort
	raddr       *net.UDPAddr
	created     time.Time
	control     chan []byte
	closed      chan struct{}
	failed      chan struct{}
	readTimeout *deadline.Deadline

	handler    atomic.Pointer[func(b []byte, from netip.AddrPort)]
	sealed     atomic.Bool // a sealed record went either way: DTLS is over
	recordsIn  atomic.Uint64
	recordsOut atomic.Uint64

	// ps.mu guards the following
	started     bool // a ClientHello went out (we dialed) or came in
	handshaking bool // not yet Established or closed
	lastIn      uint64
	heardAt     time.Time

	// mu guards the following
	mu        sync.Mutex
	failErr   error
	closeOnce sync.Once
}

var (
	_ security.Pipe     = (*routedPipe)(nil)
	_ security.Redialer = (*routedPipe)(nil)
)

// LocalID implements security.Pipe.
func (p *routedPipe) LocalID() [8]byte { return p.local }

// Remote implements security.Pipe: the peer's stand-in address
// (pipeRemote), the same for every pipe to that peer.
func (p *routedPipe) Remote() netip.AddrPort { return p.remote }

// SetRemote implements security.Pipe; a routed pipe follows the peer's
// overlay address, not a transport address, so there is nothing to move.
func (p *routedPipe) SetRemote(netip.AddrPort) {}

// SetHandler implements security.Pipe.
func (p *routedPipe) SetHandler(h func(b []byte, from netip.AddrPort)) {
	if h == nil {
		p.handler.Store(nil)
		return
	}
	p.handler.Store(&h)
}

// Send implements security.Pipe: it routes one sealed record to the peer.
func (p *routedPipe) Send(b []byte) error {
	select {
	case <-p.closed:
		return net.ErrClosed
	default:
	}
	if len(b) > 0 && b[0] == transport.SealedRecordType && !p.sealed.Load() {
		p.sealed.Store(true)
	}
	return p.ps.write(p, b)
}

// Established implements security.Pipe.
func (p *routedPipe) Established() {
	p.ps.mu.Lock()
	p.ps.leaveHandshakeLocked(p, time.Now())
	p.ps.mu.Unlock()
}

// Glared implements security.Pipe.
func (p *routedPipe) Glared() bool { return errors.Is(p.failedErr(), errPipeGlare) }

// Redial implements security.Redialer: a new pipe to the same peer,
// through the same via, for a rekey.
func (p *routedPipe) Redial(context.Context) (security.Pipe, error) {
	return p.ps.newDialed(p.key.peer, p.via, p.ring)
}

// Close implements security.Pipe: the pipe leaves the table and delivers
// nothing more. The peer is not told; its link does that.
func (p *routedPipe) Close() error {
	p.closeOnce.Do(func() {
		ps := p.ps
		ps.mu.Lock()
		if ps.pipes[p.key] == p {
			delete(ps.pipes, p.key)
		}
		ps.leaveHandshakeLocked(p, time.Now())
		ps.mu.Unlock()
		p.handler.Store(nil)
		close(p.closed)
	})
	return nil
}

// ControlConn implements security.Pipe: the view of the pipe that a DTLS
// engine runs over. Its Close only detaches the engine.
func (p *routedPipe) ControlConn() net.PacketConn { return pipeControl{p} }

func (p *routedPipe) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failErr == nil {
		p.failErr = err
		close(p.failed)
	}
}

func (p *routedPipe) failedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failErr
}

// receive handles one record for p; rec may be modified in place.
func (p *routedPipe) receive(rec []byte) {
	ps := p.ps
	switch {
	case rec[0] == transport.SealedRecordType:
		if len(rec) < transport.SealedHeaderLen {
			ps.stats.dropMalformed.Add(1)
			return
		}
		p.recordsIn.Add(1)
		ps.stats.recordsIn.Add(1)
		if !p.sealed.Load() {
			p.sealed.Store(true)
		}
		h := p.handler.Load()
		if h == nil {
			ps.stats.dropNoHandler.Add(1)
			return
		}
		(*h)(rec, p.remote)
	case rec[0] >= dtlsFirst && rec[0] <= dtlsLast:
		p.recordsIn.Add(1)
		ps.stats.recordsIn.Add(1)
		p.deliverControl(rec)
	default:
		ps.stats.dropMalformed.Add(1)
	}
}

// deliverControl queues a copy of a DTLS record for the engine.
func (p *routedPipe) deliverControl(rec []byte) {
	select {
	case <-p.failed:
		return // a detached engine's records go nowhere
	default:
	}
	select {
	case p.control <- append([]byte(nil), rec...):
	default:
		p.ps.stats.dropControlFull.Add(1)
	}
}

// pipeControl is the net.PacketConn a DTLS engine runs over.
type pipeControl struct{ p *routedPipe }

func (c pipeControl) ReadFrom(b []byte) (int, net.Addr, error) {
	p := c.p
	select {
	case d := <-p.control:
		return copy(b, d), p.raddr, nil
	case <-p.failed:
		return 0, nil, &net.OpError{Op: "read", Net: "ringvpn-routed-pipe", Err: p.failedErr()}
	case <-p.closed:
		return 0, nil, net.ErrClosed
	case <-p.readTimeout.Done():
		return 0, nil, pipeTimeout{}
	}
}

// WriteTo routes one DTLS record; the address is ignored. Routing
// failures are drops, as on a socket: the engine retransmits.
func (c pipeControl) WriteTo(b []byte, _ net.Addr) (int, error) {
	p := c.p
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	case <-p.failed:
		return len(b), nil // a detached engine's alerts go nowhere
	default:
	}
	if p.key.dialed {
		if _, hello := transport.ClientHelloRandom(b); hello && !p.ps.startDial(p) {
			return len(b), nil
		}
	}
	if err := p.ps.write(p, b); err != nil {
		if errors.Is(err, ErrPipeTooBig) {
			return 0, err
		}
	}
	return len(b), nil
}

func (c pipeControl) Close() error {
	c.p.fail(errPipeDetached)
	return nil
}

func (c pipeControl) LocalAddr() net.Addr { return c.p.ps.localAddr }

func (c pipeControl) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c pipeControl) SetReadDeadline(t time.Time) error {
	c.p.readTimeout.Set(t)
	return nil
}

func (c pipeControl) SetWriteDeadline(time.Time) error { return nil }

type pipeTimeout struct{}

func (pipeTimeout) Error() string   { return "overlay: routed pipe i/o timeout" }
func (pipeTimeout) Timeout() bool   { return true }
func (pipeTimeout) Temporary() bool { return true }
