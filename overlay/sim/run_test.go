package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"

	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

// TestRun_Static64 runs the whole measurement on 64 plain nodes with the
// short test intervals: the ring must converge, every sampled echo and
// every DHT get must succeed, and a new node must become routable.
func TestRun_Static64(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := sim.Run(ctx, sim.RunOptions{
		N:          64,
		Seed:       7,
		Latency:    simnet.Constant(10 * time.Millisecond),
		Pairs:      1000,
		DHTKeys:    32,
		JoinTrials: 1,
		Log:        zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel)),
		NodeLog:    zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Logf("\n%s", out.String())

	if !rep.Ring.Converged || rep.Ring.CorrectPercent != 100 {
		t.Errorf("ring: converged %v, %.2f%% correct, want 100%%", rep.Ring.Converged, rep.Ring.CorrectPercent)
	}
	// Far links are still being redrawn after the ring is correct, and a
	// message in flight on a link that is being closed is lost (graceful
	// link retirement is not there yet): allow 5 losses in 1000.
	if r := rep.Routing; r.Pairs != 1000 || r.Delivered < 995 {
		t.Errorf("routing: %d/%d echoes delivered, want at least 995/1000; first failure: %s", r.Delivered, r.Pairs, r.FirstFailure)
	}
	if r := rep.Routing; r.PathMean < 1 || r.PathP99 < 1 || r.Stretch < 1 || r.StretchMedian < 1 {
		t.Errorf("routing figures out of range: %+v", r)
	}
	if d := rep.DHT; d == nil || d.Puts != 32 || d.GetsOK != 32 {
		t.Errorf("dht: %+v, want 32 puts and 32 gets", d)
	}
	if j := rep.Join; j == nil || j.Routable != 1 || j.Median <= 0 {
		t.Errorf("join: %+v, want one routable node", j)
	}
	if l := rep.Links; l.Mean < 6 || l.Max < 6 || l.NearMean != 6 {
		t.Errorf("links: %+v, want every node with its 6 near links", l)
	}
	if rep.Churn != nil || rep.Compare != nil {
		t.Errorf("churn or comparison measured without being asked for")
	}
	for _, want := range []string{"64 nodes", "converged", "correct", "delivery", "/1000)", "path, links", "stretch", "per node", "gets", "100.00% (32/32)", "routable after"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed report lacks %q", want)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"delivery_percent":`, `"correct_percent":100`, `"path_links_mean"`, `"stretch"`, `"get_percent":100`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

// TestRun_Churn crashes and replaces 20% of 48 nodes per minute for 20s
// (about three crashes) with the short test intervals, and checks that
// routed echoes between nodes up for at least 2s keep being delivered.
//
// The bound is 95% at the first try: a crashed node keeps swallowing
// what its peers send it until they notice, DeadAfter (2s) later, so an
// echo whose path crosses it is lost. With one crash every 6.25s about a
// third of the time one of 48 nodes is such a sink, and a path of two
// links each way crosses it for roughly 1 echo in 100 of those; 95%
// leaves room for the race detector's slowdown. With one retry every
// echo must get through.
func TestRun_Churn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := sim.Run(ctx, sim.RunOptions{
		N:        48,
		Seed:     3,
		Latency:  simnet.Constant(10 * time.Millisecond),
		Pairs:    200,
		Parallel: 8,
		DHTKeys:  16,
		Churn:    0.2,
		ChurnFor: 20 * time.Second,
		Log:      zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel)),
		NodeLog:  zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Logf("\n%s", out.String())
	c := rep.Churn
	if c == nil {
		t.Fatal("no churn report")
	}
	if c.Replaced < 2 {
		t.Errorf("%d nodes replaced in 20s at 20%% of 48 per minute, want about 3", c.Replaced)
	}
	if c.Routing.Pairs < 100 {
		t.Errorf("only %d echoes during the churn", c.Routing.Pairs)
	}
	if c.Routing.DeliveryPercent < 95 {
		t.Errorf("delivery under churn %.2f%% (%d/%d), want at least 95%%; first failure: %s",
			c.Routing.DeliveryPercent, c.Routing.Delivered, c.Routing.Pairs, c.Routing.FirstFailure)
	}
	if c.DeliveryWithRetryPercent < 99 {
		t.Errorf("delivery under churn with one retry %.2f%%, want at least 99%%", c.DeliveryWithRetryPercent)
	}
}

func TestRunOptions_Validate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    sim.RunOptions
		want string // "" means valid
	}{
		{"defaults", sim.DefaultRunOptions(), ""},
		{"one node", sim.RunOptions{N: 1}, "sim.nodes: 1 not in [2,100000]"},
		{"secure thousands", sim.RunOptions{N: 2000, Secure: true}, "sim.secure"},
		{"churn NaN", sim.RunOptions{N: 10, Churn: nan()}, "sim.churn"},
		{"negative pairs", sim.RunOptions{N: 10, Pairs: -1}, "sim.pairs"},
		{"revoke in two", sim.RunOptions{N: 2, Revoke: true}, "sim.revoke"},
		{"bad overlay", sim.RunOptions{N: 10, Overlay: func() overlay.Config { c := sim.OverlayFor(10); c.TTL = 1; return c }()}, "overlay.ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func nan() float64 { return math.NaN() }
