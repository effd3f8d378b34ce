package security

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/gob"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/elliptic"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security/record"
)

// DialFunc opens a pipe towards a peer's address (transport.Mux.Dial).
type DialFunc func(ctx context.Context, remote netip.AddrPort) (Pipe, error)

// Redialer is implemented by pipes that do not come from the Endpoint's
// DialFunc, such as the overlay's routed pipes. When the dialing side of a
// link rekeys, it asks the current pipe for a fresh one to the same peer
// instead of calling the DialFunc with the pipe's Remote. The new pipe
// must be unused; the Endpoint owns it from then on.
type Redialer interface {
	Redial(ctx context.Context) (Pipe, error)
}

// ErrEndpointClosed is returned by an Endpoint after Close.
var ErrEndpointClosed = errors.New("security: endpoint closed")

// Endpoint makes Links: it runs DTLS handshakes over pipes, authenticates
// peers against the trust bundle, derives the sealing keys, and resolves
// simultaneous opens so that exactly one link results. Safe for concurrent
// use.
type Endpoint struct {
	// immutable after NewEndpoint
	cfg      Config
	identity atomic.Pointer[Identity] // replaced by SetIdentity (reload)
	log      *zap.Logger
	dial     DialFunc
	accepted chan *Link
	closed   chan struct{}
	buffers  freeList

	bundle atomic.Pointer[TrustBundle]
	wg     sync.WaitGroup

	revocations atomic.Pointer[Revocations] // nil: no revocation checks
	sweepQueued atomic.Bool                 // a sweep of revoked links is queued

	// mu guards the following
	mu        sync.Mutex
	links     map[[8]byte]*Link                 // by the current session's local ID
	waiters   map[netip.AddrPort][]chan handoff // dials that may lose a simultaneous open
	isClosed  bool
	closeOnce sync.Once
	revStop   func() // unregisters from the Revocations

	handshakes, failures atomic.Uint64
}

// NewEndpoint returns an Endpoint for identity, trusting the CAs in bundle.
func NewEndpoint(identity *Identity, bundle *TrustBundle, cfg Config, dial DialFunc, log *zap.Logger) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if identity == nil || bundle == nil || dial == nil {
		return nil, errors.New("security: endpoint needs an identity, a trust bundle and a dial function")
	}
	e := &Endpoint{
		cfg:      cfg,
		log:      log.Named("security"),
		dial:     dial,
		accepted: make(chan *Link, 64),
		closed:   make(chan struct{}),
		buffers:  newFreeList(256),
		links:    make(map[[8]byte]*Link),
		waiters:  make(map[netip.AddrPort][]chan handoff),
	}
	e.identity.Store(identity)
	e.bundle.Store(bundle)
	return e, nil
}

// SetTrustBundle replaces the CAs that new handshakes trust.
func (e *Endpoint) SetTrustBundle(b *TrustBundle) { e.bundle.Store(b) }

// Identity is this node's identity.
func (e *Endpoint) Identity() *Identity { return e.identity.Load() }

// Links returns the open links.
func (e *Endpoint) Links() []*Link {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Link, 0, len(e.links))
	for _, l := range e.links {
		out = append(out, l)
	}
	return out
}

// HandshakeStats returns how many handshakes completed and failed.
func (e *Endpoint) HandshakeStats() (completed, failed uint64) {
	return e.handshakes.Load(), e.failures.Load()
}

// Accept returns the next link a peer opened.
func (e *Endpoint) Accept(ctx context.Context) (*Link, error) {
	select {
	case l := <-e.accepted:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.closed:
		return nil, ErrEndpointClosed
	}
}

// spawn runs f on a goroutine that Close waits for, unless the endpoint
// is already closed (then f does not run: Close closes every link itself).
func (e *Endpoint) spawn(f func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isClosed {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
	return true
}

// Close closes every link and waits for handshakes under way to end.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.isClosed = true
		close(e.closed)
		links := make([]*Link, 0, len(e.links))
		for _, l := range e.links {
			links = append(links, l)
		}
		if e.revStop != nil {
			e.revStop()
			e.revStop = nil
		}
		e.mu.Unlock()
		for _, l := range links {
			l.Close()
		}
		e.wg.Wait()
		for {
			select {
			case l := <-e.accepted:
				l.Close()
				continue
			default:
			}
			break
		}
	})
	return nil
}

