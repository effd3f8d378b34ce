package firewall

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/ringvpn/ringvpn/security"
)

// entry is one tracked flow. key, peer and origin change only under its
// shard's write lock, when the entry is (re)filled; the atomics change
// under the read lock too.
type entry struct {
	key    flowKey
	peer   security.Address // the member the flow is with
	origin dir              // the direction of its first packet
	seen   atomic.Int64     // the firewall's clock at its last packet
	gen    atomic.Uint32    // the rules generation that last allowed it
	flags  atomic.Uint32
}

// Entry flags.
const (
	flagAnswered  uint32 = 1 << iota // a packet went against the origin direction
	flagFINOrigin                    // TCP FIN from the side that started
	flagFINReply                     // TCP FIN from the other side
	flagRST                          // TCP RST, either way
	flagFINBoth   = flagFINOrigin | flagFINReply
)

// closed reports a TCP flow that has ended.
func closed(flags uint32) bool { return flags&flagRST != 0 || flags&flagFINBoth == flagFINBoth }

// packetFlags returns the flags a packet in direction d sets on e.
func packetFlags(origin, d dir, proto, tcpFlags uint8) uint32 {
	var f uint32
	if d != origin {
		f = flagAnswered
	}
	if proto == protoTCP {
		if tcpFlags&tcpFIN != 0 {
			if d == origin {
				f |= flagFINOrigin
			} else {
				f |= flagFINReply
			}
		}
		if tcpFlags&tcpRST != 0 {
			f |= flagRST
		}
	}
	return f
}

// touch records a packet on e. It runs under the shard's read lock, and
// writes only what changed, so a busy flow's cache line stays shared.
func (e *entry) touch(now int64, f uint32) {
	if e.seen.Load() != now {
		e.seen.Store(now)
	}
	if f != 0 && e.flags.Load()&f != f {
		e.flags.Or(f)
	}
}

// chunkLen is how many entries a shard allocates at once.
const chunkLen = 64

// shard is one part of the flow table.
type shard struct {
	mu   sync.RWMutex
	m    map[flowKey]*entry
	free []*entry // entries out of the map, for reuse
	_    [64]byte // keep shards' locks on separate cache lines
}

// conntrack is the flow table: shards chosen by a seeded hash of the key,
// each with its own lock and its share of the capacity. Entries are
// allocated in chunks and reused, so memory stays at its high-water mark
// (at most max_entries entries), and a new flow allocates nothing once
// the table has grown.
type conntrack struct {
	shards []shard
	mask   uint64
	seed   uint64
}

// numShards is the shard count for a table of max entries: a power of
// two, up to 64, with at least 1024 entries each (one when max is
// small, so that small tables fill exactly).
func numShards(max int) int {
	n := max / 1024
	if n < 1 {
		return 1
	}
	return min(64, 1<<(bits.Len(uint(n))-1))
}

func newConntrack(max int, seed uint64) *conntrack {
	n := numShards(max)
	ct := &conntrack{shards: make([]shard, n), mask: uint64(n - 1), seed: seed}
	for i := range ct.shards {
		ct.shards[i].m = make(map[flowKey]*entry)
	}
	return ct
}

// shard returns the shard of k.
func (ct *conntrack) shard(k *flowKey) *shard {
	if ct.mask == 0 {
		return &ct.shards[0]
	}
	h := hash16(ct.seed^uint64(k.lport)<<24^uint64(k.rport)<<8^uint64(k.proto), &k.local, &k.remote)
	return &ct.shards[h&ct.mask]
}

// hash16 hashes two 16-byte addresses into seed: a multiply per word,
// then one MurmurHash3 finalizer. The seed is random, so nobody can aim
// at a shard or a slot.
func hash16(seed uint64, a, b *[16]byte) uint64 {
	h := seed ^
		binary.LittleEndian.Uint64(a[0:8])*0x9e3779b97f4a7c15 ^
		binary.LittleEndian.Uint64(a[8:16])*0xc2b2ae3d27d4eb4f ^
		binary.LittleEndian.Uint64(b[0:8])*0x165667b19e3779f9 ^
		binary.LittleEndian.Uint64(b[8:16])*0x27d4eb2f165667c5
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// expired reports whether e has been idle longer than its timeout.
func (rs *ruleset) expired(e *entry, now int64) bool {
	return now-e.seen.Load() > rs.timeout(e.key.proto, e.flags.Load())
}

// evictSample is how many entries a full shard looks at for one to evict.
const evictSample = 8

// How take found an entry.
const (
	takeFree    = iota // free, or newly allocated
	takeExpired        // taken from an expired flow
	takeEvicted        // taken from a live flow
)

// take returns an entry for a new flow in s (locked for writing): a free
// one or a new one if s is under its capacity, else one taken from a flow
// of the shard, removed from the map. nil if the shard is full of live,
// answered flows.
func (s *shard) take(rs *ruleset, now int64) (e *entry, how int) {
	if len(s.m) < rs.perShard {
		if n := len(s.free); n > 0 {
			e = s.free[n-1]
			s.free = s.free[:n-1]
			return e, takeFree
		}
		chunk := new([chunkLen]entry)
		for i := chunkLen - 1; i > 0; i-- {
			s.free = append(s.free, &chunk[i])
		}
		return &chunk[0], takeFree
	}
	// Full. Look at a few entries (map order is random) for the one
	// least worth keeping: expired, then closed, then the longest idle
	// of those never answered. Answered, open flows are kept: a flood of
	// new flows must not cut the ones in use.
	var victim *entry
	rank := 0
	i := 0
	for _, c := range s.m {
		if i++; i > evictSample {
			break
		}
		fl := c.flags.Load()
		r := 0
		switch {
		case rs.expired(c, now):
			r = 3
		case c.key.proto == protoTCP && closed(fl):
			r = 2
		case fl&flagAnswered == 0:
			r = 1
		}
		if r > rank || r == rank && r > 0 && c.seen.Load() < victim.seen.Load() {
			victim, rank = c, r
		}
		if r == 3 {
			break
		}
	}
	if victim == nil {
		return nil, takeFree
	}
	delete(s.m, victim.key)
	if rank == 3 {
		return victim, takeExpired
	}
	return victim, takeEvicted
}

// sweep removes s's expired entries and returns how many it removed.
func (s *shard) sweep(rs *ruleset, now int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.m {
		if rs.expired(e, now) {
			delete(s.m, k)
			s.free = append(s.free, e)
			n++
		}
	}
	return n
}

// len returns the number of flows in the table.
func (ct *conntrack) len() int {
	n := 0
	for i := range ct.shards {
		s := &ct.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
