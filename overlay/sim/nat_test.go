package sim_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

// TestRun_NAT runs 32 DTLS nodes, 70% behind NATs (20% symmetric): the
// ring forms and routes, pairs whose NATs allow hole punching link
// directly, and the others (symmetric with symmetric or port-restricted)
// can only get a relayed link.
func TestRun_NAT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := sim.Run(ctx, sim.RunOptions{
		N: 32, Secure: true, Seed: 11, Latency: simnet.Constant(10 * time.Millisecond),
		Pairs: 300, NAT: sim.NATMix{Share: 0.7, Symmetric: 0.2}, NATPairs: 40,
		Log:     zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel)),
		NodeLog: zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Logf("\n%s", out.String())
	if !rep.Ring.Converged || rep.Ring.CorrectPercent != 100 {
		t.Errorf("ring: converged %v, %.2f%% correct", rep.Ring.Converged, rep.Ring.CorrectPercent)
	}
	// Relayed links are the first to suffer when the test machine is
	// busy (two hops of DTLS each way); `ringvpn sim --nat` at scale is
	// the measure, this is a smoke test of it.
	if r := rep.Routing; r.Delivered < r.Pairs*95/100 {
		t.Errorf("routing: %d/%d delivered, want 95%%; first failure: %s", r.Delivered, r.Pairs, r.FirstFailure)
	}
	n := rep.NAT
	if n == nil {
		t.Fatal("no NAT report")
	}
	if n.ByType["public"] == 0 || n.ByType["Symmetric"] == 0 || n.ByType["public"] == 32 {
		t.Errorf("NAT mix: %v", n.ByType)
	}
	if n.Failed > 0 {
		t.Errorf("%d of %d pairs got no link at all", n.Failed, n.Pairs)
	}
	if n.PunchedDirect == 0 || n.Direct > n.Punchable {
		t.Errorf("%d direct links, %d of them between punchable NATs, of %d punchable pairs: a pair that can't punch holes went direct",
			n.Direct, n.PunchedDirect, n.Punchable)
	}
	if n.Punchable < n.Pairs && n.Relayed == 0 {
		t.Errorf("%d pairs can't punch holes, but no link was relayed", n.Pairs-n.Punchable)
	}
}
