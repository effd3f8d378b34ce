package dht

import (
	"time"

	"github.com/ringvpn/ringvpn/overlay"
)

// republishLoop re-replicates every republish_interval: values survive
// churn because whoever holds a value keeps pushing it to the nodes that
// should hold it.
func (d *DHT) republishLoop() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.RepublishInterval)
	defer t.Stop()
	for {
		select {
		case <-d.closed:
			return
		case <-t.C:
			d.republish(time.Now())
		}
	}
}

// republish runs one round. For each live item, this node computes the
// replica set from its own view: the r nodes closest to the key among
// itself and its linked peers (its near links make that view exact around
// its own address). It pushes the item to the other members of the set
// (pushes are idempotent: the newest version wins). A node outside the
// set pushes too, and drops its copy after handoffRounds rounds.
func (d *DHT) republish(now time.Time) {
	items, expired := d.store.snapshot(now.UnixNano())
	d.stats.expired.Add(uint64(expired))
	if len(items) == 0 {
		return
	}
	peers := d.node.Peers()
	r := d.cfg.Replicas
	batches := make(map[overlay.Address]*batcher)
	places := make([]placement, 0, len(items))
	set := make([]overlay.Address, 0, r)
	for _, e := range items {
		set = replicaSet(set[:0], d.self, peers, e.Key, r)
		in := false
		for _, a := range set {
			if a == d.self {
				in = true
				continue
			}
			b := batches[a]
			if b == nil {
				b = d.pusher(a)
				batches[a] = b
			}
			b.add(e)
		}
		places = append(places, placement{entry: e, in: in})
	}
	for _, b := range batches {
		b.flush()
	}
	d.stats.handedOff.Add(uint64(d.store.settle(places, handoffRounds)))
}

// replicaSet appends to dst the r addresses closest to key among self and
// peers, closest first.
func replicaSet(dst []overlay.Address, self overlay.Address, peers []overlay.Address, key overlay.Address, r int) []overlay.Address {
	start := len(dst)
	consider := func(a overlay.Address) {
		da := overlay.Distance(a, key)
		set := dst[start:]
		i := len(set)
		for i > 0 && closer(da, a, set[i-1], key) {
			i--
		}
		if i >= r {
			return
		}
		if len(set) < r {
			dst = append(dst, overlay.Address{})
			set = dst[start:]
		}
		copy(set[i+1:], set[i:len(set)-1])
		set[i] = a
	}
	consider(self)
	for _, p := range peers {
		if p != self {
			consider(p)
		}
	}
	return dst
}

// closer reports whether a (at distance da from key) sorts before b:
// nearer to key, ties broken by address so every node agrees.
func closer(da overlay.Address, a, b, key overlay.Address) bool {
	if c := da.Compare(overlay.Distance(b, key)); c != 0 {
		return c < 0
	}
	return a.Compare(b) < 0
}
