package dht

import (
	"sync"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
)

// store holds this node's items, as owner or replica. Items are immutable;
// a write swaps the item. Expired items are never returned and are swept
// by the republisher.
type store struct {
	// immutable after newStore
	max int

	// mu guards the following
	mu        sync.Mutex
	m         map[overlay.Address]*slot
	lastSweep int64
}

type slot struct {
	it  *item
	out int // consecutive republish rounds this node was outside the replica set
}

// outcome is what apply did.
type outcome int

const (
	unchanged outcome = iota // the same write, or an older one: nothing to do
	stored                   // the item is now the stored one
	exists                   // create: a live item of another writer is there
	full                     // the store holds max items
)

func newStore(max int) *store {
	return &store{max: max, m: make(map[overlay.Address]*slot)}
}

// get returns the live item under key, or nil.
func (s *store) get(key overlay.Address, now int64) *item {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.m[key]; sl != nil && sl.it.Expires > now {
		return sl.it
	}
	return nil
}

// needs reports whether an item of version v would change the store: the
// store has no live item under key, or an older one. A push of something
// the store has is answered without verifying it again.
func (s *store) needs(key overlay.Address, v version, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.m[key]
	return sl == nil || sl.it.Expires <= now || sl.it.Version.Compare(v) < 0
}

// apply stores it under key if it is newer than the live item there (the
// newest write wins, so replicas converge whatever order pushes come in).
// With create, a live item is replaced only by a record of the same
// signer (a renewal); otherwise the result is exists and the live item is
// returned.
func (s *store) apply(key overlay.Address, it *item, create bool, now int64) (outcome, *item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.m[key]
	if sl != nil && sl.it.Expires > now {
		c := it.Version.Compare(sl.it.Version)
		if c == 0 {
			return unchanged, sl.it // a retry of the write that is stored
		}
		if create && !sameSigner(it, sl.it) {
			return exists, sl.it
		}
		if c < 0 {
			return unchanged, sl.it
		}
		s.m[key] = &slot{it: it}
		return stored, it
	}
	if sl == nil && len(s.m) >= s.max {
		if now-s.lastSweep > int64(time.Second) {
			s.sweepLocked(now)
		}
		if len(s.m) >= s.max {
			return full, nil
		}
	}
	s.m[key] = &slot{it: it}
	return stored, it
}

func sameSigner(a, b *item) bool {
	return a.Kind == kindRecord && b.Kind == kindRecord && a.signer == b.signer
}

// sweepLocked drops expired items and returns how many; s.mu is held.
func (s *store) sweepLocked(now int64) int {
	s.lastSweep = now
	n := 0
	for k, sl := range s.m {
		if sl.it.Expires <= now {
			delete(s.m, k)
			n++
		}
	}
	return n
}

// snapshot drops expired items and returns the live ones and how many
// expired.
func (s *store) snapshot(now int64) ([]entry, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	expired := s.sweepLocked(now)
	out := make([]entry, 0, len(s.m))
	for k, sl := range s.m {
		out = append(out, entry{Key: k, Item: sl.it})
	}
	return out, expired
}

// placement is where a republish round found this node for one item.
type placement struct {
	entry
	in bool // this node is in the item's replica set
}

// settle records a republish round: the out count of items outside their
// replica set grows, and those out for more than grace rounds are
// dropped (they have been pushed to the replica set grace times). An item
// replaced since the snapshot is left alone. It returns how many items
// were dropped.
func (s *store) settle(ps []placement, grace int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped := 0
	for _, p := range ps {
		sl := s.m[p.Key]
		if sl == nil || sl.it != p.Item {
			continue
		}
		if p.in {
			sl.out = 0
			continue
		}
		sl.out++
		if sl.out > grace {
			delete(s.m, p.Key)
			dropped++
		}
	}
	return dropped
}

func (s *store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
