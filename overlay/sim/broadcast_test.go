package sim_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

const typeTestBroadcast overlay.Type = 0xf7

// deliveries counts, per receiving node and per broadcast, how often each
// broadcast arrived.
type deliveries struct {
	mu    sync.Mutex
	count map[overlay.Address]map[uint32]int
	bad   []string
}

// listen installs a handler counting broadcasts on every live member.
func listen(c *sim.Cluster) *deliveries {
	d := &deliveries{count: map[overlay.Address]map[uint32]int{}}
	for _, m := range c.Members() {
		self := m.Node.Address()
		m.Node.Handle(typeTestBroadcast, func(msg *overlay.Message) {
			d.mu.Lock()
			defer d.mu.Unlock()
			if len(msg.Payload) != 4+len(self) || msg.From.IsZero() {
				d.bad = append(d.bad, fmt.Sprintf("%s: payload %d bytes from %s", self, len(msg.Payload), msg.From))
				return
			}
			if src := overlay.Address(msg.Payload[4:]); src != msg.Src {
				d.bad = append(d.bad, fmt.Sprintf("%s: Src %s, sent by %s", self, msg.Src, src))
			}
			if d.count[self] == nil {
				d.count[self] = map[uint32]int{}
			}
			d.count[self][binary.BigEndian.Uint32(msg.Payload)]++
		})
	}
	return d
}

// send broadcasts message id from m; the payload names the sender.
func send(t *testing.T, m *sim.Member, id uint32) {
	t.Helper()
	addr := m.Node.Address()
	payload := append(binary.BigEndian.AppendUint32(nil, id), addr[:]...)
	if err := m.Node.Broadcast(typeTestBroadcast, payload); err != nil {
		t.Fatal(err)
	}
}

// check waits until every live member but a broadcast's sender has each
// of ids, lets stragglers arrive, and then requires exactly one delivery
// of each, and none to its sender.
func (d *deliveries) check(t *testing.T, c *sim.Cluster, sender map[uint32]overlay.Address) {
	t.Helper()
	ms := c.Members()
	missing := func() (n int, first string) {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, m := range ms {
			for id, src := range sender {
				if m.Node.Address() != src && d.count[m.Node.Address()][id] == 0 {
					if n == 0 {
						first = fmt.Sprintf("node%d lacks broadcast %d", m.Index, id)
					}
					n++
				}
			}
		}
		return n, first
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, first := missing()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			var sum overlay.Counters
			for _, m := range ms {
				st := m.Node.Status().Counters
				sum.SendFailed += st.SendFailed
				sum.BroadcastDropped += st.BroadcastDropped
				sum.Malformed += st.Malformed
				sum.UnknownType += st.UnknownType
			}
			t.Fatalf("%d deliveries missing, first: %s; counters %+v", n, first, sum)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate would be on its way
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.bad) > 0 {
		t.Fatalf("%d bad deliveries, first: %s", len(d.bad), d.bad[0])
	}
	for _, m := range ms {
		for id, src := range sender {
			want := 1
			if m.Node.Address() == src {
				want = 0
			}
			if got := d.count[m.Node.Address()][id]; got != want {
				t.Errorf("node%d got broadcast %d %d times, want %d", m.Index, id, got, want)
			}
		}
	}
}

// TestBroadcast_ReachesEveryMemberOnce: on a correct ring of 64 nodes,
// broadcasts from three members reach every other member exactly once;
// after a node crashes and the ring heals around it, so do new ones.
func TestBroadcast_ReachesEveryMemberOnce(t *testing.T) {
	c := overlaytest.NewCluster(t, sim.Options{N: 64, Latency: simnet.Constant(4 * time.Millisecond), Seed: 7})
	d := listen(c)
	ms := c.Members()
	sender := map[uint32]overlay.Address{}
	id := uint32(0)
	for _, m := range []*sim.Member{ms[0], ms[21], ms[42]} {
		for range 5 {
			id++
			sender[id] = m.Node.Address()
			send(t, m, id)
		}
	}
	d.check(t, c, sender)
	var dropped, malformed uint64
	for _, m := range ms {
		st := m.Node.Status().Counters
		dropped += st.BroadcastDropped
		malformed += st.Malformed
	}
	if dropped != 0 || malformed != 0 {
		t.Errorf("%d broadcasts dropped, %d malformed", dropped, malformed)
	}

	// Crash a node: once its neighbours have healed the ring, broadcasts
	// again reach every live member once.
	dead := ms[10].Node.Address()
	c.Remove(10, true)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitRing(ctx, overlaytest.FastConfig().Near); err != nil {
		t.Fatal(err)
	}
	// Until every link to the dead node is gone (its far links too), a
	// broadcast could be handed to it and miss the range it was given.
	for linked := true; linked; {
		linked = false
		for _, m := range c.Members() {
			if slices.Contains(m.Node.Peers(), dead) {
				linked = true
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("links to the crashed node remain")
		case <-time.After(50 * time.Millisecond):
		}
	}
	d.mu.Lock()
	d.count = map[overlay.Address]map[uint32]int{}
	d.mu.Unlock()
	sender = map[uint32]overlay.Address{}
	for _, m := range []*sim.Member{ms[9], ms[11]} {
		id++
		sender[id] = m.Node.Address()
		send(t, m, id)
	}
	d.check(t, c, sender)
}
