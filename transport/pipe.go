package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/deadline"
)

// Handler receives the sealed records of one pipe. It runs on the Mux's
// reader goroutine (two of them briefly during a Rebind), so it must not
// block; b is valid only until it returns and may be modified in place.
type Handler = func(b []byte, from netip.AddrPort)

// Pipe is one session's slice of the Mux socket: sealed records go to its
// Handler, DTLS records to its control connection.
type Pipe struct {
	// immutable after newPipe
	mux           *Mux
	id            ConnID
	dialed        bool
	handshakeAddr netip.AddrPort
	handshakeDone chan struct{} // closed when the pipe stops being found by address
	control       chan controlDatagram
	closed        chan struct{}

	remote  atomic.Pointer[netip.AddrPort]
	handler atomic.Pointer[Handler]

	// mux.mu guards the following
	handshaking bool
	helloRandom [randomLen]byte
	haveRandom  bool

	// mu guards the following
	mu          sync.Mutex
	failErr     error // set when the control side is failed or detached
	failed      chan struct{}
	closeOnce   sync.Once
	readTimeout *deadline.Deadline
}

type controlDatagram struct {
	b    []byte
	from netip.AddrPort
}

func newPipe(m *Mux, id ConnID, remote netip.AddrPort, dialed bool) *Pipe {
	p := &Pipe{
		mux:           m,
		id:            id,
		dialed:        dialed,
		handshakeAddr: remote,
		handshakeDone: make(chan struct{}),
		control:       make(chan controlDatagram, m.cfg.ControlQueue),
		closed:        make(chan struct{}),
		handshaking:   true,
		failed:        make(chan struct{}),
		readTimeout:   deadline.New(),
	}
	p.remote.Store(&remote)
	return p
}

// LocalID is the connection ID the peer puts on records for this session.
func (p *Pipe) LocalID() ConnID { return p.id }

// Dialed reports whether this side opened the session.
func (p *Pipe) Dialed() bool { return p.dialed }

// Remote is where the pipe sends: the peer's latest known address.
func (p *Pipe) Remote() netip.AddrPort { return *p.remote.Load() }

// SetRemote moves the pipe to a new peer address. Call it only for a
// record that authenticated and is the newest seen, so an attacker who
// replays or spoofs packets cannot redirect the session.
func (p *Pipe) SetRemote(a netip.AddrPort) {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	if a != p.Remote() {
		p.remote.Store(&a)
	}
}

// SetHandler installs the receiver of sealed records (nil removes it).
func (p *Pipe) SetHandler(h Handler) {
	if h == nil {
		p.handler.Store(nil)
		return
	}
	p.handler.Store(&h)
}

// Send sends one datagram to the peer. b is not retained.
func (p *Pipe) Send(b []byte) error {
	select {
	case <-p.closed:
		return net.ErrClosed
	default:
	}
	return p.mux.write(b, p.Remote())
}

// Established tells the Mux that both sides completed the handshake, so
// from now on the pipe is found by connection ID only and the address is
// free for the next handshake.
func (p *Pipe) Established() { p.mux.established(p) }

// Done is closed when the pipe is closed.
func (p *Pipe) Done() <-chan struct{} { return p.closed }

// Close releases the session's connection ID and stops its delivery.
func (p *Pipe) Close() error {
	p.closeOnce.Do(func() {
		p.mux.remove(p)
		p.handler.Store(nil)
		close(p.closed)
	})
	return nil
}

// ControlConn is the view of the pipe that a DTLS engine runs over. Its
// Close only detaches the engine: later writes are dropped and reads fail,
// so an engine can be discarded after the handshake without telling the
// peer (the session lives on in sealed records).
func (p *Pipe) ControlConn() net.PacketConn { return controlConn{p} }

// fail stops the control side with err.
func (p *Pipe) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failErr == nil {
		p.failErr = err
		close(p.failed)
	}
}

func (p *Pipe) controlErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failErr
}

func (p *Pipe) deliverControl(b []byte, from netip.AddrPort) {
	select {
	case <-p.failed:
		p.mux.stats.dropDetached.Add(1)
		return
	default:
	}
	d := controlDatagram{b: append([]byte(nil), b...), from: from}
	select {
	case p.control <- d:
		p.mux.stats.control.Add(1)
	default:
		p.mux.stats.dropQueueFull.Add(1)
	}
}

var errDetached = errors.New("transport: control connection detached")

type controlConn struct{ p *Pipe }

func (c controlConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p := c.p
	select {
	case d := <-p.control:
		n := copy(b, d.b)
		return n, net.UDPAddrFromAddrPort(d.from), nil
	case <-p.failed:
		return 0, nil, &net.OpError{Op: "read", Net: "ringvpn-pipe", Err: p.controlErr()}
	case <-p.closed:
		return 0, nil, net.ErrClosed
	case <-p.readTimeout.Done():
		return 0, nil, timeoutError{}
	}
}

func (c controlConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	p := c.p
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	case <-p.failed:
		return len(b), nil // a detached engine's alerts go nowhere
	default:
	}
	if p.dialed {
		if random, ok := ClientHelloRandom(b); ok {
			p.mux.mu.Lock()
			if !p.haveRandom {
				copy(p.helloRandom[:], random)
				p.haveRandom = true
			}
			p.mux.mu.Unlock()
		}
	}
	// The address pion passes is ignored: the pipe follows the peer.
	if err := p.mux.write(b, p.Remote()); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c controlConn) Close() error {
	c.p.fail(errDetached)
	return nil
}

func (c controlConn) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(c.p.mux.LocalAddr())
}

func (c controlConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c controlConn) SetReadDeadline(t time.Time) error {
	c.p.readTimeout.Set(t)
	return nil
}

func (c controlConn) SetWriteDeadline(time.Time) error { return nil }

type timeoutError struct{}

func (timeoutError) Error() string   { return "transport: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Glared reports whether this dialed session lost a simultaneous open to a
// session the peer opened towards us at the same moment.
func (p *Pipe) Glared() bool {
	return errors.Is(p.controlErr(), ErrGlare)
}
