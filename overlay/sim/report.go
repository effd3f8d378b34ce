package sim

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

// Report is what Run measured. Durations are in nanoseconds in JSON (the
// _ns keys); percentages are in [0,100].
type Report struct {
	Nodes            int           `json:"nodes"`
	Secure           bool          `json:"secure"`
	Latency          string        `json:"latency"`
	Seed             uint64        `json:"seed"`
	Proximity        bool          `json:"proximity"`
	Near             int           `json:"near"`
	JoinEvery        time.Duration `json:"join_every_ns"`
	MaintainInterval time.Duration `json:"maintain_interval_ns"`
	// TimeScale is RunOptions.TimeScale: the nodes' intervals were that
	// many times their configured values.
	TimeScale float64 `json:"time_scale"`

	Ring    RingReport    `json:"ring"`
	Routing RoutingReport `json:"routing"`
	Links   LinkReport    `json:"links"`
	// Counters sums the nodes' message counters (overlay.Status) after
	// the routing measurement: messages dropped for want of a route
	// (no_route) or hops (ttl_expired) since the start.
	Counters overlay.Counters `json:"counters"`
	DHT      *DHTReport       `json:"dht,omitempty"`
	NAT      *NATReport       `json:"nat,omitempty"`
	Join     *JoinReport      `json:"join,omitempty"`
	Churn    *ChurnReport     `json:"churn,omitempty"`
	Revoke   *RevokeReport    `json:"revoke,omitempty"`
	// Elapsed is the wall time of the run.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Compare is the same seed run with proximity flipped
	// (RunOptions.CompareProximity).
	Compare *Report `json:"compare,omitempty"`
}

// RingReport is how the ring formed.
type RingReport struct {
	// JoinTime is from the first node's start to the last one's.
	JoinTime time.Duration `json:"join_time_ns"`
	// Converged says whether every node's near links were right within
	// RunOptions.ConvergeTimeout; ConvergeTime is how long after the last
	// join that was seen (to within the polling period: 100ms below 500
	// nodes, 1s below 5,000, 2s above).
	Converged    bool          `json:"converged"`
	ConvergeTime time.Duration `json:"converge_after_last_join_ns"`
	// CorrectPercent is the share of nodes linked as near to all their k
	// true successors and k true predecessors, at that moment.
	CorrectPercent float64 `json:"correct_percent"`
	WrongNodes     int     `json:"wrong_nodes"`
}

// RoutingReport is what single-shot routed echoes between random pairs
// showed.
type RoutingReport struct {
	// Pairs echoes were sent; Delivered were answered within the echo
	// timeout at the first try.
	Pairs           int     `json:"pairs"`
	Delivered       int     `json:"delivered"`
	DeliveryPercent float64 `json:"delivery_percent"`
	// Retried counts echoes that failed and whose second try was answered
	// (only under churn, where echoes are retried once).
	Retried int `json:"retried,omitempty"`
	// FirstFailure is the error of the first echo that failed.
	FirstFailure string `json:"first_failure,omitempty"`
	// PathMean, PathP99 and PathMax are the request path lengths in links
	// (forwards + 1), over delivered echoes; ReplyPathMean the answers'.
	PathMean      float64 `json:"path_links_mean"`
	PathP99       int     `json:"path_links_p99"`
	PathMax       int     `json:"path_links_max"`
	ReplyPathMean float64 `json:"reply_path_links_mean"`
	// EchoRTTMean is the mean measured round trip over the overlay;
	// DirectRTTMean the mean modelled RTT between the same pairs.
	EchoRTTMean   time.Duration `json:"echo_rtt_mean_ns"`
	DirectRTTMean time.Duration `json:"direct_rtt_mean_ns"`
	// Stretch is EchoRTTMean / DirectRTTMean: overlay path latency over
	// direct latency. StretchMedian and StretchP90 are quantiles of the
	// per-pair ratio.
	Stretch       float64 `json:"stretch"`
	StretchMedian float64 `json:"stretch_median"`
	StretchP90    float64 `json:"stretch_p90"`
}

