package overlay_test

import (
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/transport/memnet"
)

// TestRelay_ComesBeforeTheDialsTimeOut: when no datagram gets through
// between two members (as between two symmetric NATs), the one that asked
// for a link has it through a relay a quarter of overlay.connect_timeout
// later, while its dials go on; it does not wait for them to time out (a
// ring around two such members stayed wrong for that long).
func TestRelay_ComesBeforeTheDialsTimeOut(t *testing.T) {
	cfg := overlaytest.FastConfig()
	cfg.ConnectTimeout = 12 * time.Second // the relay comes after 3s
	sec := overlaytest.FastSecurity()
	sec.HandshakeTimeout = cfg.ConnectTimeout // else a dial gives up sooner
	c := overlaytest.NewCluster(t, sim.Options{N: 12, Secure: true, Seed: 5, Overlay: cfg, Security: sec, Pipes: true})
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
	if err := c.Network().SetLink(a.Addr.Addr(), b.Addr.Addr(), memnet.LinkConfig{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.Node.Shortcut(b.Node.Address())
	for {
		if _, ok := a.Node.Relayed(b.Node.Address()); ok {
			break
		}
		if time.Since(start) > cfg.ConnectTimeout*2/3 {
			t.Fatalf("no relayed link within %v (overlay.connect_timeout %v)", cfg.ConnectTimeout*2/3, cfg.ConnectTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("relayed link after %v (connect_timeout %v)", time.Since(start).Round(time.Millisecond), cfg.ConnectTimeout)
	if k, _ := a.Node.Linked(b.Node.Address()); k&overlay.KindShortcut == 0 {
		t.Errorf("the relayed link is kept for %v, want a shortcut", k)
	}
}

// linked reports whether a and b have a link, either way.
func linked(a, b *sim.Member) bool {
	has := func(x, y *sim.Member) bool {
		_, ok := x.Node.Linked(y.Node.Address())
		return ok
	}
	return has(a, b) || has(b, a)
}
