package overlay

import (
	"context"
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// The maintainers run on one goroutine, every MaintainInterval and
// whenever the table changes. Each keeps its own kind of link: leaf
// (bootstrap), near (the ring itself) and far (long links); the trimmer
// closes links nobody has a reason to keep.
func (n *Node) maintainLoop() {
	t := time.NewTicker(n.cfg.MaintainInterval)
	defer t.Stop()
	n.maintain()
	last := time.Now()
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		case <-n.wake:
			// Changes come in bursts (a join links several nodes at
			// once): react fast, but not once per change.
			if wait := n.cfg.MaintainInterval/8 - time.Since(last); wait > 0 {
				select {
				case <-time.After(wait):
				case <-n.closed:
					return
				}
			}
		}
		last = time.Now()
		n.maintain()
	}
}

func (n *Node) maintain() {
	n.checkLinks()
	n.retryDirect()
	n.maintainLeaf()
	n.maintainNear()
	n.maintainFar()
	n.trim()
	n.mu.Lock()
	n.tick++
	n.mu.Unlock()
}

// checkLinks removes links that ended or went silent, and pings the rest.
func (n *Node) checkLinks() {
	now := n.now()
	var dead, ping []*peer
	n.mu.Lock()
	for _, p := range n.peers {
		select {
		case <-p.link.Done():
			dead = append(dead, p)
			continue
		default:
		}
		if now-time.Duration(p.lastHeard.Load()) > n.cfg.DeadAfter {
			dead = append(dead, p)
			continue
		}
		if now-p.lastPing >= n.cfg.PingInterval {
			ping = append(ping, p)
		}
	}
	for a, at := range n.pending {
		if now > at.deadline {
			delete(n.pending, a) // no answer: the node may be gone
			if k := n.known[a]; k != nil {
				k.failures++
				k.failedAt = now
			}
		}
	}
	n.mu.Unlock()
	for _, p := range dead {
		n.removePeer(p, "no traffic within dead_after, or the link closed")
	}
	for _, p := range ping {
		n.sendPing(p)
	}
}

// maintainLeaf dials the bootstrap peers while the node has no links,
// and drops the leaf kind once it is in the ring.
func (n *Node) maintainLeaf() {
	n.mu.Lock()
	inRing := n.inRingLocked()
	if inRing {
		for _, p := range n.peers {
			p.kinds &^= KindLeaf
		}
	}
	isolated := len(n.peers) == 0
	retry := n.tick%5 == 0 // every few intervals while alone
	busy := false
	for _, a := range n.pending {
		busy = busy || a.kinds&KindLeaf != 0
	}
	n.mu.Unlock()
	if !isolated || busy || !retry || len(n.cfg.Bootstrap) == 0 {
		return
	}
	for _, ep := range n.cfg.Bootstrap {
		if ep == n.linker.LocalAddr() {
			continue
		}
		n.spawn(func() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ConnectTimeout)
			defer cancel()
			l, err := n.linker.Dial(ctx, ep)
			if err != nil {
				n.log.Debug("bootstrap failed", zap.Stringer("addr", ep), zap.Error(err))
				return
			}
			n.addLink(l, KindLeaf)
		})
	}
}

// ringSides returns the k nearest known nodes clockwise (successors) and
// counter-clockwise (predecessors) of this node, nearest first, among
// linked peers and nodes we heard of that have not failed recently.
// n.mu must be held.
func (n *Node) ringSidesLocked(k int) (succ, pred []Address) {
	now := n.now()
	cands := make([]Address, 0, len(n.peers)+len(n.known))
	for a := range n.peers {
		cands = append(cands, a)
	}
	for a, kn := range n.known {
		if _, linked := n.peers[a]; linked {
			continue
		}
		if kn.failures > 0 && now-kn.failedAt < n.backoff(kn.failures) {
			continue
		}
		cands = append(cands, a)
	}
	succ = nearestBy(cands, k, func(a Address) Address { return Clockwise(n.addr, a) })
	pred = nearestBy(cands, k, func(a Address) Address { return Clockwise(a, n.addr) })
	return succ, pred
}