// Dial opens a link to the peer at remote. If the peer dials us at the
// same moment, both sides end up with the one link the peer's handshake
// made (the Mux decides which, the same way on both sides).
func (e *Endpoint) Dial(ctx context.Context, remote netip.AddrPort) (*Link, error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	ctx, cancel := context.WithTimeout(ctx, e.cfg.HandshakeTimeout)
	defer cancel()
	waiter, err := e.addWaiter(remote)
	if err != nil {
		return nil, err
	}
	defer e.removeWaiter(remote, waiter)

	pipe, err := e.dial(ctx, remote)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", remote, err)
	}
	// While Dial waited for the address, the peer's own handshake may
	// have made the link we want.
	select {
	case h := <-waiter:
		pipe.Close()
		return h.link, nil
	default:
	}
	return e.dialOn(ctx, pipe, remote, waiter)
}

// DialPipe runs the dialing side of a handshake over pipe, a pipe the
// caller opened towards the peer (a routed pipe through the overlay), and
// takes ownership of it: on failure it is closed, on success it belongs
// to the link. A pipe that also implements Redialer is asked for its
// successor when the link rekeys; otherwise the DialFunc dials its Remote.
//
// Simultaneous opens are resolved as for Dial, with pipe.Remote naming
// the peer: if the pipe reports Glared when its handshake fails (its
// owner decided that the peer's handshake towards us wins), DialPipe
// waits for the link that Serve or ServePipe makes on a pipe with the
// same Remote, and returns that one. So Remote must be the same for every
// pipe to one peer and different for different peers. If the pipe never
// glares, both handshakes complete and each side has two links.
func (e *Endpoint) DialPipe(ctx context.Context, pipe Pipe) (*Link, error) {
	remote := pipe.Remote()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.HandshakeTimeout)
	defer cancel()
	waiter, err := e.addWaiter(remote)
	if err != nil {
		pipe.Close()
		return nil, err
	}
	defer e.removeWaiter(remote, waiter)
	return e.dialOn(ctx, pipe, remote, waiter)
}

// dialOn is the dialing side of a handshake over pipe, for Dial and
// DialPipe; waiter receives the link the peer's handshake makes if ours
// loses a simultaneous open.
func (e *Endpoint) dialOn(ctx context.Context, pipe Pipe, remote netip.AddrPort, waiter chan handoff) (*Link, error) {
	s, peer, err := e.handshake(ctx, pipe, true)
	if err != nil {
		if pipe.Glared() {
			pipe.Close()
			select {
			case h := <-waiter:
				return h.link, nil
			case <-ctx.Done():
				return nil, fmt.Errorf("dial %s: simultaneous open: the peer's handshake did not complete: %w", remote, ctx.Err())
			}
		}
		pipe.Close()
		return nil, fmt.Errorf("dial %s: %w (if the peer refused our certificate, its log says why)", remote, err)
	}
	l := e.newLink(s, peer)
	if err := e.confirm(ctx, l, s, kindHello, nil); err != nil {
		s.close()
		return nil, fmt.Errorf("dial %s: %w", remote, err)
	}
	if err := e.register(l); err != nil {
		return nil, err
	}
	pipe.Established()
	l.log.Info("link established", zap.Stringer("addr", remote), zap.String("role", "dialer"))
	return l, nil
}

// Serve runs the accepting side of a handshake on a pipe a peer opened
// (transport.Mux.Accept); the link is delivered by Accept, or to a Dial
// to the same address that lost a simultaneous open.
func (e *Endpoint) Serve(pipe Pipe) { e.ServePipe(pipe, nil) }

