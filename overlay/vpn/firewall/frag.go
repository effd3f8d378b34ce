package firewall

import (
	"sync"
	"time"

	"github.com/ringvpn/ringvpn/security"
)

// Fragments: a later fragment has no ports, so it follows the first
// fragment of its datagram, remembered here for fragTimeout.
const (
	fragSlots   = 1024 // datagrams remembered at once
	fragTimeout = int64(30 * time.Second)
)

// fragKey names a datagram, directionally.
type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
	v6       bool
}

type fragSlot struct {
	key     fragKey
	peer    security.Address
	expires int64
	gen     uint32
}

// fragTable remembers the datagrams whose first fragment passed, in a
// direct-mapped table: a datagram may push out another, whose later
// fragments are then dropped. Fragments are rare on the VPN (TCP's MSS
// is clamped), so one lock does.
type fragTable struct {
	mu    sync.Mutex
	slots *[fragSlots]fragSlot // allocated at the first fragment
	seed  uint64
}

func (t *fragTable) slot(k *fragKey) *fragSlot {
	h := hash16(t.seed^uint64(k.id)<<8^uint64(k.proto), &k.src, &k.dst)
	return &t.slots[h%fragSlots]
}

// add records that the first fragment of datagram k passed.
func (t *fragTable) add(k fragKey, peer security.Address, gen uint32, now int64) {
	t.mu.Lock()
	if t.slots == nil {
		t.slots = new([fragSlots]fragSlot)
	}
	*t.slot(&k) = fragSlot{key: k, peer: peer, expires: now + fragTimeout, gen: gen}
	t.mu.Unlock()
}

// allowed reports whether the first fragment of datagram k passed, under
// the same rules, with the same peer, less than fragTimeout ago.
func (t *fragTable) allowed(k fragKey, peer security.Address, gen uint32, now int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.slots == nil {
		return false
	}
	s := t.slot(&k)
	return s.expires != 0 && s.key == k && samePeer(s.peer, peer) && s.gen == gen && now <= s.expires
}
