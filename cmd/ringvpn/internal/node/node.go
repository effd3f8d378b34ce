// Package node wires a running member together: the UDP socket, the Mux,
// the DTLS endpoint, the ring node (which joins through the bootstrap
// peers and keeps its near and far links), the DHT, the revocation lists
// and their spreading, and the local status endpoint.
package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/revoke"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap"
	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/udp"
)

// Node is one running member.
type Node struct {
	// immutable after Start
	cfg      Config
	log      *zap.Logger
	identity *security.Identity
	revs     *security.Revocations
	crlFiles *security.RevocationFiles
	mux      *transport.Mux
	linker   *overlay.SecureLinker
	ring     *overlay.Node
	dht      *dht.DHT
	spread   *revoke.Spreader
	pipes    *overlay.Pipes
	vpn      *vpn.VPN // nil when vpn.enabled is false
	started  time.Time
	wg       sync.WaitGroup
	stop     context.CancelFunc // ends the goroutines of Start; nil before
}

// Start loads the identity, opens the socket, and joins the ring.
func Start(ctx context.Context, cfg Config, log *zap.Logger) (*Node, error) {
	n, err := open(cfg, log)
	if err != nil {
		return nil, err
	}
	n.ring.Start()
	if n.vpn != nil {
		n.vpn.Start()
	}
	var watch context.Context
	watch, n.stop = context.WithCancel(context.Background())
	monitor := &security.Monitor{
		Identity: n.identity, Revocations: n.revs, Files: n.crlFiles,
		ReloadEvery: cfg.Identity.CRLReload, WarnAhead: cfg.Identity.ExpiryWarning, Log: log,
	}
	n.goRun(func() { monitor.Run(watch) })
	log.Info("node started",
		zap.String("name", n.identity.Member.Name),
		zap.Stringer("node", n.identity.Member.Address),
		zap.Stringer("addr", n.linker.LocalAddr()),
		zap.Int("bootstrap", len(cfg.Overlay.Bootstrap)))
	return n, nil
}

// open builds everything but does not start the ring.
func open(cfg Config, log *zap.Logger) (*Node, error) {
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
	revs := security.NewRevocations(bundle)
	crlFiles, err := security.LoadRevocationFiles(revs, cfg.Identity.CRL, log)
	if err != nil {
		return nil, fmt.Errorf("identity.crl: %w", err)
	}
	if err := revs.Check(identity.Cert); err != nil {
		return nil, fmt.Errorf("identity: %w (ask the CA for a new certificate)", err)
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
	linker, err := overlay.NewSecureLinker(mux, identity, bundle, cfg.Security, log)
	if err != nil {
		mux.Close()
		return nil, err
	}
	linker.Endpoint().SetRevocations(revs)
	ring, err := overlay.New(identity.Member, linker, cfg.Overlay, log)
	if err != nil {
		linker.Close()
		return nil, err
	}
	// Every node stores vip records and revocation lists for the others,
	// VPN member or not.
	verify := revoke.Verifier(vpn.Verifier(dht.VerifyWith(bundle)))
	store, err := dht.New(ring, cfg.DHT, verify, log)
	if err != nil {
		ring.Close()
		return nil, err
	}
	spread, err := revoke.New(revoke.Params{
		Node: ring, Revocations: revs, DHT: store, Identity: identity, Config: cfg.Revocation, Log: log,
	})
	if err != nil {
		store.Close()
		ring.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, identity: identity, revs: revs, crlFiles: crlFiles, mux: mux, linker: linker, ring: ring, dht: store, spread: spread, started: time.Now()}
	n.pipes, err = overlay.NewPipes(ring, linker.Endpoint(), cfg.Overlay.Pipes, log)
	if err != nil {
		n.Close()
		return nil, err
	}
	if cfg.VPN.Enabled {
		if n.vpn, err = openVPN(cfg, n, verify, log); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// openVPN opens the TAP device with the certificate's fixed virtual IPs
// and builds the VPN on it; an address leased from a pool is added to the
// device by the VPN once it holds it.
func openVPN(cfg Config, n *Node, verify dht.Verifier, log *zap.Logger) (*vpn.VPN, error) {
	self := n.identity.Member
	if len(self.IPs) == 0 {
		return nil, fmt.Errorf("vpn: the certificate of %q carries no virtual IP: issue one with `ringvpn cert issue --ip`, or set vpn.enabled: false for a ring-only member", self.Name)
	}
	dev, err := tap.Open(cfg.TAP.device(self.FixedIPs(), tap.MAC(tap.MACFromBytes(self.Address[:]))), log)
	if err != nil {
		return nil, err
	}
	v, err := vpn.New(vpn.Params{
		Node: n.ring, DHT: n.dht, Pipes: n.pipes, Device: dev,
		Identity: n.identity, Verify: verify, Config: cfg.VPN.Config, Log: log,
		Batcher: n.mux,
	})
	if err != nil {
		dev.Close()
		return nil, err
	}
	return v, nil
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

// Close leaves the ring (telling the peers), closes the socket and waits.
func (n *Node) Close() error {
	if n.stop != nil {
		n.stop()
	}
	if n.vpn != nil {
		n.vpn.Close()
	}
	if n.pipes != nil {
		n.pipes.Close()
	}
	n.spread.Close()
	n.dht.Close()
	err := n.ring.Close()
	n.wg.Wait()
	return err
}

// Ring is the node's ring member.
func (n *Node) Ring() *overlay.Node { return n.ring }

// DHT is the node's share of the ring's key/value store.
func (n *Node) DHT() *dht.DHT { return n.dht }

// VPN is the node's VPN, nil when vpn.enabled is false.
func (n *Node) VPN() *vpn.VPN { return n.vpn }

// Revocations are the revocation lists the node applies: those of
// identity.crl, those received from the other members, and any added to
// it (Add), which the node's links obey at once. A list added from here
// (not received) is spread to the other members.
func (n *Node) Revocations() *security.Revocations { return n.revs }

// Spreader spreads the node's revocation lists and takes the others'.
func (n *Node) Spreader() *revoke.Spreader { return n.spread }

// Endpoint is the node's link maker (for diagnostics such as probe).
func (n *Node) Endpoint() *security.Endpoint { return n.linker.Endpoint() }
