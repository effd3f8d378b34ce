package sim

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/simnet"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/memnet"
)

// Options describe a cluster.
type Options struct {
	// N is the number of nodes started by Start.
	N int
	// Secure runs real DTLS links over the in-memory network; otherwise
	// links are plain (no crypto), for thousands of nodes.
	Secure bool
	// Latency models the RTT between nodes; nil means 10 ms everywhere.
	Latency simnet.LatencyModel
	// Overlay configures every node; Bootstrap is filled in by the
	// cluster (the first node).
	Overlay overlay.Config
	// Security configures the DTLS links of a Secure cluster.
	Security security.Config
	// JoinEvery spaces the starts of the nodes; each joins through a
	// random node already started. Zero starts them all at once through
	// the first.
	JoinEvery time.Duration
	// Seed makes addresses and placement repeatable.
	Seed uint64
	// Spec, if set, gives node i's certificate fields in a Secure cluster
	// (its virtual IPs, say); the name is always "node<i>".
	Spec func(i int) security.MemberSpec
	// OnNode, if set, runs for each node after it is created and before
	// it starts, to attach services (the DHT) the way a daemon does.
	OnNode func(*Member) error
	// Certs gives the members of a plain cluster certificates from a
	// cluster CA too (Member.Identity and Bundle; their peers see them in
	// Link.Peer), for services that check certificates, such as
	// revocation lists. The keys are Ed25519 keys drawn from Seed, so
	// addresses stay repeatable (but differ from a run without Certs).
	Certs bool
	// NAT puts members of a Secure cluster behind NATs (memnet models).
	NAT NATMix
	// Pipes gives every member of a Secure cluster routed pipes
	// (Member.Pipes), which relayed links need; NAT implies it.
	Pipes bool
	// Log receives the nodes' logs; nil discards them.
	Log *zap.Logger
}

// NATMix says which members sit behind a NAT, each its own (a home or
// office router). The first member never does: it is the way in.
type NATMix struct {
	// Share is the fraction of the members behind a NAT.
	Share float64
	// Symmetric is the fraction of all members behind a symmetric NAT
	// (part of Share); the others behind a NAT get a full, restricted or
	// port-restricted cone in turn.
	Symmetric float64
}

// Member is one node of the cluster.
type Member struct {
	Index int
	Node  *overlay.Node
	Addr  netip.AddrPort
	// Linker is the node's linker: an *overlay.SecureLinker in a Secure
	// cluster (its Endpoint runs services' DTLS, such as routed pipes).
	Linker overlay.Linker
	// Identity is the node's key and certificate in a Secure cluster (or
	// with Options.Certs).
	Identity *security.Identity
	// Bundle holds the cluster's group CA (Secure clusters, Certs).
	Bundle *security.TrustBundle
	// NAT is the member's NAT type ("" when it has a public address) and
	// Pipes its routed pipes (Options.Pipes).
	NAT   string
	Pipes *overlay.Pipes

	member *security.Member
	plain  *simnet.Linker
	conn   *memnet.Conn
	alive  bool
}

// Cluster is a set of ring nodes in one process.
type Cluster struct {
	opts   Options
	log    *zap.Logger
	rng    *rand.Rand
	net    *memnet.Network
	fabric *simnet.Fabric
	ca     *security.CA
	bundle *security.TrustBundle

	mu      sync.Mutex
	members []*Member
}

// New prepares a cluster; Start launches its nodes.
func New(opts Options) (*Cluster, error) {
	if opts.N < 1 {
		return nil, errors.New("sim: a cluster needs at least one node")
	}
	if opts.Latency == nil {
		opts.Latency = simnet.Constant(10 * time.Millisecond)
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	c := &Cluster{opts: opts, log: opts.Log, rng: rand.New(rand.NewPCG(opts.Seed, 0x5eed))}
	if opts.Secure || opts.Certs {
		now := time.Now()
		ca, err := security.NewCA("sim-ca", now.Add(-time.Hour), now.Add(30*24*time.Hour), "ecdsa-p256")
		if err != nil {
			return nil, err
		}
		bundle, err := security.NewTrustBundle(ca.Cert)
		if err != nil {
			return nil, err
		}
		c.ca, c.bundle = ca, bundle
	}
	if opts.Secure {
		c.net = memnet.New(opts.Seed)
	} else {
		c.fabric = simnet.New(simnet.Config{Latency: opts.Latency, Seed: opts.Seed, DeadAfter: opts.Overlay.DeadAfter})
	}
	return c, nil
}

// Network is the in-memory network of a Secure cluster (nil otherwise),
// for tests that cut or degrade links between members.
func (c *Cluster) Network() *memnet.Network { return c.net }

// hostAddr is node i's transport address.
func hostAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 4242)
}

