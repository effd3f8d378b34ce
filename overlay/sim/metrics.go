package sim

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
)

// ringSnapshot is one pass over every live node's status.
type ringSnapshot struct {
	nodes, wrong int
	links        []int // per node: every link, whoever keeps it
	near, far    int   // summed over the nodes: links they keep as near, as far
	farGoal      int   // summed
	counters     overlay.Counters
}

// snapshot reads every live node's status once and checks its near links
// against the true ring, as Cluster.RingErrors does, counting nodes
// rather than listing the problems.
func (r *runner) snapshot() ringSnapshot {
	ms := r.c.Members()
	sts := make([]overlay.Status, len(ms))
	addrs := make([]overlay.Address, len(ms))
	for i, m := range ms {
		sts[i] = m.Node.Status()
		addrs[i] = sts[i].Address
	}
	slices.SortFunc(addrs, func(a, b overlay.Address) int { return a.Compare(b) })
	pos := make(map[overlay.Address]int, len(addrs))
	for i, a := range addrs {
		pos[a] = i
	}
	n := len(addrs)
	k := min(r.o.Overlay.Near, n/2)
	s := ringSnapshot{nodes: n, links: make([]int, 0, n)}
	near := make(map[overlay.Address]bool)
	for _, st := range sts {
		clear(near)
		for _, p := range st.Peers {
			if p.Kinds&overlay.KindNear != 0 {
				near[p.Address] = true
				s.near++
			}
			if p.Kinds&overlay.KindFar != 0 {
				s.far++
			}
		}
		s.links = append(s.links, len(st.Peers))
		s.farGoal += st.FarGoal
		s.counters.Delivered += st.Counters.Delivered
		s.counters.Forwarded += st.Counters.Forwarded
		s.counters.Malformed += st.Counters.Malformed
		s.counters.TTLExpired += st.Counters.TTLExpired
		s.counters.NoRoute += st.Counters.NoRoute
		s.counters.UnknownType += st.Counters.UnknownType
		i := pos[st.Address]
		for d := 1; d <= k; d++ {
			if !near[addrs[(i+d)%n]] || !near[addrs[(i-d+n)%n]] {
				s.wrong++
				break
			}
		}
	}
	return s
}

// linkReport summarises the links per node.
func (s ringSnapshot) linkReport() LinkReport {
	var lr LinkReport
	if s.nodes == 0 {
		return lr
	}
	sum := 0
	for _, l := range s.links {
		sum += l
		lr.Max = max(lr.Max, l)
	}
	n := float64(s.nodes)
	lr.Mean = float64(sum) / n
	lr.NearMean = float64(s.near) / n
	lr.FarMean = float64(s.far) / n
	lr.FarGoalMean = float64(s.farGoal) / n
	return lr
}

// echoResult is one routed echo between two members.
type echoResult struct {
	ok         bool
	hops       int // forwards on the way there
	replyHops  int
	rtt        time.Duration // measured
	direct     time.Duration // modelled RTT between the two hosts
	retried    bool          // it failed once and a second echo got through
	abandoned  bool          // an end left during the echo: not counted
	newEnd     bool          // an end joined during the churn
	failReason string
}

// echo sends one echo from a to b. With retry, a failed echo is repeated
// once (what an application that retransmits sees).
func (r *runner) echo(ctx context.Context, a, b *Member, retry bool) (echoResult, error) {
	res := echoResult{direct: r.c.RTT(a, b)}
	for try := range 2 {
		ectx, cancel := context.WithTimeout(ctx, r.o.EchoTimeout)
		er, err := a.Node.Echo(ectx, b.Node.Address())
		cancel()
		if err := ctx.Err(); err != nil {
			return res, err // the run is ending: this echo says nothing
		}
		if err == nil {
			res.hops, res.replyHops, res.rtt = er.Hops, er.ReplyHops, er.RTT
			if try == 0 {
				res.ok = true
			} else {
				res.retried = true
			}
			return res, nil
		}
		if res.failReason == "" {
			res.failReason = fmt.Sprintf("%s -> %s at %s: %v", a.member.Name, b.member.Name, time.Now().Format("15:04:05.000"), err)
		}
		if !retry {
			break
		}
	}
	return res, nil
}

