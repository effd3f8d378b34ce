package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/simnet"
	"github.com/ringvpn/ringvpn/security"
)

// RunOptions describe a measured simulation (Run). Zero fields take the
// defaults documented on each, most of which depend on N; start from
// DefaultRunOptions for the defaults of `ringvpn sim`.
type RunOptions struct {
	// N is how many nodes join before the measurements.
	N int
	// Secure runs real DTLS links on the in-memory network (up to a
	// thousand nodes; a few hundred is practical); otherwise links are
	// plain.
	Secure bool
	// Latency models the RTT between hosts; nil is simnet.NewPlane(Seed).
	Latency simnet.LatencyModel
	// Overlay configures every node; zero (Near == 0) is OverlayFor(N).
	// Bootstrap is filled in per node.
	Overlay overlay.Config
	// Security configures the DTLS links of a Secure run; zero
	// (HandshakeTimeout == 0) is SecurityFor(N).
	Security security.Config
	// DHT configures the DHT attached to every node when DHTKeys > 0;
	// zero (Replicas == 0) is DHTFor(N).
	DHT dht.Config
	// JoinEvery spaces the nodes' starts; each joins through a random
	// node already started. Zero: 15ms from 500 nodes up (1,000 nodes join
	// in 15s), 20ms below, 50ms for Secure runs.
	JoinEvery time.Duration
	// Seed makes addresses, placement and the sampled pairs repeatable.
	Seed uint64
	// Pairs is how many random ordered pairs exchange an echo (every pair
	// when there are fewer); zero is 2,000.
	Pairs int
	// Parallel is how many echoes are in flight at once; zero is 32.
	Parallel int
	// EchoTimeout bounds one echo; a message not answered by then counts
	// as undelivered. Zero is 5s.
	EchoTimeout time.Duration
	// ConvergeTimeout bounds the wait for a correct ring after the last
	// join, and again after churn; the measurements go on regardless.
	// Zero is 2 minutes plus 10ms per node, times TimeScale.
	ConvergeTimeout time.Duration
	// DHTKeys is how many values are put from random nodes and read back
	// from others; zero skips the DHT (no DHT is attached).
	DHTKeys int
	// JoinTrials is how many times one more node is added to the
	// converged ring to time how soon it is routable; zero skips it.
	JoinTrials int
	// Churn is the fraction of the nodes replaced per minute during the
	// churn window (a crash of a random node and a new node joining);
	// zero skips the churn phase.
	Churn float64
	// ChurnFor is how long the churn window lasts; zero is one minute.
	ChurnFor time.Duration
	// CompareProximity runs the same seed a second time with
	// Overlay.Proximity flipped, without the DHT, join and churn phases,
	// and attaches that report as Report.Compare.
	CompareProximity bool
	// TimeScale, above 1, stretches every interval and timeout of the
	// nodes and the DHT (maintenance, pings, dead-after, connect timeout,
	// republishing, request timeout) by that factor, so a run too large
	// for the machine to carry in real time keeps up: a node's background
	// work costs TimeScale times less per second. Link latencies are not
	// stretched, so path lengths, links per node and stretch are measured
	// as they are; times to converge, heal or join come out about
	// TimeScale times longer. Zero or 1 runs in real time.
	TimeScale float64
	// NAT puts nodes of a Secure run behind NATs (see NATMix); the run
	// then also tries NATPairs shortcut links between random pairs and
	// reports how many went direct (hole punched) and how many through a
	// relay.
	NAT NATMix
	// NATPairs is how many pairs try a shortcut link in a NAT run; zero
	// is 100.
	NATPairs int
	// Revoke runs every node with revocation lists (overlay/revoke, over
	// a DHT) and, after the other measurements, has a random node publish
	// a list revoking another: the report says how soon every other node
	// held it and the revoked node had no links left. Plain runs give the
	// nodes certificates from a cluster CA for it (Options.Certs), and
	// their links obey the lists as DTLS links do.
	Revoke bool
	// RevokeTimeout bounds the wait for the revocation to reach every
	// node; zero is one minute, times TimeScale.
	RevokeTimeout time.Duration
	// Log receives progress (one line per phase); nil discards it.
	Log *zap.Logger
	// NodeLog receives the nodes' own logs; nil discards them.
	NodeLog *zap.Logger
}