// ServePipe is Serve for pipes whose links do not belong in Accept, such
// as routed pipes (Accept feeds the overlay node's own neighbour links):
// the new link goes to a Dial or DialPipe with the same Remote that lost
// a simultaneous open, else to accept; a nil accept means Accept. accept
// runs on the handshake's goroutine, or on the goroutine of a dial that
// gave up waiting for the link, and must not block. A handshake that
// fails on a pipe reporting Glared (its owner gave it up to resolve a
// simultaneous open) is logged at debug level only.
func (e *Endpoint) ServePipe(pipe Pipe, accept func(*Link)) {
	started := e.spawn(func() {
		if err := e.serve(pipe, accept); err != nil {
			lvl := zap.WarnLevel
			if pipe.Glared() {
				lvl = zap.DebugLevel
			}
			if ce := e.log.Check(lvl, "handshake failed"); ce != nil {
				ce.Write(zap.Stringer("addr", pipe.Remote()), zap.Error(err))
			}
		}
	})
	if !started {
		pipe.Close()
	}
}

func (e *Endpoint) serve(pipe Pipe, accept func(*Link)) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.HandshakeTimeout)
	defer cancel()
	go func() { // the handshake also ends when the endpoint closes
		select {
		case <-e.closed:
			cancel()
		case <-ctx.Done():
		}
	}()

	s, peer, err := e.handshake(ctx, pipe, false)
	if err != nil {
		pipe.Close()
		return err
	}
	provisional := e.newLink(s, peer)
	select {
	case <-s.confirmed:
	case <-ctx.Done():
		s.close()
		e.failures.Add(1)
		return fmt.Errorf("peer %q completed DTLS but never confirmed the link: %w", peer.Name, ctx.Err())
	}
	s.detach()

	switch s.firstKind {
	case kindRekey:
		old := e.linkByID(s.firstBody)
		if old == nil || old.Peer().Address != peer.Address {
			s.close()
			return fmt.Errorf("peer %q asked to rekey a session it does not have", peer.Name)
		}
		old.adopt(s, peer)
		s.accepted.Store(true)
		old.sendOn(s, kindAck, nil)
		pipe.Established()
		return nil
	default:
		if err := e.register(provisional); err != nil {
			s.close()
			return err
		}
		s.accepted.Store(true)
		provisional.sendOn(s, kindAck, nil)
		provisional.log.Info("link established", zap.Stringer("addr", pipe.Remote()), zap.String("role", "acceptor"))
		e.deliver(provisional, pipe.Remote(), accept)
		pipe.Established()
		return nil
	}
}

