package sim

import (
	"context"
	"sync"
	"time"

	"github.com/ringvpn/ringvpn/transport/memnet"
)

// NATReport is NAT traversal in a run with NATs: the mix, how many ring
// links went through a relay, and what became of shortcut links asked
// for between random pairs (as the VPN asks when two members talk).
type NATReport struct {
	// ByType counts the nodes per NAT type ("public": none).
	ByType map[string]int `json:"by_type"`
	// Links counts ring links from both ends after convergence;
	// RelayedLinks those going through a relay.
	Links        int `json:"links"`
	RelayedLinks int `json:"relayed_links"`
	// Pairs asked for a shortcut (or were already linked): Direct got a
	// direct link, Relayed one through a relay, Failed none in time.
	Pairs   int `json:"pairs"`
	Direct  int `json:"direct"`
	Relayed int `json:"relayed"`
	Failed  int `json:"failed"`
	// Punchable counts the pairs whose NATs allow hole punching (not
	// symmetric with symmetric or port-restricted cone), and
	// PunchedDirect those of them that got a direct link.
	Punchable     int `json:"punchable"`
	PunchedDirect int `json:"punched_direct"`
	// DirectPercent is Direct over Pairs.
	DirectPercent float64 `json:"direct_percent"`
}

// punchable reports whether hole punching can work between two nodes'
// NATs (memnet's models; "" is a public address).
func punchable(a, b string) bool {
	sym, prc := memnet.Symmetric.String(), memnet.PortRestrictedCone.String()
	hard := func(x, y string) bool { return x == sym && (y == sym || y == prc) }
	return !hard(a, b) && !hard(b, a)
}

// measureNAT counts the relayed links, then asks random pairs for a
// shortcut link and waits for each to come up, direct or relayed.
func (r *runner) measureNAT(ctx context.Context) (*NATReport, error) {
	rep := &NATReport{ByType: map[string]int{}}
	ms := r.settled()
	for _, m := range ms {
		t := m.NAT
		if t == "" {
			t = "public"
		}
		rep.ByType[t]++
		for _, p := range m.Node.Status().Peers {
			rep.Links++
			if !p.Via.IsZero() {
				rep.RelayedLinks++
			}
		}
	}
	if len(ms) < 2 {
		return rep, nil
	}
	// A shortcut comes up within a connect timeout, or after a second one
	// through a relay (plus the grace before it).
	wait := 2*r.o.Overlay.ConnectTimeout + 3*time.Second
	type outcome int
	const (
		failed outcome = iota
		direct
		relayed
	)
	var mu sync.Mutex
	sem := make(chan struct{}, r.o.Parallel)
	var wg sync.WaitGroup
	for range r.o.NATPairs {
		a, b := r.pick(ms)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return rep, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			_, wasLinked := a.Node.Linked(b.Node.Address())
			if !wasLinked {
				a.Node.Shortcut(b.Node.Address())
				defer a.Node.DropShortcut(b.Node.Address())
			}
			res := failed
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, ok := a.Node.Linked(b.Node.Address()); ok {
					res = direct
					if _, via := a.Node.Relayed(b.Node.Address()); via {
						res = relayed
					}
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			rep.Pairs++
			p := punchable(a.NAT, b.NAT)
			if p {
				rep.Punchable++
			}
			switch res {
			case direct:
				rep.Direct++
				if p {
					rep.PunchedDirect++
				}
			case relayed:
				rep.Relayed++
			default:
				rep.Failed++
			}
		})
	}
	wg.Wait()
	if rep.Pairs > 0 {
		rep.DirectPercent = 100 * float64(rep.Direct) / float64(rep.Pairs)
	}
	return rep, ctx.Err()
}