// Start launches the first N nodes, each bootstrapping through node 0,
// a few at a time so the ring forms as it would in the wild.
func (c *Cluster) Start(ctx context.Context) error {
	for range c.opts.N {
		if _, err := c.Add(); err != nil {
			return err
		}
		if c.opts.JoinEvery > 0 {
			select {
			case <-time.After(c.opts.JoinEvery):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// Add starts one more node, bootstrapping through the first live node.
func (c *Cluster) Add() (*Member, error) {
	c.mu.Lock()
	i := len(c.members)
	var live []*Member
	for _, m := range c.members {
		if m.alive && m.NAT == "" { // a bootstrap peer must be reachable
			live = append(live, m)
		}
	}
	var boot []netip.AddrPort
	if len(live) > 0 {
		b := live[0]
		if c.opts.JoinEvery > 0 {
			b = live[c.rng.IntN(len(live))]
		}
		boot = []netip.AddrPort{b.Addr}
	}
	c.mu.Unlock()
	addr := hostAddr(i + 1)
	cfg := c.opts.Overlay
	cfg.Bootstrap = boot
	log := c.log.With(zap.Int("sim", i))
	m := &Member{Index: i, Addr: addr, alive: true}
	var linker overlay.Linker
	if c.opts.Secure {
		var spec security.MemberSpec
		if c.opts.Spec != nil {
			spec = c.opts.Spec(i)
		}
		spec.Name = fmt.Sprintf("node%d", i)
		id, err := c.identity(spec)
		if err != nil {
			return nil, err
		}
		m.member, m.Identity, m.Bundle = id.Member, id, c.bundle
		if err := c.placeSecure(addr.Addr()); err != nil {
			return nil, err
		}
		conn, err := c.listenSecure(m, i)
		if err != nil {
			return nil, err
		}
		m.conn = conn
		mux, err := transport.NewMux(conn, transport.Default(), log)
		if err != nil {
			conn.Close()
			return nil, err
		}
		sl, err := overlay.NewSecureLinker(mux, id, c.bundle, c.opts.Security, log)
		if err != nil {
			mux.Close()
			return nil, err
		}
		linker = sl
	} else {
		if c.opts.Certs {
			id, err := c.plainIdentity(fmt.Sprintf("node%d", i))
			if err != nil {
				return nil, err
			}
			m.member, m.Identity, m.Bundle = id.Member, id, c.bundle
		} else {
			var a security.Address
			for j := range a {
				a[j] = byte(c.rng.Uint32())
			}
			m.member = &security.Member{MemberSpec: security.MemberSpec{Name: fmt.Sprintf("node%d", i)}, Address: a}
		}
		pl, err := c.fabric.Listen(m.member, addr)
		if err != nil {
			return nil, err
		}
		m.plain = pl
		linker = pl
	}
	m.Linker = linker
	node, err := overlay.New(m.member, linker, cfg, log)
	if err != nil {
		linker.Close()
		return nil, err
	}
	m.Node = node
	if sl, ok := linker.(*overlay.SecureLinker); ok && (c.opts.Pipes || c.opts.NAT.Share > 0) {
		if m.Pipes, err = overlay.NewPipes(node, sl.Endpoint(), overlay.DefaultPipeConfig(), log); err != nil {
			node.Close()
			return nil, err
		}
	}
	if c.opts.OnNode != nil {
		if err := c.opts.OnNode(m); err != nil {
			node.Close()
			return nil, err
		}
	}
	c.mu.Lock()
	c.members = append(c.members, m)
	c.mu.Unlock()
	node.Start()
	return m, nil
}

// natTypes are the cone NATs NATed members get in turn.
var natTypes = []memnet.NATType{memnet.FullCone, memnet.RestrictedCone, memnet.PortRestrictedCone}

// listenSecure opens member i's socket: on its public address, or behind
// a NAT of its own whose public address that is (so latencies, modelled
// between public addresses, are the same). Whether and which NAT is drawn
// from the cluster's generator, so a seed gives the same mix.
func (c *Cluster) listenSecure(m *Member, i int) (*memnet.Conn, error) {
	mix := c.opts.NAT
	if mix.Share <= 0 || i == 0 {
		return c.net.Listen(m.Addr)
	}
	c.mu.Lock()
	u := c.rng.Float64()
	turn := c.rng.IntN(len(natTypes))
	c.mu.Unlock()
	var typ memnet.NATType
	switch {
	case u < mix.Symmetric:
		typ = memnet.Symmetric
	case u < mix.Share:
		typ = natTypes[turn]
	default:
		return c.net.Listen(m.Addr)
	}
	nat, err := c.net.NewNAT(m.Addr.Addr(), typ.Config())
	if err != nil {
		return nil, err
	}
	m.NAT = typ.String()
	// A private address of its own per member: two members offering the
	// same private address would dial themselves.
	private := netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16&0x0f), byte(i >> 8), byte(i)}), 4242)
	return nat.Listen(private)
}