// rekey replaces l's current session (which this side dialed) with a
// fresh handshake to the same peer.
func (e *Endpoint) rekey(l *Link) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.HandshakeTimeout)
	defer cancel()
	go func() {
		select {
		case <-e.closed:
			cancel()
		case <-l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	old := l.current.Load()
	var pipe Pipe
	var err error
	if r, ok := old.pipe.(Redialer); ok {
		pipe, err = r.Redial(ctx)
	} else {
		pipe, err = e.dial(ctx, old.pipe.Remote())
	}
	if err != nil {
		return err
	}
	s, peer, err := e.handshake(ctx, pipe, true)
	if err != nil {
		pipe.Close()
		return err
	}
	if peer.Address != l.Peer().Address {
		s.close()
		return fmt.Errorf("peer at %s is now %s, not %s", old.pipe.Remote(), peer.Address, l.Peer().Address)
	}
	s.attach(l)
	if err := e.confirm(ctx, l, s, kindRekey, old.peerID[:]); err != nil {
		s.close()
		return err
	}
	l.adopt(s, peer)
	pipe.Established()
	return nil
}

// confirm sends the dialer's first record on s until the acceptor acks it.
func (e *Endpoint) confirm(ctx context.Context, l *Link, s *session, kind byte, body []byte) error {
	wait := 200 * time.Millisecond
	for {
		if err := l.sendOn(s, kind, body); err != nil {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-s.confirmed:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("link confirmation: %w", ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// handshake runs DTLS on pipe, verifies the peer and derives the keys.
func (e *Endpoint) handshake(ctx context.Context, pipe Pipe, dialer bool) (*session, *Member, error) {
	var peer *Member
	localID := pipe.LocalID()
	remote := pipe.Remote()
	opts := []dtls.Option{
		dtls.WithCertificates(e.identity.Load().TLSCertificate()),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
		dtls.WithEllipticCurves(elliptic.X25519, elliptic.P256),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		// Chains are verified by VerifyPeerCertificate against the
		// trust bundle, with errors that name the cause.
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			m, err := e.bundle.Load().VerifyMember(raw, time.Now())
			if err == nil {
				err = e.revocations.Load().Check(m.Cert)
			}
			if err != nil {
				e.log.Warn("peer refused", zap.Stringer("addr", remote), zap.Error(err))
				return err
			}
			peer = m
			return nil
		}),
		dtls.WithConnectionIDGenerator(func() []byte { return localID[:] }),
		dtls.WithMTU(e.cfg.HandshakeMTU),
		dtls.WithFlightInterval(500 * time.Millisecond),
		dtls.WithLoggerFactory(pionLogs{e.log.Named("dtls")}),
	}
	// The peer may send its first sealed record before HandshakeContext
	// returns here: keep a few and open them once the keys exist.
	early := &earlyRecords{}
	pipe.SetHandler(early.keep)
	var (
		conn *dtls.Conn
		err  error
	)
	raddr := net.UDPAddrFromAddrPort(remote)
	if dialer {
		clientOpts := make([]dtls.ClientOption, 0, len(opts))
		for _, o := range opts {
			clientOpts = append(clientOpts, o)
		}
		conn, err = dtls.ClientWithOptions(pipe.ControlConn(), raddr, clientOpts...)
	} else {
		serverOpts := make([]dtls.ServerOption, 0, len(opts)+1)
		serverOpts = append(serverOpts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
		for _, o := range opts {
			serverOpts = append(serverOpts, o)
		}
		conn, err = dtls.ServerWithOptions(pipe.ControlConn(), raddr, serverOpts...)
	}
	if err != nil {
		e.failures.Add(1)
		return nil, nil, fmt.Errorf("dtls setup: %w", err)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		e.failures.Add(1)
		return nil, nil, fmt.Errorf("dtls handshake with %s: %w", remote, err)
	}
	s, err := newSession(conn, pipe, dialer, e.cfg.ReplayWindow)
	if err == nil && peer == nil {
		err = errors.New("peer presented no certificate")
	}
	if err != nil {
		conn.Close()
		e.failures.Add(1)
		return nil, nil, fmt.Errorf("dtls handshake with %s: %w", remote, err)
	}
	e.handshakes.Add(1)
	s.early = early // handed over when the session joins a link
	if dialer {
		// The dialer's last flight needs no answer: drop the engine now.
		s.detach()
	}
	return s, peer, nil
}

func newSession(conn *dtls.Conn, pipe Pipe, dialer bool, window int) (*session, error) {
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, errors.New("no connection state after handshake")
	}
	material, err := state.ExportKeyingMaterial(record.ExporterLabel, nil, record.ExporterLen)
	if err != nil {
		return nil, fmt.Errorf("export keys: %w", err)
	}
	peerID, err := peerConnectionID(&state)
	if err != nil {
		return nil, err
	}
	sendKey, sendIV, recvKey, recvIV, err := record.KeysFromExporter(material, dialer)
	if err != nil {
		return nil, err
	}
	sealer, err := record.NewSealer(sendKey, sendIV, peerID)
	if err != nil {
		return nil, err
	}
	opener, err := record.NewOpener(recvKey, recvIV, pipe.LocalID(), window)
	if err != nil {
		return nil, err
	}
	return &session{
		pipe: pipe, sealer: sealer, opener: opener, peerID: peerID,
		dialed: dialer, created: time.Now(), confirmed: make(chan struct{}), dtls: conn,
	}, nil
}

// peerConnectionID digs the connection ID the peer chose out of pion's
// state: pion keeps it unexported, but its binary form is gob with named
// fields, and gob fills only the fields our struct names.
func peerConnectionID(state *dtls.State) ([8]byte, error) {
	var id [8]byte
	raw, err := state.MarshalBinary()
	if err != nil {
		return id, fmt.Errorf("read connection ID: %w", err)
	}
	var ids struct{ RemoteConnectionID []byte }
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&ids); err != nil {
		return id, fmt.Errorf("read connection ID: %w", err)
	}
	if len(ids.RemoteConnectionID) != len(id) {
		return id, fmt.Errorf("peer chose a %d-byte connection ID; ringvpn uses %d", len(ids.RemoteConnectionID), len(id))
	}
	copy(id[:], ids.RemoteConnectionID)
	return id, nil
}

func (e *Endpoint) register(l *Link) error {
	e.mu.Lock()
	if e.isClosed {
		e.mu.Unlock()
		l.closeWith(ErrEndpointClosed, true)
		return ErrEndpointClosed
	}
	e.links[l.LocalID()] = l
	e.mu.Unlock()
	// The peer may have been revoked during the handshake, after its
	// certificate was checked and before a sweep could see the link.
	if err := e.revocations.Load().Check(l.Peer().Cert); err != nil {
		l.closeWith(err, true)
		return err
	}
	l.start()
	return nil
}

func (e *Endpoint) relink(l *Link, oldID, newID [8]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.links[oldID] == l {
		delete(e.links, oldID)
		e.links[newID] = l
	}
}

func (e *Endpoint) forget(l *Link, id [8]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.links[id] == l {
		delete(e.links, id)
	}
}

func (e *Endpoint) linkByID(id [8]byte) *Link {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.links[id]
}

// handoff is a link accepted while a dial to the same peer was waiting,
// with where it goes if that dial no longer wants it.
type handoff struct {
	link   *Link
	accept func(*Link) // nil: Accept
}

func (e *Endpoint) addWaiter(remote netip.AddrPort) (chan handoff, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isClosed {
		return nil, ErrEndpointClosed
	}
	w := make(chan handoff, 1)
	e.waiters[remote] = append(e.waiters[remote], w)
	return w, nil
}

func (e *Endpoint) removeWaiter(remote netip.AddrPort, w chan handoff) {
	e.mu.Lock()
	ws := e.waiters[remote]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(e.waiters, remote)
	} else {
		e.waiters[remote] = ws
	}
	e.mu.Unlock()
	// A link handed to a waiter that gave up goes where its handshake
	// would have sent it. Not under e.mu: queueing may close the link,
	// and closing takes e.mu.
	select {
	case h := <-w:
		e.queue(h)
	default:
	}
}

// deliver hands a new accepted link to a dial waiting for that address,
// else to accept (nil: Accept).
func (e *Endpoint) deliver(l *Link, remote netip.AddrPort, accept func(*Link)) {
	h := handoff{link: l, accept: accept}
	e.mu.Lock()
	ws := e.waiters[remote]
	if len(ws) > 0 {
		w := ws[0]
		e.waiters[remote] = ws[1:]
		if len(ws) == 1 {
			delete(e.waiters, remote)
		}
		e.mu.Unlock()
		w <- h
		return
	}
	e.mu.Unlock()
	e.queue(h)
}

func (e *Endpoint) queue(h handoff) {
	if h.accept != nil {
		h.accept(h.link)
		return
	}
	select {
	case e.accepted <- h.link:
	default:
		h.link.log.Warn("accept queue full, closing link")
		h.link.Close()
	}
}

// freeList is a bounded free list of packet buffers.
type freeList chan *[MaxPayload + record.Overhead]byte

func newFreeList(n int) freeList { return make(freeList, n) }

func (f freeList) get() *[MaxPayload + record.Overhead]byte {
	select {
	case b := <-f:
		return b
	default:
		return new([MaxPayload + record.Overhead]byte)
	}
}

func (f freeList) put(b *[MaxPayload + record.Overhead]byte) {
	select {
	case f <- b:
	default:
	}
}

// earlyRecords holds the sealed records that arrive while a handshake is
// finishing, and hands them to the session once it exists.
type earlyRecords struct {
	mu      sync.Mutex
	session *session
	records []earlyRecord
}

type earlyRecord struct {
	b    []byte
	from netip.AddrPort
}

const maxEarlyRecords = 4

func (e *earlyRecords) keep(b []byte, from netip.AddrPort) {
	e.mu.Lock()
	if s := e.session; s != nil {
		e.mu.Unlock()
		s.receive(b, from)
		return
	}
	if len(e.records) < maxEarlyRecords {
		e.records = append(e.records, earlyRecord{append([]byte(nil), b...), from})
	}
	e.mu.Unlock()
}

func (e *earlyRecords) handOver(s *session) {
	e.mu.Lock()
	e.session = s
	records := e.records
	e.records = nil
	e.mu.Unlock()
	for _, r := range records {
		s.receive(r.b, r.from)
	}
}