// DefaultRunOptions returns the defaults of `ringvpn sim`: 1,000 plain
// nodes on the plane latency model, 2,000 pairs, 100 DHT keys, 5 join
// trials, no churn.
func DefaultRunOptions() RunOptions {
	return RunOptions{
		N:          1000,
		Seed:       1,
		Pairs:      2000,
		Parallel:   32,
		DHTKeys:    100,
		JoinTrials: 5,
		ChurnFor:   time.Minute,
	}
}

// largeRun is the size from which Run uses the production intervals: the
// simulation is CPU-bound there, and short intervals would measure the
// machine rather than the ring.
const largeRun = 500

// OverlayFor returns the overlay configuration Run gives n nodes: the
// production defaults (overlay.Default: maintenance every second, pings
// every 2s, links dead after 8s) from 500 nodes up, and below that the
// short intervals of overlaytest.FastConfig, so small runs converge and
// heal in a test's time.
func OverlayFor(n int) overlay.Config {
	c := overlay.Default()
	if n >= largeRun {
		return c
	}
	c.MaintainInterval = 200 * time.Millisecond
	c.PingInterval = 500 * time.Millisecond
	c.DeadAfter = 2 * time.Second
	c.ConnectTimeout = 5 * time.Second
	return c
}

// SecurityFor returns the DTLS configuration of a Secure run of n nodes,
// matched to OverlayFor(n).
func SecurityFor(n int) security.Config {
	c := security.Default()
	if n >= largeRun {
		return c
	}
	c.KeepaliveInterval = time.Second
	c.DeadAfter = 4 * time.Second
	c.HandshakeTimeout = 5 * time.Second
	return c
}

// DHTFor returns the DHT configuration of a run of n nodes: dht.Default
// from 500 nodes up; below, republishing every second and shorter
// request timeouts, to match OverlayFor(n).
func DHTFor(n int) dht.Config {
	c := dht.Default()
	if n >= largeRun {
		return c
	}
	c.RepublishInterval = time.Second
	c.RequestTimeout = 2 * time.Second
	return c
}

