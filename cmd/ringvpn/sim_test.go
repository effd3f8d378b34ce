package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ringvpn/ringvpn/overlay/sim"
)

// TestRun_Sim runs a small simulation through the command line: the table
// names every figure, the JSON carries them, and every echo between the
// 24 nodes is delivered.
func TestRun_Sim(t *testing.T) {
	args := []string{"sim", "--nodes", "24", "--latency", "constant:5ms", "--pairs", "600",
		"--dht-keys", "10", "--join-trials", "1", "--seed", "2", "--timeout", "50s"}
	t.Run("table", func(t *testing.T) {
		out := simOK(t, args...)
		for _, want := range []string{
			"ringvpn sim: 24 nodes, plain links, latency constant 5ms RTT, seed 2",
			"converged", "correct", "100.00% of nodes",
			"delivery", "/552)",
			"path, links", "echo RTT / direct", "stretch", "per node",
			"puts", "10/10", "gets", "100.00% (10/10)", "routable after",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		out := simOK(t, append(args, "--json", "--join-trials", "0")...)
		var rep sim.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if rep.Nodes != 24 || !rep.Ring.Converged || rep.Ring.CorrectPercent != 100 {
			t.Errorf("ring: %+v", rep.Ring)
		}
		// Echoes start as soon as the ring is correct, while long links are
		// still being drawn: a message on a link being replaced can be
		// lost (see the issue notes; on a busy test machine up to 2 in
		// 100), so 3 in 100 are allowed.
		if r := rep.Routing; r.Pairs != 24*23 || r.DeliveryPercent < 97 || r.PathMean < 1 || r.Stretch < 1 {
			t.Errorf("routing: %+v", r)
		}
		if rep.DHT == nil || rep.DHT.GetPercent != 100 || rep.Join != nil {
			t.Errorf("dht %+v, join %+v", rep.DHT, rep.Join)
		}
	})
}

// simOK runs the command line and fails the test unless it succeeds; the
// progress sim logs on stderr is shown only then.
func simOK(t *testing.T, args ...string) string {
	t.Helper()
	r := ringvpn(t, args...)
	if r.code != 0 {
		t.Fatalf("ringvpn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestRun_SimUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"latency", []string{"sim", "--latency", "wobbly"}, `--latency "wobbly": use "plane" or "constant:RTT"`},
		{"constant", []string{"sim", "--latency", "constant:fast"}, "want an RTT"},
		{"nodes", []string{"sim", "--nodes", "1"}, "sim.nodes: 1 not in [2,100000]"},
		{"churn", []string{"sim", "--churn", "-1"}, "sim.churn"},
		{"argument", []string{"sim", "extra"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fails(t, tc.want, tc.args...)
			if !strings.Contains(r.stderr, "Usage:") {
				t.Errorf("no usage after a usage error:\n%s", r.stderr)
			}
		})
	}
}