// LinkReport is the links per node, after convergence.
type LinkReport struct {
	// Mean and Max count every link a node has, whichever side keeps it.
	Mean float64 `json:"mean"`
	Max  int     `json:"max"`
	// NearMean and FarMean count the links nodes keep as near and as far
	// (a link can be both); FarGoalMean is the far links they aim for.
	NearMean    float64 `json:"near_mean"`
	FarMean     float64 `json:"far_mean"`
	FarGoalMean float64 `json:"far_goal_mean"`
}

// DHTReport is the DHT without churn: Keys values put from random nodes,
// each read back from another random node.
type DHTReport struct {
	Keys         int     `json:"keys"`
	Puts         int     `json:"puts_ok"`
	Gets         int     `json:"gets"`
	GetsOK       int     `json:"gets_ok"`
	GetPercent   float64 `json:"get_percent"`
	FirstFailure string  `json:"first_failure,omitempty"`
}

// JoinReport is how soon a node added to the converged ring is routable:
// the time from its creation until an echo sent to its address by a
// random other node (one every 50ms) is answered.
type JoinReport struct {
	Trials   int             `json:"trials"`
	Routable int             `json:"routable"`
	Median   time.Duration   `json:"median_ns"`
	Max      time.Duration   `json:"max_ns"`
	Each     []time.Duration `json:"each_ns"`
	// RingAgain is, for each trial, the time from the node's creation
	// until every node's near links were right again (negative: not
	// within the limit, after that long).
	RingAgain []time.Duration `json:"ring_again_ns"`
}

// ChurnReport is the ring while nodes crash and join.
type ChurnReport struct {
	// PerMinute is the fraction of the nodes replaced per minute, for
	// Duration; Replaced is how many were.
	PerMinute float64       `json:"per_minute"`
	Duration  time.Duration `json:"duration_ns"`
	Replaced  int           `json:"replaced"`
	// Routing is over echoes between nodes up for at least 2s (or two
	// maintenance intervals) at the start of the echo; an echo is sent
	// once more if it fails, and delivery counts the first try.
	Routing                  RoutingReport `json:"routing"`
	DeliveredWithRetry       int           `json:"delivered_with_retry"`
	DeliveryWithRetryPercent float64       `json:"delivery_with_retry_percent"`
	// Abandoned echoes had an end removed while they were under way and
	// are not counted.
	Abandoned int `json:"abandoned"`
	// FailedNewEnd counts the echoes that failed at the first try and had
	// a node that joined during the churn at one end: how many failures
	// are new nodes not yet routable rather than crashed nodes on the
	// path.
	FailedNewEnd int `json:"failed_new_end"`
	// DHT gets of the values stored before the churn, from random nodes.
	DHTGets         int     `json:"dht_gets"`
	DHTGetsOK       int     `json:"dht_gets_ok"`
	DHTGetPercent   float64 `json:"dht_get_percent"`
	DHTFirstFailure string  `json:"dht_first_failure,omitempty"`
	// DHTFailedNearNew counts the failed gets of a key one of whose
	// rightful holders (the live nodes closest to it) joined during the
	// churn.
	DHTFailedNearNew int `json:"dht_failed_near_new"`
	// Healed says whether the ring was correct again within the converge
	// timeout after the churn stopped, HealTime how long that took.
	Healed              bool          `json:"healed"`
	HealTime            time.Duration `json:"heal_time_ns"`
	CorrectPercentAfter float64       `json:"correct_percent_after"`
}

// latencyName describes a latency model for the report.
func latencyName(m simnet.LatencyModel) string {
	switch m := m.(type) {
	case simnet.Constant:
		return fmt.Sprintf("constant %v RTT", time.Duration(m))
	case *simnet.Plane:
		return "plane (RTT 5-250ms, mean ~93ms)"
	default:
		return fmt.Sprintf("%T", m)
	}
}

// row is one line of the printed table.
type row struct {
	section, label string
	value          func(r *Report) string
}