// echoPairs sends an echo between Pairs random ordered pairs of members
// (every pair when there are fewer), Parallel at a time.
func (r *runner) echoPairs(ctx context.Context) ([]echoResult, error) {
	ms := r.c.Members()
	type pair struct{ a, b *Member }
	var pairs []pair
	if len(ms)*(len(ms)-1) <= r.o.Pairs {
		for _, a := range ms {
			for _, b := range ms {
				if a != b {
					pairs = append(pairs, pair{a, b})
				}
			}
		}
	} else {
		for range r.o.Pairs {
			a, b := r.pick(ms)
			pairs = append(pairs, pair{a, b})
		}
	}
	results := make([]echoResult, len(pairs))
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	for range min(r.o.Parallel, len(pairs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(pairs) {
					return
				}
				res, err := r.echo(ctx, pairs[i].a, pairs[i].b, false)
				if err != nil {
					errOnce.Do(func() { runErr = err })
					return
				}
				results[i] = res
			}
		}()
	}
	wg.Wait()
	if runErr != nil {
		return nil, runErr
	}
	return results, nil
}

// summarize turns echo results into routing figures; abandoned echoes
// are left out.
func summarize(results []echoResult) RoutingReport {
	var rr RoutingReport
	var paths []int
	var stretches []float64
	var rttSum, directSum time.Duration
	replySum := 0
	for _, res := range results {
		if res.abandoned {
			continue
		}
		rr.Pairs++
		if res.retried {
			rr.Retried++
		}
		if !res.ok {
			if rr.FirstFailure == "" {
				rr.FirstFailure = res.failReason
			}
			continue
		}
		rr.Delivered++
		paths = append(paths, res.hops+1)
		replySum += res.replyHops + 1
		rttSum += res.rtt
		directSum += res.direct
		if res.direct > 0 {
			stretches = append(stretches, float64(res.rtt)/float64(res.direct))
		}
	}
	rr.DeliveryPercent = percent(rr.Delivered, rr.Pairs)
	if rr.Delivered == 0 {
		return rr
	}
	slices.Sort(paths)
	sum := 0
	for _, p := range paths {
		sum += p
	}
	rr.PathMean = float64(sum) / float64(len(paths))
	rr.PathP99 = paths[quantileIndex(len(paths), 0.99)]
	rr.PathMax = paths[len(paths)-1]
	rr.ReplyPathMean = float64(replySum) / float64(rr.Delivered)
	rr.EchoRTTMean = rttSum / time.Duration(rr.Delivered)
	rr.DirectRTTMean = directSum / time.Duration(rr.Delivered)
	if directSum > 0 {
		rr.Stretch = float64(rttSum) / float64(directSum)
	}
	if len(stretches) > 0 {
		slices.Sort(stretches)
		rr.StretchMedian = stretches[quantileIndex(len(stretches), 0.5)]
		rr.StretchP90 = stretches[quantileIndex(len(stretches), 0.9)]
	}
	return rr
}

// quantileIndex is the index of the q-quantile in a sorted slice of n
// values (nearest rank).
func quantileIndex(n int, q float64) int {
	return min(n-1, max(0, int(math.Ceil(q*float64(n)))-1))
}

func percent(part, whole int) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// putKey is a value the DHT accepted.
type putKey struct {
	key    overlay.Address
	value  []byte
	writer int // the member that put it
}

// dhtBudget bounds one DHT call: every attempt of it and a margin.
func (r *runner) dhtBudget() time.Duration {
	return time.Duration(r.o.DHT.Retries+1)*r.o.DHT.RequestTimeout + time.Second
}