// withDefaults fills the zero fields.
func (o RunOptions) withDefaults() RunOptions {
	if o.Latency == nil {
		o.Latency = simnet.NewPlane(o.Seed)
	}
	if o.Overlay.Near == 0 {
		o.Overlay = OverlayFor(o.N)
	}
	if o.Security.HandshakeTimeout == 0 {
		o.Security = SecurityFor(o.N)
	}
	if o.DHT.Replicas == 0 {
		o.DHT = DHTFor(o.N)
	}
	if o.TimeScale > 1 {
		stretch := func(d *time.Duration) { *d = time.Duration(float64(*d) * o.TimeScale) }
		stretch(&o.Overlay.MaintainInterval)
		stretch(&o.Overlay.PingInterval)
		stretch(&o.Overlay.DeadAfter)
		stretch(&o.Overlay.ConnectTimeout)
		stretch(&o.DHT.RepublishInterval)
		stretch(&o.DHT.RequestTimeout)
		stretch(&o.Security.KeepaliveInterval)
		stretch(&o.Security.DeadAfter)
		stretch(&o.Security.HandshakeTimeout)
	}
	if o.JoinEvery == 0 {
		switch {
		case o.Secure:
			o.JoinEvery = 50 * time.Millisecond
		case o.N >= largeRun:
			o.JoinEvery = 15 * time.Millisecond
		default:
			o.JoinEvery = 20 * time.Millisecond
		}
	}
	if o.Pairs == 0 {
		o.Pairs = 2000
	}
	if o.Parallel == 0 {
		o.Parallel = 32
	}
	if o.EchoTimeout == 0 {
		o.EchoTimeout = 5 * time.Second
	}
	if o.ConvergeTimeout == 0 {
		o.ConvergeTimeout = time.Duration(float64(2*time.Minute+time.Duration(o.N)*10*time.Millisecond) * max(1, o.TimeScale))
	}
	if o.ChurnFor == 0 {
		o.ChurnFor = time.Minute
	}
	if o.NATPairs == 0 {
		o.NATPairs = 100
	}
	if o.RevokeTimeout == 0 {
		o.RevokeTimeout = time.Duration(float64(time.Minute) * max(1, o.TimeScale))
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.NodeLog == nil {
		o.NodeLog = zap.NewNop()
	}
	return o
}

// Validate reports every invalid field, naming its flag.
func (o RunOptions) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(o.N >= 2 && o.N <= 100_000, "sim.nodes: %d not in [2,100000]", o.N)
	check(!o.Secure || o.N <= 1000, "sim.secure: %d nodes; DTLS runs take up to 1000 (a few hundred is practical)", o.N)
	check(o.JoinEvery >= 0 && o.JoinEvery <= time.Minute, "sim.join_every: %v not in [0,1m] (0 = automatic)", o.JoinEvery)
	check(o.Pairs >= 0 && o.Pairs <= 10_000_000, "sim.pairs: %d not in [0,10000000] (0 = 2000)", o.Pairs)
	check(o.Parallel >= 0 && o.Parallel <= 4096, "sim.parallel: %d not in [0,4096] (0 = 32)", o.Parallel)
	check(o.EchoTimeout == 0 || o.EchoTimeout >= 10*time.Millisecond, "sim.echo_timeout: %v is below 10ms", o.EchoTimeout)
	check(o.ConvergeTimeout >= 0, "sim.converge_timeout: %v is negative", o.ConvergeTimeout)
	check(o.DHTKeys >= 0 && o.DHTKeys <= 1_000_000, "sim.dht_keys: %d not in [0,1000000]", o.DHTKeys)
	check(o.JoinTrials >= 0 && o.JoinTrials <= 1000, "sim.join_trials: %d not in [0,1000]", o.JoinTrials)
	// The negated test also rejects NaN.
	check(o.Churn >= 0 && o.Churn <= 10, "sim.churn: %v not in [0,10] (fraction of the nodes replaced per minute)", o.Churn)
	check(o.ChurnFor >= 0, "sim.churn_for: %v is negative", o.ChurnFor)
	check(o.NAT.Share >= 0 && o.NAT.Share <= 1, "sim.nat: %v not in [0,1] (fraction of the nodes behind a NAT)", o.NAT.Share)
	check(o.NAT.Symmetric >= 0 && o.NAT.Symmetric <= o.NAT.Share, "sim.symmetric: %v not in [0, sim.nat] (fraction of all nodes behind a symmetric NAT)", o.NAT.Symmetric)
	check(o.NAT.Share == 0 || o.Secure, "sim.nat: NATs are modelled on the in-memory network of DTLS runs: add --secure")
	check(o.NATPairs >= 0 && o.NATPairs <= 100_000, "sim.nat_pairs: %d not in [0,100000] (0 = 100)", o.NATPairs)
	check(o.TimeScale == 0 || (o.TimeScale >= 1 && o.TimeScale <= 100), "sim.time_scale: %v not in [1,100] (0 = 1)", o.TimeScale)
	check(!o.Revoke || o.N >= 3, "sim.revoke: needs at least 3 nodes (a publisher, a revoked node and one more)")
	check(o.RevokeTimeout >= 0, "sim.revoke_timeout: %v is negative", o.RevokeTimeout)
	if o.Overlay.Near != 0 {
		if err := o.Overlay.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.DHT.Replicas != 0 {
		if err := o.DHT.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Secure && o.Security.HandshakeTimeout != 0 {
		if err := o.Security.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run builds a cluster of N nodes that join one after another, waits for
// the ring to be correct, and measures it: routed delivery, path length
// and latency stretch over random pairs, links per node, DHT puts and
// gets, how soon a new node is routable, and delivery and DHT gets under
// churn. The report holds what was measured even when Run fails part way
// (the context ended, a node could not be created).
func Run(ctx context.Context, opts RunOptions) (Report, error) {
	if err := opts.Validate(); err != nil {
		return Report{}, err
	}
	opts = opts.withDefaults()
	rep, err := runOnce(ctx, opts)
	if err != nil || !opts.CompareProximity {
		return rep, err
	}
	other := opts
	other.Overlay.Proximity = !opts.Overlay.Proximity
	other.DHTKeys, other.JoinTrials, other.Churn = 0, 0, 0
	opts.Log.Info("sim: same seed again", zap.Bool("proximity", other.Overlay.Proximity))
	cmp, err := runOnce(ctx, other)
	rep.Compare = &cmp
	return rep, err
}

// runner is the state of one run.
type runner struct {
	// immutable after runOnce starts the cluster
	o     RunOptions
	c     *Cluster
	log   *zap.Logger
	grace time.Duration // how long a node is up before it is measured

	// mu guards the following
	mu    sync.Mutex
	rng   *rand.Rand
	dhts  map[int]*dht.DHT
	added map[int]time.Time // member index -> when it was created
	revs  map[int]*revoker  // with RunOptions.Revoke
}

// runOnce is one simulation: the cluster is built, measured and closed.
func runOnce(ctx context.Context, o RunOptions) (rep Report, err error) {
	began := time.Now()
	rep = Report{
		Nodes: o.N, Secure: o.Secure, Latency: latencyName(o.Latency), Seed: o.Seed,
		Proximity: o.Overlay.Proximity, Near: o.Overlay.Near, JoinEvery: o.JoinEvery,
		MaintainInterval: o.Overlay.MaintainInterval, TimeScale: max(1, o.TimeScale),
	}
	defer func() { rep.Elapsed = time.Since(began) }()
	r := &runner{
		o:     o,
		log:   o.Log,
		grace: max(2*time.Second, 2*o.Overlay.MaintainInterval),
		rng:   rand.New(rand.NewPCG(o.Seed, 0x51a7)),
		dhts:  make(map[int]*dht.DHT),
		added: make(map[int]time.Time),
		revs:  make(map[int]*revoker),
	}
	c, err := New(Options{
		N: o.N, Secure: o.Secure, Latency: o.Latency, Overlay: o.Overlay, Security: o.Security,
		JoinEvery: o.JoinEvery, Seed: o.Seed, OnNode: r.attach, Log: o.NodeLog, NAT: o.NAT,
		Certs: o.Revoke && !o.Secure,
	})
	if err != nil {
		return rep, err
	}
	r.c = c
	defer r.close()

	if err := r.join(ctx, &rep.Ring); err != nil {
		return rep, err
	}
	r.converge(ctx, &rep.Ring)
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	// Let the ring settle before the paths are measured: long links are
	// drawn once a node is in the ring, and links made while it formed
	// that neither side keeps any more are closed after a grace period
	// (two pings and a maintenance round). A message in flight on a link
	// its peer closes is lost, which is churn, not the steady state.
	settle := 2*o.Overlay.PingInterval + 3*o.Overlay.MaintainInterval
	if err := sleep(ctx, settle); err != nil {
		return rep, err
	}
	o.Log.Info("sim: routing", zap.Int("pairs", min(o.Pairs, o.N*(o.N-1))))
	results, err := r.echoPairs(ctx)
	rep.Routing = summarize(results)
	if err != nil {
		return rep, err
	}
	snap := r.snapshot()
	rep.Links = snap.linkReport()
	rep.Counters = snap.counters
	o.Log.Info("sim: routed", zap.Float64("delivery_percent", rep.Routing.DeliveryPercent),
		zap.Float64("path_links_mean", rep.Routing.PathMean), zap.Float64("stretch", rep.Routing.Stretch))

	if o.NAT.Share > 0 {
		o.Log.Info("sim: NAT traversal", zap.Int("pairs", o.NATPairs))
		rep.NAT, err = r.measureNAT(ctx)
		if err != nil {
			return rep, err
		}
	}

	var keys []putKey
	if o.DHTKeys > 0 {
		o.Log.Info("sim: dht", zap.Int("keys", o.DHTKeys))
		rep.DHT, keys, err = r.measureDHT(ctx)
		if err != nil {
			return rep, err
		}
	}
	if o.JoinTrials > 0 {
		o.Log.Info("sim: join latency", zap.Int("trials", o.JoinTrials))
		rep.Join, err = r.joinLatency(ctx)
		if err != nil {
			return rep, err
		}
	}
	if o.Churn > 0 && o.ChurnFor > 0 {
		o.Log.Info("sim: churn", zap.Float64("per_minute", o.Churn), zap.Duration("for", o.ChurnFor))
		rep.Churn, err = r.churn(ctx, keys)
		if err != nil {
			return rep, err
		}
	}
	if o.Revoke {
		o.Log.Info("sim: revocation")
		rep.Revoke, err = r.measureRevoke(ctx)
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// attach runs for every new member (Options.OnNode): it notes when the
// member was created and gives it a DHT when the run measures one.
func (r *runner) attach(m *Member) error {
	var d *dht.DHT
	if r.o.DHTKeys > 0 || r.o.Revoke {
		var err error
		d, err = dht.New(m.Node, r.o.DHT, nil, r.o.NodeLog)
		if err != nil {
			return err
		}
	}
	var rv *revoker
	if r.o.Revoke {
		var err error
		if rv, err = r.attachRevoker(m, d); err != nil {
			if d != nil {
				d.Close()
			}
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.added[m.Index] = time.Now()
	if d != nil {
		r.dhts[m.Index] = d
	}
	if rv != nil {
		r.revs[m.Index] = rv
	}
	return nil
}

// close stops the cluster, then the DHTs (which do not stop with their
// nodes).
func (r *runner) close() {
	r.closeRevokers()
	r.c.Close()
	r.mu.Lock()
	ds := make([]*dht.DHT, 0, len(r.dhts))
	for _, d := range r.dhts {
		ds = append(ds, d)
	}
	clear(r.dhts)
	r.mu.Unlock()
	for _, d := range ds {
		d.Close()
	}
}

// join starts the N nodes, JoinEvery apart.
func (r *runner) join(ctx context.Context, ring *RingReport) error {
	o := r.o
	o.Log.Info("sim: joining", zap.Int("nodes", o.N), zap.Duration("every", o.JoinEvery),
		zap.Bool("secure", o.Secure), zap.Bool("proximity", o.Overlay.Proximity))
	start := time.Now()
	next := start
	step := max(100, o.N/10)
	for i := range o.N {
		if _, err := r.c.Add(); err != nil {
			return fmt.Errorf("sim: node %d: %w", i, err)
		}
		if (i+1)%step == 0 && i+1 < o.N {
			o.Log.Info("sim: joined", zap.Int("nodes", i+1), zap.Duration("elapsed", time.Since(start).Round(time.Millisecond)))
		}
		// Keep the pace even when creating a node takes a while.
		next = next.Add(o.JoinEvery)
		if err := sleep(ctx, time.Until(next)); err != nil {
			return err
		}
	}
	ring.JoinTime = time.Since(start)
	return nil
}

// converge waits until every node's near links are right, or
// ConvergeTimeout, and records how long that took and how right it was.
func (r *runner) converge(ctx context.Context, ring *RingReport) {
	took, snap, ok := r.waitRing(ctx, r.o.ConvergeTimeout)
	ring.Converged = ok
	ring.ConvergeTime = took
	ring.WrongNodes = snap.wrong
	ring.CorrectPercent = percent(snap.nodes-snap.wrong, snap.nodes)
	r.o.Log.Info("sim: ring", zap.Bool("converged", ok), zap.Duration("after_last_join", took.Round(time.Millisecond)),
		zap.Float64("correct_percent", ring.CorrectPercent))
}

// pollEvery is how often the ring is checked: reading every node's status
// is cheap for tens of nodes and costs real CPU for thousands.
func (r *runner) pollEvery() time.Duration {
	switch n := r.o.N; {
	case n < largeRun:
		return 100 * time.Millisecond
	case n < 5000:
		return time.Second
	default:
		return 2 * time.Second
	}
}

// waitRing polls the ring until it is correct or timeout passes.
func (r *runner) waitRing(ctx context.Context, timeout time.Duration) (time.Duration, ringSnapshot, bool) {
	start := time.Now()
	logged := start
	for {
		snap := r.snapshot()
		if snap.wrong == 0 {
			return time.Since(start), snap, true
		}
		if time.Since(logged) >= 10*time.Second {
			logged = time.Now()
			r.log.Info("sim: ring not correct yet", zap.Int("wrong_nodes", snap.wrong), zap.Int("nodes", snap.nodes),
				zap.Duration("waited", time.Since(start).Round(time.Second)))
		}
		if time.Since(start) >= timeout || sleep(ctx, r.pollEvery()) != nil {
			return time.Since(start), snap, false
		}
	}
}

// alive reports whether m is still a live member.
func (r *runner) alive(m *Member) bool {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return m.alive
}

// settled returns the live members that have been up for the grace
// period: older than the time a new node is given to become routable.
func (r *runner) settled() []*Member {
	ms := r.c.Members()
	cut := time.Now().Add(-r.grace)
	r.mu.Lock()
	defer r.mu.Unlock()
	out := ms[:0]
	for _, m := range ms {
		if r.added[m.Index].Before(cut) {
			out = append(out, m)
		}
	}
	return out
}

// pick returns two distinct random members of ms, which must have two.
func (r *runner) pick(ms []*Member) (a, b *Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.rng.IntN(len(ms))
	j := r.rng.IntN(len(ms) - 1)
	if j >= i {
		j++
	}
	return ms[i], ms[j]
}

// pickOne returns a random member of ms, which must not be empty.
func (r *runner) pickOne(ms []*Member) *Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ms[r.rng.IntN(len(ms))]
}

func (r *runner) dhtOf(m *Member) *dht.DHT {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dhts[m.Index]
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
