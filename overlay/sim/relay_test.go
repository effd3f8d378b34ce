package sim_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/transport/memnet"
)

// TestRelay_ShortcutThroughRelayThenDirect: two members whose datagrams
// can't reach each other (as between two symmetric NATs) still get a
// link for traffic, through a relay linked to both; it carries data, the
// relay sees only sealed records, and once the path opens the link goes
// direct.
func TestRelay_ShortcutThroughRelayThenDirect(t *testing.T) {
	cfg := overlaytest.FastConfig()
	cfg.ConnectTimeout = 2 * time.Second
	cfg.RelayRetry = time.Second
	c := overlaytest.NewCluster(t, sim.Options{N: 16, Secure: true, Seed: 21, Overlay: cfg, Pipes: true})
	ms := c.Members()
	var a, b *sim.Member
	for _, x := range ms {
		for _, y := range ms {
			if x != y && !linked(x, y) {
				a, b = x, y
			}
		}
	}
	if a == nil {
		t.Fatal("every pair is linked")
	}
	cut := memnet.LinkConfig{Loss: 1}
	if err := c.Network().SetLink(a.Addr.Addr(), b.Addr.Addr(), cut); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	b.Node.HandleData(func(from *security.Member, pkt []byte) { got <- from.Name + ":" + string(pkt) })

	a.Node.Shortcut(b.Node.Address())
	var via overlay.Address
	eventually(t, 20*time.Second, "a relayed link a->b", func() bool {
		v, ok := a.Node.Relayed(b.Node.Address())
		via = v
		return ok
	})
	if _, ok := b.Node.Relayed(a.Node.Address()); !ok {
		t.Error("b's side of the link is not relayed")
	}
	var relay *sim.Member
	for _, m := range ms {
		if m.Node.Address() == via {
			relay = m
		}
	}
	if relay == nil || !linked(relay, a) {
		t.Fatalf("relay %s is not a's neighbour", via)
	}
	t.Logf("relayed by member %d (linked to b: %v)", relay.Index, linked(relay, b))
	for i := range 5 {
		pkt := append(make([]byte, overlay.DataHeaderLen), fmt.Sprintf("hello %d", i)...)
		if err := a.Node.SendData(b.Node.Address(), pkt); err != nil {
			t.Fatalf("SendData over the relayed link: %v", err)
		}
	}
	for range 5 {
		select {
		case s := <-got:
			if s[:len(a.Identity.Member.Name)] != a.Identity.Member.Name {
				t.Fatalf("data from the wrong member: %q", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("data over the relayed link did not arrive")
		}
	}
	if a.Node.Status().Counters.Forwarded+relay.Node.Status().Counters.Forwarded == 0 {
		t.Error("nothing was forwarded: the link is not going through the relay")
	}

	// The path opens: within a few retries the link goes direct.
	if err := c.Network().SetLink(a.Addr.Addr(), b.Addr.Addr(), memnet.LinkConfig{Latency: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a direct link a->b", func() bool {
		_, relayed := a.Node.Relayed(b.Node.Address())
		k, ok := a.Node.Linked(b.Node.Address())
		return ok && !relayed && k&overlay.KindShortcut != 0
	})
	// Only this pair needs a relay; on a loaded machine a few other dials
	// may time out and go through one too (until their direct retry).
	var relayed uint64
	for _, m := range ms {
		if r := m.Node.Status().Counters.Relayed; r > 0 {
			t.Logf("member %d made %d relayed links (a is %d, b is %d)", m.Index, r, a.Index, b.Index)
			relayed += r
		}
	}
	if relayed == 0 {
		t.Error("no relayed link counted")
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