// measureDHT puts DHTKeys values from random members and gets each from
// another random member.
func (r *runner) measureDHT(ctx context.Context) (*DHTReport, []putKey, error) {
	const parallel = 16
	rep := &DHTReport{Keys: r.o.DHTKeys}
	ms := r.settled()
	if len(ms) < 2 {
		ms = r.c.Members()
	}
	keys := make([]putKey, r.o.DHTKeys)
	for i := range keys {
		w := r.pickOne(ms)
		keys[i] = putKey{
			key:    dht.KeyOf("sim", fmt.Sprintf("key-%d", i)),
			value:  fmt.Appendf(nil, "value %d of run %d", i, r.o.Seed),
			writer: w.Index,
		}
	}
	var mu sync.Mutex // guards rep
	failed := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if rep.FirstFailure == "" {
			rep.FirstFailure = what + ": " + err.Error()
		}
	}
	ok := make([]bool, len(keys))
	err := forEach(ctx, len(keys), parallel, func(i int) {
		w := r.c.member(keys[i].writer)
		cctx, cancel := context.WithTimeout(ctx, r.dhtBudget())
		defer cancel()
		if err := r.dhtOf(w).Put(cctx, keys[i].key, keys[i].value, time.Hour); err != nil {
			failed("put", err)
			return
		}
		ok[i] = true
	})
	if err != nil {
		return rep, nil, err
	}
	var stored []putKey
	for i, k := range keys {
		if ok[i] {
			stored = append(stored, k)
		}
	}
	rep.Puts = len(stored)
	err = forEach(ctx, len(stored), parallel, func(i int) {
		k := stored[i]
		var reader *Member
		for reader == nil || reader.Index == k.writer {
			reader = r.pickOne(ms)
		}
		cctx, cancel := context.WithTimeout(ctx, r.dhtBudget())
		defer cancel()
		v, err := r.dhtOf(reader).Get(cctx, k.key)
		if err == nil && !bytes.Equal(v, k.value) {
			err = fmt.Errorf("%q, want %q", v, k.value)
		}
		if err != nil {
			failed("get", err)
		}
		mu.Lock()
		defer mu.Unlock()
		rep.Gets++
		if err == nil {
			rep.GetsOK++
		}
	})
	rep.GetPercent = percent(rep.GetsOK, rep.Gets)
	r.o.Log.Info("sim: dht measured", zap.Int("puts", rep.Puts), zap.Float64("get_percent", rep.GetPercent))
	return rep, stored, err
}