// Print writes the report as a table for people; with a comparison run,
// its figures are in a second column.
func (r *Report) Print(w io.Writer) {
	links := "plain links"
	if r.Secure {
		links = "DTLS links"
	}
	fmt.Fprintf(w, "ringvpn sim: %d nodes, %s, latency %s, seed %d, k=%d, maintenance every %v, a join every %v",
		r.Nodes, links, r.Latency, r.Seed, r.Near, r.MaintainInterval, r.JoinEvery)
	if r.TimeScale > 1 {
		fmt.Fprintf(w, ", every interval stretched %gx (times to converge and join are that much longer)", r.TimeScale)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if r.Compare != nil {
		fmt.Fprintf(tw, "\t\t%s\t%s\n", proximityName(r.Proximity), proximityName(r.Compare.Proximity))
	} else {
		fmt.Fprintf(tw, "\t\t%s\n", proximityName(r.Proximity))
	}
	for _, rw := range reportRows(r) {
		fmt.Fprintf(tw, "%s\t%s\t%s", rw.section, rw.label, rw.value(r))
		if r.Compare != nil {
			fmt.Fprintf(tw, "\t%s", rw.value(r.Compare))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func proximityName(on bool) string {
	if on {
		return "proximity on"
	}
	return "proximity off"
}

// reportRows lists the table's lines; the optional sections appear when
// either run has them.
func reportRows(r *Report) []row {
	has := func(f func(r *Report) bool) bool { return f(r) || (r.Compare != nil && f(r.Compare)) }
	rows := []row{
		{"ring", "joined in", func(r *Report) string { return dur(r.Ring.JoinTime) }},
		{"", "converged", func(r *Report) string {
			if !r.Ring.Converged {
				return fmt.Sprintf("NO (gave up %s after the last join)", dur(r.Ring.ConvergeTime))
			}
			return dur(r.Ring.ConvergeTime) + " after the last join"
		}},
		{"", "correct", func(r *Report) string {
			return fmt.Sprintf("%s of nodes (%d wrong)", pct(r.Ring.CorrectPercent), r.Ring.WrongNodes)
		}},
		{"routing", "delivery", func(r *Report) string { return delivery(r.Routing) }},
		{"", "path, links", func(r *Report) string {
			return fmt.Sprintf("mean %.2f, p99 %d, max %d (replies: mean %.2f)",
				r.Routing.PathMean, r.Routing.PathP99, r.Routing.PathMax, r.Routing.ReplyPathMean)
		}},
		{"", "echo RTT / direct", func(r *Report) string {
			return fmt.Sprintf("%s / %s", ms(r.Routing.EchoRTTMean), ms(r.Routing.DirectRTTMean))
		}},
		{"", "stretch", func(r *Report) string {
			return fmt.Sprintf("%.2f (per pair: median %.2f, p90 %.2f)", r.Routing.Stretch, r.Routing.StretchMedian, r.Routing.StretchP90)
		}},
		{"", "dropped", func(r *Report) string {
			return fmt.Sprintf("%d without a route, %d out of hops (all messages since the start)", r.Counters.NoRoute, r.Counters.TTLExpired)
		}},
		{"links", "per node", func(r *Report) string {
			return fmt.Sprintf("mean %.1f, max %d (kept as near %.1f, as far %.1f of %.1f wanted)",
				r.Links.Mean, r.Links.Max, r.Links.NearMean, r.Links.FarMean, r.Links.FarGoalMean)
		}},
	}
	if has(func(r *Report) bool { return r.NAT != nil }) {
		nat := func(f func(n *NATReport) string) func(r *Report) string {
			return func(r *Report) string {
				if r.NAT == nil {
					return "-"
				}
				return f(r.NAT)
			}
		}
		rows = append(rows,
			row{"nat", "nodes", nat(func(n *NATReport) string {
				types := slices.Sorted(maps.Keys(n.ByType))
				parts := make([]string, len(types))
				for i, t := range types {
					parts[i] = fmt.Sprintf("%s %d", t, n.ByType[t])
				}
				return strings.Join(parts, ", ")
			})},
			row{"", "ring links", nat(func(n *NATReport) string {
				return fmt.Sprintf("%d relayed of %d (both ends counted)", n.RelayedLinks, n.Links)
			})},
			row{"", "shortcut pairs", nat(func(n *NATReport) string {
				return fmt.Sprintf("%d: direct %s (%d; %d of the %d whose NATs allow hole punching), relayed %d, none %d",
					n.Pairs, pct(n.DirectPercent), n.Direct, n.PunchedDirect, n.Punchable, n.Relayed, n.Failed)
			})},
		)
	}
	if has(func(r *Report) bool { return r.DHT != nil }) {
		rows = append(rows,
			row{"dht", "puts", func(r *Report) string {
				if r.DHT == nil {
					return "-"
				}
				return fmt.Sprintf("%d/%d", r.DHT.Puts, r.DHT.Keys)
			}},
			row{"", "gets", func(r *Report) string {
				if r.DHT == nil {
					return "-"
				}
				return fmt.Sprintf("%s (%d/%d)%s", pct(r.DHT.GetPercent), r.DHT.GetsOK, r.DHT.Gets, failure(r.DHT.FirstFailure))
			}},
		)
	}
	if has(func(r *Report) bool { return r.Join != nil }) {
		rows = append(rows, row{"join", "routable after", func(r *Report) string {
			j := r.Join
			if j == nil {
				return "-"
			}
			return fmt.Sprintf("median %s, max %s (%d/%d routable)", ms(j.Median), ms(j.Max), j.Routable, j.Trials)
		}}, row{"", "ring correct again", func(r *Report) string {
			j := r.Join
			if j == nil {
				return "-"
			}
			parts := make([]string, len(j.RingAgain))
			for i, d := range j.RingAgain {
				if d < 0 {
					parts[i] = "not after " + dur(-d)
				} else {
					parts[i] = dur(d)
				}
			}
			return "after " + strings.Join(parts, ", ")
		}})
	}
	if has(func(r *Report) bool { return r.Churn != nil }) {
		churn := func(f func(c *ChurnReport) string) func(r *Report) string {
			return func(r *Report) string {
				if r.Churn == nil {
					return "-"
				}
				return f(r.Churn)
			}
		}
		rows = append(rows,
			row{"churn", "rate", churn(func(c *ChurnReport) string {
				return fmt.Sprintf("%.1f%% of the nodes per minute for %s (%d crashed and replaced)", 100*c.PerMinute, dur(c.Duration), c.Replaced)
			})},
			row{"", "delivery", churn(func(c *ChurnReport) string {
				return fmt.Sprintf("%s; with one retry %s (%d abandoned; %d of the failures had a node that joined during the churn at one end)",
					delivery(c.Routing), pct(c.DeliveryWithRetryPercent), c.Abandoned, c.FailedNewEnd)
			})},
			row{"", "path, links", churn(func(c *ChurnReport) string {
				return fmt.Sprintf("mean %.2f, p99 %d; stretch %.2f", c.Routing.PathMean, c.Routing.PathP99, c.Routing.Stretch)
			})},
			row{"", "dht gets", churn(func(c *ChurnReport) string {
				if c.DHTGets == 0 {
					return "-"
				}
				return fmt.Sprintf("%s (%d/%d; %d of the failures for keys that a node that joined during the churn should hold)%s",
					pct(c.DHTGetPercent), c.DHTGetsOK, c.DHTGets, c.DHTFailedNearNew, failure(c.DHTFirstFailure))
			})},
			row{"", "ring after", churn(func(c *ChurnReport) string {
				if !c.Healed {
					return fmt.Sprintf("NOT healed after %s: %s correct", dur(c.HealTime), pct(c.CorrectPercentAfter))
				}
				return fmt.Sprintf("correct again %s after the churn stopped", dur(c.HealTime))
			})},
		)
	}
	if has(func(r *Report) bool { return r.Revoke != nil }) {
		rows = append(rows, revokeRows()...)
	}
	rows = append(rows, row{"run", "elapsed", func(r *Report) string { return dur(r.Elapsed) }})
	return rows
}

func delivery(rr RoutingReport) string {
	return fmt.Sprintf("%s (%d/%d)%s", pct(rr.DeliveryPercent), rr.Delivered, rr.Pairs, failure(rr.FirstFailure))
}

func failure(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return "; first failure: " + strings.ReplaceAll(s, "\t", " ")
}

func pct(p float64) string { return fmt.Sprintf("%.2f%%", p) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func dur(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
