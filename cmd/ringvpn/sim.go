package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

func newSimCommand(a *app) *cobra.Command {
	o := sim.DefaultRunOptions()
	var (
		latency   string
		timeout   time.Duration
		asJSON    bool
		far, near int
		maxLinks  int
	)
	cmd := &cobra.Command{
		Use:   "sim [--nodes N] [--secure] [--latency plane|constant:RTT] [--churn F --churn-for D]",
		Short: "run many ring nodes in this process and measure the ring",
		Long: `Start N ring nodes in this process, joining one after another, wait for
the ring to be correct, and measure it: routed delivery, path length in
links and latency stretch over random pairs of nodes, links per node, DHT
puts and gets, how soon a new node is routable, and, with --churn,
delivery and DHT gets while nodes crash and are replaced; with --revoke,
how soon a revocation list published by one node reaches all the others
and cuts the revoked node off (plain runs give the nodes certificates from
a cluster CA, and their links obey the lists as DTLS links do).

Links are plain in-memory links unless --secure (real DTLS on an
in-memory network, a few hundred nodes at most). Latency comes from a
model: "plane" places hosts on a 12,000 km square (RTT 5-250ms, mean
~93ms); "constant:50ms" gives every pair the same RTT. From 500 nodes up
the nodes run the production intervals (maintenance every second) and a
run is CPU-bound: 1,000 nodes take a few minutes. A run the machine cannot
carry in real time (on two cores, about 3,000 nodes) falls behind and
falls apart; --time-scale 4 stretches every interval of the nodes four
times (not the latencies), which keeps paths, links and stretch as they
are and makes times to converge and join four times longer.

Examples:
  ringvpn sim --nodes 1000 --compare-proximity
  ringvpn sim --nodes 1000 --churn 0.1 --churn-for 2m
  ringvpn sim --nodes 1000 --latency constant:50ms --join-trials 10
  ringvpn sim --nodes 1000 --revoke --dht-keys 0 --join-trials 0
  ringvpn sim --nodes 10000 --time-scale 4 --join-every 30ms --join-trials 0`,
		Args: withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			model, err := parseLatency(latency, o.Seed)
			if err != nil {
				return usageErrorf("--latency %q: %v", latency, err)
			}
			o.Latency = model
			if far != 0 || near != 0 || maxLinks != 0 {
				o.Overlay = sim.OverlayFor(o.N)
				if far != 0 {
					o.Overlay.Far = far
				}
				if near != 0 {
					o.Overlay.Near = near
				}
				if maxLinks != 0 {
					o.Overlay.MaxLinks = maxLinks
				}
			}
			if err := o.Validate(); err != nil {
				return &usageError{err}
			}
			if timeout <= 0 {
				return usageErrorf("--timeout %v: must be positive", timeout)
			}
			o.Log = a.log
			// The nodes' own logs only with --log-level debug: a run has
			// thousands of nodes, crashes some on purpose and closes all.
			o.NodeLog = a.log.Named("node")
			if a.logLevel != "debug" {
				o.NodeLog = o.NodeLog.WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			report, err := sim.Run(ctx, o)
			if err != nil && report.Nodes == 0 {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if encErr := enc.Encode(report); encErr != nil && err == nil {
					err = encErr
				}
			} else {
				report.Print(a.stdout)
			}
			if err != nil {
				return fmt.Errorf("sim stopped early (the report above is partial): %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.N, "nodes", o.N, "how many nodes join")
	f.BoolVar(&o.Secure, "secure", o.Secure, "real DTLS links on the in-memory network instead of plain links")
	f.StringVar(&latency, "latency", "plane", `latency model: "plane", or "constant:RTT" like constant:50ms`)
	f.IntVar(&o.Pairs, "pairs", o.Pairs, "random pairs of nodes that exchange an echo (all pairs when there are fewer)")
	f.Float64Var(&o.Churn, "churn", o.Churn, "fraction of the nodes crashed and replaced per minute, e.g. 0.1 (0: no churn)")
	f.DurationVar(&o.ChurnFor, "churn-for", o.ChurnFor, "how long the churn lasts")
	f.BoolVar(&o.CompareProximity, "compare-proximity", o.CompareProximity, "run the same seed again with proximity-aware long links off, and print both")
	f.IntVar(&o.DHTKeys, "dht-keys", o.DHTKeys, "values put in the DHT and read back (0: no DHT)")
	f.IntVar(&o.JoinTrials, "join-trials", o.JoinTrials, "nodes added to the converged ring to time how soon each is routable (0: none)")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "seed of addresses, host placement and the sampled pairs")
	f.DurationVar(&o.JoinEvery, "join-every", o.JoinEvery, "time between two nodes' starts (0: 15ms from 500 nodes, 20ms below, 50ms with --secure)")
	f.DurationVar(&o.EchoTimeout, "echo-timeout", o.EchoTimeout, "how long an echo may take before it counts as undelivered (0: 5s)")
	f.Float64Var(&o.TimeScale, "time-scale", o.TimeScale, "stretch the nodes' intervals and timeouts by this factor, for runs this machine cannot carry in real time (latencies are not stretched)")
	f.DurationVar(&timeout, "timeout", time.Hour, "give up, printing what was measured, after this long")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.Float64Var(&o.NAT.Share, "nat", 0, "fraction of the nodes behind a NAT of their own, e.g. 0.7 (needs --secure)")
	f.Float64Var(&o.NAT.Symmetric, "symmetric", 0, "fraction of all nodes behind a symmetric NAT, e.g. 0.2 (part of --nat)")
	f.IntVar(&o.NATPairs, "nat-pairs", 0, "with --nat: random pairs that ask for a shortcut link, to count direct and relayed ones (0: 100)")
	f.BoolVar(&o.Revoke, "revoke", false, "run revocation lists on every node and, last, have a random node publish one revoking another: time until every node holds it and the revoked node has no links")
	f.IntVar(&far, "far", 0, "far links per node (overlay.far; 0: about log2(N)/2)")
	f.IntVar(&near, "near", 0, "near links on each side (overlay.near; 0: the default)")
	f.IntVar(&maxLinks, "max-links", 0, "links a node keeps for its own reasons (overlay.max_links; 0: the default)")
	return cmd
}

// parseLatency reads --latency: "plane" or "constant:RTT".
func parseLatency(s string, seed uint64) (simnet.LatencyModel, error) {
	name, arg, hasArg := strings.Cut(s, ":")
	switch {
	case name == "plane" && !hasArg:
		return simnet.NewPlane(seed), nil
	case name == "constant" && hasArg:
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 || d > time.Minute {
			return nil, fmt.Errorf("want an RTT in [0,1m] like constant:50ms")
		}
		return simnet.Constant(d), nil
	default:
		return nil, fmt.Errorf(`use "plane" or "constant:RTT" like constant:50ms`)
	}
}