// forEach runs f(0..n-1), parallel at a time; it stops starting new
// calls when ctx ends and then returns ctx's error.
func forEach(ctx context.Context, n, parallel int, f func(i int)) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// member returns member i, alive or not.
func (c *Cluster) member(i int) *Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// newNear reports whether one of the live nodes that should hold key
// (the Replicas closest to it) was created after since.
func (r *runner) newNear(key overlay.Address, since time.Time) bool {
	ms := r.c.Members()
	addrs := make([]overlay.Address, len(ms))
	byAddr := make(map[overlay.Address]*Member, len(ms))
	for i, m := range ms {
		addrs[i] = m.Node.Address()
		byAddr[addrs[i]] = m
	}
	slices.SortFunc(addrs, func(a, b overlay.Address) int {
		return overlay.Distance(a, key).Compare(overlay.Distance(b, key))
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range addrs[:min(len(addrs), r.o.DHT.Replicas)] {
		if r.added[byAddr[a].Index].After(since) {
			return true
		}
	}
	return false
}

// joinProbeEvery is how often a new echo is sent towards a joining node.
const joinProbeEvery = 50 * time.Millisecond

// joinLatency adds JoinTrials nodes one at a time and times each from its
// creation until an echo from a random settled node reaches it and comes
// back.
func (r *runner) joinLatency(ctx context.Context) (*JoinReport, error) {
	rep := &JoinReport{Trials: r.o.JoinTrials}
	limit := max(30*time.Second, 10*r.o.Overlay.MaintainInterval)
	for range r.o.JoinTrials {
		senders := r.settled()
		start := time.Now()
		m, err := r.c.Add()
		if err != nil {
			return rep, err
		}
		took, ok := r.probe(ctx, senders, m, start, limit)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if ok {
			rep.Routable++
			rep.Each = append(rep.Each, took)
		}
		// Let the ring take the node in fully before the next one.
		again, _, ok := r.waitRing(ctx, limit)
		if ok {
			rep.RingAgain = append(rep.RingAgain, time.Since(start))
		} else {
			rep.RingAgain = append(rep.RingAgain, -again)
		}
	}
	if len(rep.Each) > 0 {
		sorted := slices.Clone(rep.Each)
		slices.Sort(sorted)
		rep.Median = sorted[quantileIndex(len(sorted), 0.5)]
		rep.Max = sorted[len(sorted)-1]
	}
	r.o.Log.Info("sim: join measured", zap.Int("routable", rep.Routable), zap.Duration("median", rep.Median), zap.Duration("max", rep.Max))
	return rep, nil
}

// probe sends an echo from a random sender to m every joinProbeEvery
// until one is answered, and returns the time from start to that answer.
func (r *runner) probe(ctx context.Context, senders []*Member, m *Member, start time.Time, limit time.Duration) (time.Duration, bool) {
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	done := make(chan time.Duration, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	tick := time.NewTicker(joinProbeEvery)
	defer tick.Stop()
	for {
		from := r.pickOne(senders)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ectx, cancel := context.WithTimeout(pctx, max(2*time.Second, r.o.EchoTimeout/2))
			defer cancel()
			if _, err := from.Node.Echo(ectx, m.Node.Address()); err == nil {
				select {
				case done <- time.Since(start):
				default:
				}
			}
		}()
		select {
		case took := <-done:
			return took, true
		case <-pctx.Done():
			return 0, false
		case <-tick.C:
		}
	}
}

// churn replaces Churn×N nodes per minute for ChurnFor, crashing a random
// live node and starting a new one each time, while echoes between
// settled nodes and DHT gets of the stored keys run without pause. Then
// it waits for the ring to heal.
func (r *runner) churn(ctx context.Context, keys []putKey) (*ChurnReport, error) {
	o := r.o
	rep := &ChurnReport{PerMinute: o.Churn, Duration: o.ChurnFor}
	began := time.Now()
	isNew := func(m *Member) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.added[m.Index].After(began)
	}
	every := time.Duration(float64(time.Minute) / (o.Churn * float64(o.N)))
	cctx, stop := context.WithTimeout(ctx, o.ChurnFor)
	defer stop()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards results, the DHT counters and failErr
		results  []echoResult
		failErr  error
		replaced atomic.Int64
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failErr == nil {
			failErr = err
		}
		stop()
	}
	wg.Add(1)
	go func() { // the replacer
		defer wg.Done()
		next := time.Now()
		for {
			next = next.Add(every)
			if sleep(cctx, time.Until(next)) != nil {
				return
			}
			victim := r.pickOne(r.c.Members())
			r.c.Remove(victim.Index, true)
			if d := r.dhtOf(victim); d != nil {
				d.Close()
			}
			if _, err := r.c.Add(); err != nil {
				fail(err)
				return
			}
			replaced.Add(1)
		}
	}()
	for range max(1, o.Parallel/2) { // routed echoes
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cctx.Err() == nil {
				ms := r.settled()
				if len(ms) < 2 {
					return
				}
				a, b := r.pick(ms)
				// The echo may outlast the window: ctx, not cctx.
				res, err := r.echo(ctx, a, b, true)
				if err != nil {
					return
				}
				res.abandoned = !r.alive(a) || !r.alive(b)
				res.newEnd = isNew(a) || isNew(b)
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			}
		}()
	}
	if len(keys) > 0 {
		for range 4 { // DHT gets
			wg.Add(1)
			go func() {
				defer wg.Done()
				for cctx.Err() == nil {
					ms := r.settled()
					if len(ms) < 1 {
						return
					}
					reader := r.pickOne(ms)
					r.mu.Lock()
					k := keys[r.rng.IntN(len(keys))]
					r.mu.Unlock()
					d := r.dhtOf(reader)
					if d == nil {
						continue
					}
					gctx, cancel := context.WithTimeout(ctx, r.dhtBudget())
					v, err := d.Get(gctx, k.key)
					cancel()
					if ctx.Err() != nil {
						return
					}
					if !r.alive(reader) {
						continue // the reader itself was removed
					}
					if err == nil && !bytes.Equal(v, k.value) {
						err = fmt.Errorf("got %q, want %q", v, k.value)
					}
					nearNew := err != nil && r.newNear(k.key, began)
					mu.Lock()
					rep.DHTGets++
					switch {
					case err == nil:
						rep.DHTGetsOK++
					case nearNew:
						rep.DHTFailedNearNew++
					}
					if err != nil && rep.DHTFirstFailure == "" {
						rep.DHTFirstFailure = fmt.Sprintf("%s at %s: %v", reader.member.Name, time.Now().Format("15:04:05.000"), err)
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if failErr != nil {
		return rep, failErr
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	rep.Replaced = int(replaced.Load())
	rep.Routing = summarize(results)
	for _, res := range results {
		switch {
		case res.abandoned:
			rep.Abandoned++
		case !res.ok && res.newEnd:
			rep.FailedNewEnd++
		}
	}
	rep.DeliveredWithRetry = rep.Routing.Delivered + rep.Routing.Retried
	rep.DeliveryWithRetryPercent = percent(rep.DeliveredWithRetry, rep.Routing.Pairs)
	rep.DHTGetPercent = percent(rep.DHTGetsOK, rep.DHTGets)
	o.Log.Info("sim: churn measured", zap.Int("replaced", rep.Replaced),
		zap.Float64("delivery_percent", rep.Routing.DeliveryPercent), zap.Float64("dht_get_percent", rep.DHTGetPercent))
	took, snap, ok := r.waitRing(ctx, o.ConvergeTimeout)
	rep.Healed, rep.HealTime = ok, took
	rep.CorrectPercentAfter = percent(snap.nodes-snap.wrong, snap.nodes)
	if !ok {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}
