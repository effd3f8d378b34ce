// Package node wires a running member together: the UDP socket, the Mux,
// the security Endpoint, links to the configured peers with round-trip
// probes, and the local status endpoint. The ring (package overlay) will
// take over choosing peers; until then a node links with the peers in its
// configuration.
package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/udp"
)

// Probe messages travel inside sealed records:
//
//	0      1                 9                 17
//	+------+-----------------+-----------------+
//	| type | sequence (BE64) | send time (ns)  |
//	+------+-----------------+-----------------+
const (
	probePing  byte = 1
	probePong  byte = 2
	probeLen        = 17
	maxBackoff      = 30 * time.Second
)

// Node is one running member.
type Node struct {
	// immutable after Start
	cfg      Config
	log      *zap.Logger
	identity *security.Identity
	mux      *transport.Mux
	endpoint *security.Endpoint
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  time.Time

	// mu guards the following
	mu    sync.Mutex
	links map[*security.Link]*linkState
}

type linkState struct {
	mu       sync.Mutex
	rtt      time.Duration
	probeSeq uint64
}

// Start loads the identity, opens the socket and begins linking.
func Start(ctx context.Context, cfg Config, log *zap.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bundle, err := loadBundle(cfg.Identity.CA)
	if err != nil {
		return nil, err
	}
	identity, err := security.LoadIdentity(cfg.Identity.Cert, cfg.Identity.Key, bundle, time.Now())
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	conn, err := udp.Listen(cfg.Listen, cfg.Transport.UDP)
	if err != nil {
		return nil, fmt.Errorf("listen: %w (is another ringvpn using the port? change `listen`)", err)
	}
	mux, err := transport.NewMux(conn, cfg.Transport.Config, log)
	if err != nil {
		conn.Close()
		return nil, err
	}
	dial := func(ctx context.Context, remote netip.AddrPort) (security.Pipe, error) {
		p, err := mux.Dial(ctx, remote)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	endpoint, err := security.NewEndpoint(identity, bundle, cfg.Security, dial, log)
	if err != nil {
		mux.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Node{
		cfg: cfg, log: log, identity: identity, mux: mux, endpoint: endpoint,
		cancel: cancel, started: time.Now(), links: make(map[*security.Link]*linkState),
	}
	log.Info("node started",
		zap.String("name", identity.Member.Name),
		zap.Stringer("node", identity.Member.Address),
		zap.Stringer("addr", mux.LocalAddr()))
	n.goRun(func() { n.acceptPipes(ctx) })
	n.goRun(func() { n.acceptLinks(ctx) })
	n.goRun(func() { n.probe(ctx) })
	for _, peer := range cfg.PeerAddrs() {
		n.goRun(func() { n.keepLinked(ctx, peer) })
	}
	return n, nil
}

func loadBundle(path string) (*security.TrustBundle, error) {
	cas, err := security.ReadCertificates(path)
	if err != nil {
		return nil, fmt.Errorf("identity.ca: %w", err)
	}
	b, err := security.NewTrustBundle(cas...)
	if err != nil {
		return nil, fmt.Errorf("identity.ca %s: %w", path, err)
	}
	return b, nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Close closes every link (telling the peers), the socket, and waits.
func (n *Node) Close() error {
	n.cancel()
	n.endpoint.Close()
	err := n.mux.Close()
	n.wg.Wait()
	return err
}

// LocalAddr is the node's UDP address.
func (n *Node) LocalAddr() netip.AddrPort { return n.mux.LocalAddr() }

// Endpoint is the node's link maker (for diagnostics such as probe).
func (n *Node) Endpoint() *security.Endpoint { return n.endpoint }

func (n *Node) acceptPipes(ctx context.Context) {
	for {
		p, err := n.mux.Accept(ctx)
		if err != nil {
			return
		}
		n.endpoint.Serve(p)
	}
}

func (n *Node) acceptLinks(ctx context.Context) {
	for {
		l, err := n.endpoint.Accept(ctx)
		if err != nil {
			return
		}
		n.addLink(l)
	}
}

// keepLinked keeps one link to a configured peer, redialling with backoff.
func (n *Node) keepLinked(ctx context.Context, peer netip.AddrPort) {
	backoff := time.Second
	for ctx.Err() == nil {
		if l := n.linkTo(peer); l != nil {
			select {
			case <-l.Done():
				backoff = time.Second
				continue
			case <-ctx.Done():
				return
			}
		}
		l, err := n.endpoint.Dial(ctx, peer)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("link failed, retrying", zap.Stringer("addr", peer), zap.Duration("in", backoff), zap.Error(err))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = time.Second
		n.addLink(l)
	}
}

// linkTo returns an open link whose peer is at addr.
func (n *Node) linkTo(addr netip.AddrPort) *security.Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	for l := range n.links {
		if l.Remote() == addr {
			return l
		}
	}
	return nil
}

func (n *Node) addLink(l *security.Link) {
	st := &linkState{}
	n.mu.Lock()
	if _, dup := n.links[l]; dup {
		n.mu.Unlock()
		return
	}
	n.links[l] = st
	n.mu.Unlock()
	l.SetHandler(func(pkt []byte) { n.onPacket(l, st, pkt) })
	n.goRun(func() {
		<-l.Done()
		n.mu.Lock()
		delete(n.links, l)
		n.mu.Unlock()
	})
}

// onPacket answers probes; it runs on the socket reader.
func (n *Node) onPacket(l *security.Link, st *linkState, pkt []byte) {
	if len(pkt) != probeLen {
		return
	}
	switch pkt[0] {
	case probePing:
		var pong [probeLen]byte
		copy(pong[:], pkt)
		pong[0] = probePong
		l.Send(pong[:])
	case probePong:
		sent := int64(binary.BigEndian.Uint64(pkt[9:]))
		rtt := time.Duration(time.Now().UnixNano() - sent)
		if rtt >= 0 {
			st.mu.Lock()
			st.rtt = rtt
			st.mu.Unlock()
		}
	}
}

func (n *Node) probe(ctx context.Context) {
	t := time.NewTicker(n.cfg.Probe.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.mu.Lock()
		for l, st := range n.links {
			st.probeSeq++
			var ping [probeLen]byte
			ping[0] = probePing
			binary.BigEndian.PutUint64(ping[1:], st.probeSeq)
			binary.BigEndian.PutUint64(ping[9:], uint64(time.Now().UnixNano()))
			if err := l.Send(ping[:]); err != nil && !errors.Is(err, security.ErrLinkClosed) {
				n.log.Debug("probe failed", zap.String("peer", l.Peer().Name), zap.Error(err))
			}
		}
		n.mu.Unlock()
	}
}