func (c *Cluster) identity(spec security.MemberSpec) (*security.Identity, error) {
	key, err := security.GenerateKey("ecdsa-p256")
	if err != nil {
		return nil, err
	}
	now := time.Now()
	cert, err := c.ca.Issue(key.Public(), spec, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	if err != nil {
		return nil, err
	}
	return security.NewIdentity(key, cert, c.bundle, now)
}

// plainIdentity is a member of a plain cluster with Certs: an Ed25519
// key drawn from the cluster's generator and a certificate from its CA.
func (c *Cluster) plainIdentity(name string) (*security.Identity, error) {
	var seed [ed25519.SeedSize]byte
	for j := range seed {
		seed[j] = byte(c.rng.Uint32())
	}
	key := ed25519.NewKeyFromSeed(seed[:])
	now := time.Now()
	cert, err := c.ca.Issue(key.Public(), security.MemberSpec{Name: name}, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	if err != nil {
		return nil, err
	}
	return security.NewIdentity(key, cert, c.bundle, now)
}

// CA is the cluster's group CA (Secure clusters, Certs; nil otherwise),
// for tests and measurements that sign revocation lists.
func (c *Cluster) CA() *security.CA { return c.ca }

// placeSecure sets the memnet paths from a new host to every existing
// one from the latency model.
func (c *Cluster) placeSecure(ip netip.Addr) error {
	c.mu.Lock()
	others := make([]netip.Addr, 0, len(c.members))
	for _, m := range c.members {
		others = append(others, m.Addr.Addr())
	}
	c.mu.Unlock()
	for _, o := range others {
		rtt := c.opts.Latency.RTT(ip, o)
		if err := c.net.SetLink(ip, o, memnet.LinkConfig{Latency: rtt / 2}); err != nil {
			return err
		}
	}
	return nil
}

// Remove takes member i out: a clean leave (peers are told) or a crash
// (the node falls silent and its peers must notice by themselves).
func (c *Cluster) Remove(i int, crash bool) {
	c.mu.Lock()
	m := c.members[i]
	wasAlive := m.alive
	m.alive = false
	c.mu.Unlock()
	if !wasAlive {
		return
	}
	if crash && m.plain != nil {
		m.plain.Kill()
	}
	if crash && m.conn != nil {
		m.conn.Close() // the goodbyes below go nowhere
	}
	m.Node.Close()
}

// Members returns the live members.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Member
	for _, m := range c.members {
		if m.alive {
			out = append(out, m)
		}
	}
	return out
}

// Close stops every node and the network.
func (c *Cluster) Close() {
	c.mu.Lock()
	ms := slices.Clone(c.members)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ms {
		if m.alive {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Remove(m.Index, false)
			}()
		}
	}
	wg.Wait()
	if c.net != nil {
		c.net.Close()
	}
	if c.fabric != nil {
		c.fabric.Close()
	}
}

// RTT is the modelled round-trip time between two members.
func (c *Cluster) RTT(a, b *Member) time.Duration {
	return c.opts.Latency.RTT(a.Addr.Addr(), b.Addr.Addr())
}

// RingErrors compares every live node's near neighbours with the true
// ring: each must be linked (as near) to its k true successors and k true
// predecessors. It returns one line per node that is wrong.
func (c *Cluster) RingErrors(k int) []string {
	ms := c.Members()
	addrs := make([]overlay.Address, len(ms))
	for i, m := range ms {
		addrs[i] = m.Node.Address()
	}
	slices.SortFunc(addrs, func(a, b overlay.Address) int { return a.Compare(b) })
	pos := make(map[overlay.Address]int, len(addrs))
	for i, a := range addrs {
		pos[a] = i
	}
	k = min(k, (len(addrs)-1+1)/2)
	var errs []string
	for _, m := range ms {
		st := m.Node.Status()
		near := make(map[overlay.Address]bool)
		for _, p := range st.Peers {
			if p.Kinds&overlay.KindNear != 0 {
				near[p.Address] = true
			}
		}
		i := pos[st.Address]
		for d := 1; d <= k && d < len(addrs); d++ {
			for _, j := range []int{(i + d) % len(addrs), (i - d + len(addrs)) % len(addrs)} {
				if !near[addrs[j]] {
					errs = append(errs, fmt.Sprintf("%s (%s) has no near link to its ring neighbour %s at distance %d", st.Name, st.Address, addrs[j], d))
				}
			}
		}
	}
	return errs
}

// WaitRing waits until RingErrors is empty, and returns how long it took.
func (c *Cluster) WaitRing(ctx context.Context, k int) (time.Duration, error) {
	start := time.Now()
	for {
		errs := c.RingErrors(k)
		if len(errs) == 0 {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("ring not correct after %v: %d problems, first: %s", time.Since(start).Round(time.Millisecond), len(errs), errs[0])
		case <-time.After(100 * time.Millisecond):
		}
	}
}