// backoff is how long a node that failed this many times in a row is
// left out of the near candidates: short at first (it may just have been
// joining, not yet routable), doubling up to 4 connect timeouts.
func (n *Node) backoff(failures int) time.Duration {
	d := 2 * n.cfg.MaintainInterval << min(failures-1, 8)
	return min(d, 4*n.cfg.ConnectTimeout)
}

// nearestBy returns the k candidates with the smallest dist, smallest
// first: one distance per candidate and an insertion into a k-long list,
// since the candidate sets are large and k is small.
func nearestBy(cands []Address, k int, dist func(Address) Address) []Address {
	type scored struct{ a, d Address }
	best := make([]scored, 0, k+1)
	for _, a := range cands {
		d := dist(a)
		if len(best) == k && d.Compare(best[k-1].d) >= 0 {
			continue
		}
		i := len(best)
		for i > 0 && d.Compare(best[i-1].d) < 0 {
			i--
		}
		best = slices.Insert(best, i, scored{a, d})
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make([]Address, len(best))
	for i, s := range best {
		out[i] = s.a
	}
	return out
}

// maintainNear links the k nearest nodes on each side and keeps telling
// them who we know, so the ring converges (each node learns its true
// neighbours from its neighbours' lists).
func (n *Node) maintainNear() {
	n.mu.Lock()
	now := n.now()
	// Forget hearsay that is no longer repeated.
	for a, kn := range n.known {
		if _, linked := n.peers[a]; !linked && now-kn.seen > 4*n.cfg.MaintainInterval+n.cfg.ConnectTimeout {
			delete(n.known, a)
		}
	}
	succ, pred := n.ringSidesLocked(n.cfg.Near)
	want := make(map[Address]bool, len(succ)+len(pred))
	for _, a := range succ {
		want[a] = true
	}
	for _, a := range pred {
		want[a] = true
	}
	var toLink []Address
	var near []*peer
	for a, p := range n.peers {
		if want[a] {
			p.kinds |= KindNear
		} else {
			p.kinds &^= KindNear
		}
	}
	var tell []*peer // our near peers, and peers that keep us as near
	for a, p := range n.peers {
		if want[a] {
			near = append(near, p)
		}
		if want[a] || p.peerKinds&KindNear != 0 {
			tell = append(tell, p)
		}
	}
	for a := range want {
		if n.peers[a] == nil {
			toLink = append(toLink, a)
		}
	}
	joined := n.inRingLocked()
	// Look up our own place while joining, and now and then afterwards
	// (it mends a ring that formed in pieces); never more than once per
	// interval, since each answer wakes the maintainers.
	lookup := !n.joinBusy && len(n.peers) > 0 && now-n.lastJoin >= n.cfg.MaintainInterval &&
		(!joined || now-n.lastJoin >= 5*n.cfg.MaintainInterval)
	if lookup {
		n.joinBusy = true
		n.lastJoin = now
	}
	infos := make([]NodeInfo, 0, len(near)+1)
	for _, p := range near {
		infos = append(infos, n.peerInfoLocked(p))
	}
	n.mu.Unlock()

	for _, a := range toLink {
		n.connectTo(a, KindNear)
	}
	// Neighbour exchange: our near set (and ourselves) to every peer on
	// either side of a near link, so a node that thinks we are its
	// neighbour learns of the nodes that are truly nearer to it.
	self := n.info()
	list := neighbors{Nodes: append(infos, self)}
	payload := list.append(nil)
	for _, p := range tell {
		n.sendOn(p, &Header{Type: TypeNeighbors, Src: n.addr, Dst: p.addr, TTL: 1}, payload)
	}
	if lookup {
		// Find our place: the node closest to our own address, routed as
		// if we were not on the ring yet, and the nodes around it.
		n.spawn(func() {
			defer func() {
				n.mu.Lock()
				n.joinBusy = false
				n.mu.Unlock()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ConnectTimeout)
			defer cancel()
			r, _, err := n.request(ctx, TypeLookup, n.addr, FlagClosest|FlagExcludeSource, connect{Sender: n.info()})
			if err != nil {
				return
			}
			n.mu.Lock()
			n.learnLocked(r.Sender, r.Via, true)
			for _, ni := range r.Near {
				n.learnLocked(ni, r.Sender.Address, true)
			}
			n.mu.Unlock()
			n.poke()
		})
	}
}

// estimateSizeLocked estimates N from how densely the near neighbours
// surround this node; n.mu must be held.
func (n *Node) estimateSizeLocked() float64 {
	succ, pred := n.ringSidesLocked(n.cfg.Near)
	if len(succ) == 0 {
		return 1
	}
	span := Fraction(Clockwise(n.addr, succ[len(succ)-1]))
	count := len(succ)
	if len(pred) > 0 {
		span += Fraction(Clockwise(pred[len(pred)-1], n.addr))
		count += len(pred)
	}
	if span <= 0 || count <= 1 {
		return float64(count + 1)
	}
	return math.Max(float64(count)/span, float64(count+1))
}

// maintainFar keeps about log2(N)/2 Symphony long links: each one's
// distance is drawn from the harmonic distribution, and with Proximity
// the candidate nearest to us in the network is taken among the nodes
// around the drawn point.
func (n *Node) maintainFar() {
	n.mu.Lock()
	size := n.estimateSizeLocked()
	n.sizeEst = size
	n.sizeBits.Store(math.Float64bits(size))
	var rtts []int64
	for _, p := range n.peers {
		if r := p.rtt.Load(); r > 0 {
			rtts = append(rtts, r)
		}
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		n.typicalRTT.Store(rtts[len(rtts)/2])
	}
	goal := n.cfg.Far
	if goal == 0 {
		goal = max(1, int(math.Round(math.Log2(size)/2)))
	}
	n.farGoal = goal
	have := 0
	for _, p := range n.peers {
		if p.kinds&KindFar != 0 {
			have++
		}
	}
	for _, a := range n.pending {
		if a.kinds&KindFar != 0 {
			have++
		}
	}
	start := have < goal && !n.farBusy && n.inRingLocked() && n.now()-n.lastFar >= n.cfg.MaintainInterval/4
	if start {
		n.farBusy = true
		n.lastFar = n.now()
	}
	fraction := math.Exp(math.Log(size) * (n.rng.Float64() - 1))
	n.mu.Unlock()
	if have > goal {
		n.dropFar(have - goal)
	} else if have == goal && n.cfg.Proximity && n.tick%20 == 19 {
		n.refreshSlowFar()
	}
	if !start {
		return
	}
	// With Proximity, the long link may end anywhere in a window around
	// the drawn distance (a factor of two, log-uniform, so the harmonic
	// distribution is kept): several lookups spread over the window bring
	// many candidates, and the one predicted nearest to us is taken.
	lookups := 1
	if n.cfg.Proximity {
		lookups = max(1, (n.cfg.FarCandidates+5)/6)
	}
	targets := make([]Address, lookups)
	n.mu.Lock()
	for i := range targets {
		f := fraction
		if i > 0 {
			f = math.Min(0.999, fraction*math.Exp2(n.rng.Float64()-0.5))
		}
		targets[i] = Add(n.addr, OffsetOf(f))
	}
	n.mu.Unlock()
	n.spawn(func() {
		defer func() {
			n.mu.Lock()
			n.farBusy = false
			n.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ConnectTimeout)
		defer cancel()
		replies := make(chan connect, len(targets))
		for _, target := range targets {
			go func() {
				r, _, err := n.request(ctx, TypeLookup, target, FlagClosest, connect{Sender: n.info()})
				if err != nil {
					r = connect{}
				}
				replies <- r
			}()
		}
		var cands []NodeInfo
		for range targets {
			r := <-replies
			if r.Sender.Address.IsZero() {
				continue
			}
			n.mu.Lock()
			n.learnLocked(r.Sender, r.Via, true)
			for _, ni := range r.Near {
				n.learnLocked(ni, r.Sender.Address, true)
			}
			n.mu.Unlock()
			cands = append(cands, r.Sender)
			cands = append(cands, r.Near...)
		}
		chosen := n.chooseFar(targets[0], cands)
		if chosen.IsZero() {
			return
		}
		n.connectTo(chosen, KindFar)
		n.poke()
	})
}

// chooseFar picks the long link's end among the candidates found around
// its target: the closest to target, or with Proximity the one predicted
// nearest to us among the FarCandidates closest to target.
func (n *Node) chooseFar(target Address, cands []NodeInfo) Address {
	slices.SortFunc(cands, func(a, b NodeInfo) int {
		return Distance(a.Address, target).Compare(Distance(b.Address, target))
	})
	cands = slices.CompactFunc(cands, func(a, b NodeInfo) bool { return a.Address == b.Address })
	n.mu.Lock()
	defer n.mu.Unlock()
	usable := cands[:0]
	for _, c := range cands {
		if c.Address == n.addr {
			continue
		}
		if p := n.peers[c.Address]; p != nil && p.kinds&(KindFar|KindNear) != 0 {
			continue // already ours for another reason
		}
		usable = append(usable, c)
	}
	if len(usable) == 0 {
		return Address{}
	}
	if !n.cfg.Proximity {
		return usable[0].Address
	}
	usable = usable[:min(len(usable), n.cfg.FarCandidates)]
	best := usable[0]
	for _, c := range usable[1:] {
		if n.coord.Estimate(c.Coord) < n.coord.Estimate(best.Coord) {
			best = c
		}
	}
	return best.Address
}

// refreshSlowFar gives up the slowest long link when it is much slower
// than a typical link, so a better one is drawn: links chosen before the
// network coordinates settled get a second chance.
func (n *Node) refreshSlowFar() {
	typical := n.typicalRTT.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	var slow *peer
	for _, p := range n.peers {
		if p.kinds&KindFar != 0 && (slow == nil || p.rtt.Load() > slow.rtt.Load()) {
			slow = p
		}
	}
	if slow != nil && typical > 0 && slow.rtt.Load() > 3*typical/2 {
		slow.kinds &^= KindFar
	}
}

// dropFar removes the far kind from the surplus long links, the slowest
// first.
func (n *Node) dropFar(surplus int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var far []*peer
	for _, p := range n.peers {
		if p.kinds&KindFar != 0 {
			far = append(far, p)
		}
	}
	slices.SortFunc(far, func(a, b *peer) int { return int(b.rtt.Load() - a.rtt.Load()) })
	for _, p := range far[:min(surplus, len(far))] {
		p.kinds &^= KindFar
	}
}

const reasonTrimmed = "neither side keeps the link"

// trim closes links that neither side keeps any more. A new link gets a
// grace period, so the peer's first ping can say why it wants it. A link
// nobody keeps first retires, and closes only after a drain period (a
// ping and two maintenance rounds), so what is in flight on it arrives.
// (Routing around retiring links was tried: it lengthened routes and lost
// more messages than it saved.)
func (n *Node) trim() {
	grace := 2*n.cfg.PingInterval + n.cfg.MaintainInterval
	drain := n.cfg.PingInterval + 2*n.cfg.MaintainInterval
	now := n.now()
	var idle []*peer
	n.mu.Lock()
	for _, p := range n.peers {
		unwanted := p.kinds == 0 && p.peerKinds == 0 && time.Since(p.since) > grace
		switch {
		case !unwanted:
			p.retiring.Store(false)
		case !p.retiring.Load():
			p.retiring.Store(true)
			p.retireAt = now
		case now-p.retireAt >= drain:
			idle = append(idle, p)
		}
	}
	// Over the cap: our own long links beyond it go, slowest first.
	// Shortcuts don't count: the VPN bounds them itself, and letting them
	// crowd out the long links would make routes long.
	ours := 0
	for _, p := range n.peers {
		if p.kinds&^KindShortcut != 0 {
			ours++
		}
	}
	n.mu.Unlock()
	if ours > n.cfg.MaxLinks {
		n.dropFar(ours - n.cfg.MaxLinks)
	}
	for _, p := range idle {
		n.removePeer(p, reasonTrimmed)
	}
}
