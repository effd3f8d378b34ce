package sim

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/revoke"
	"github.com/ringvpn/ringvpn/overlay/simnet"
	"github.com/ringvpn/ringvpn/security"
)

// RevokeReport is how a revocation spread (RunOptions.Revoke): one node
// published a list revoking another, and every other node took it.
type RevokeReport struct {
	Publisher string `json:"publisher"`
	Revoked   string `json:"revoked"`
	// Bytes is the list's size (DER).
	Bytes int `json:"bytes"`
	// Members is how many nodes other than the revoked one were measured
	// (those up for the grace period); Reached how many held the list
	// within RunOptions.RevokeTimeout.
	Members      int     `json:"members"`
	Reached      int     `json:"reached"`
	ReachPercent float64 `json:"reach_percent"`
	// AllReached is the time from the publication until the last of them
	// held it (zero unless all did); Median and P90 are over the nodes
	// reached.
	AllReached time.Duration `json:"all_reached_ns"`
	Median     time.Duration `json:"median_ns"`
	P90        time.Duration `json:"p90_ns"`
	// CutOff is the time until the revoked node had no links left, for
	// good (negative: it still had some after that long).
	CutOff time.Duration `json:"cut_off_ns"`
	// RevokedHeard says whether the revoked node got the list itself
	// before it was cut off.
	RevokedHeard bool `json:"revoked_heard"`
	// Refused counts plain-link handshakes refused for the revoked
	// certificate (zero in DTLS runs, whose endpoints log them instead).
	Refused uint64 `json:"refused"`
	// Spread sums the nodes' Spreader counters.
	Spread revoke.Stats `json:"spread"`
}

// revoker is a node's revocation lists and their Spreader.
type revoker struct {
	revs     *security.Revocations
	spreader *revoke.Spreader
}

// attachRevoker gives member m revocation lists that its links obey and
// a Spreader over its DHT d.
func (r *runner) attachRevoker(m *Member, d *dht.DHT) (*revoker, error) {
	if m.Identity == nil {
		return nil, errors.New("sim: revocation needs members with certificates")
	}
	revs := security.NewRevocations(m.Bundle)
	switch l := m.Linker.(type) {
	case *overlay.SecureLinker:
		l.Endpoint().SetRevocations(revs)
	case *simnet.Linker:
		l.SetRevocations(revs)
	}
	sp, err := revoke.New(revoke.Params{
		Node: m.Node, Revocations: revs, DHT: d, Identity: m.Identity, Config: revoke.Default(), Log: r.o.NodeLog,
	})
	if err != nil {
		return nil, err
	}
	return &revoker{revs: revs, spreader: sp}, nil
}

// closeRevokers stops the Spreaders.
func (r *runner) closeRevokers() {
	r.mu.Lock()
	rs := make([]*revoker, 0, len(r.revs))
	for _, rv := range r.revs {
		rs = append(rs, rv)
	}
	clear(r.revs)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, rv := range rs {
		wg.Go(func() { rv.spreader.Close() })
	}
	wg.Wait()
}

func (r *runner) revoker(m *Member) *revoker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revs[m.Index]
}

// measureRevoke has a random node publish a list revoking another random
// node, and times how soon every other node holds it and the revoked
// node has no links left.
func (r *runner) measureRevoke(ctx context.Context) (*RevokeReport, error) {
	var ms []*Member
	for _, m := range r.settled() {
		if r.revoker(m) != nil {
			ms = append(ms, m)
		}
	}
	if len(ms) < 3 {
		return nil, fmt.Errorf("sim: revocation: %d nodes up, need 3", len(ms))
	}
	pub, target := r.pick(ms)
	rep := &RevokeReport{Publisher: pub.member.Name, Revoked: target.member.Name, Members: len(ms) - 1}
	cert := target.Identity.Cert

	var (
		mu      sync.Mutex
		t0      time.Time
		reached = make(map[int]time.Duration, len(ms))
	)
	for _, m := range ms {
		rv, idx := r.revoker(m), m.Index
		stop := rv.revs.OnChange(func() {
			if !rv.revs.Revoked(cert) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if _, ok := reached[idx]; !ok {
				reached[idx] = time.Since(t0)
			}
		})
		defer stop()
	}
	now := time.Now()
	crl, err := r.c.CA().Revoke(nil, []x509.RevocationListEntry{{SerialNumber: cert.SerialNumber, RevocationTime: now, ReasonCode: 1}},
		now, now.Add(24*time.Hour))
	if err != nil {
		return nil, err
	}
	rep.Bytes = len(crl.Raw)
	poll := 20 * time.Millisecond
	if r.o.N >= largeRun {
		poll = 100 * time.Millisecond
	}
	mu.Lock()
	t0 = time.Now()
	mu.Unlock()
	if _, err := r.revoker(pub).spreader.Publish(crl.Raw); err != nil {
		return rep, fmt.Errorf("sim: revocation: publish: %w", err)
	}
	cutAt := time.Duration(-1)
	for {
		mu.Lock()
		n := len(reached)
		_, heard := reached[target.Index]
		mu.Unlock()
		if heard {
			n--
		}
		elapsed := time.Since(t0)
		if len(target.Node.Peers()) > 0 {
			cutAt = -1
		} else if cutAt < 0 {
			cutAt = elapsed
		}
		if (n == rep.Members && cutAt >= 0) || elapsed >= r.o.RevokeTimeout {
			break
		}
		if err := sleep(ctx, poll); err != nil {
			return rep, err
		}
	}
	mu.Lock()
	var times []time.Duration
	for i, d := range reached {
		if i == target.Index {
			rep.RevokedHeard = true
			continue
		}
		times = append(times, d)
	}
	mu.Unlock()
	slices.Sort(times)
	rep.Reached = len(times)
	rep.ReachPercent = percent(rep.Reached, rep.Members)
	if len(times) > 0 {
		rep.Median = times[quantileIndex(len(times), 0.5)]
		rep.P90 = times[quantileIndex(len(times), 0.9)]
		if rep.Reached == rep.Members {
			rep.AllReached = times[len(times)-1]
		}
	}
	rep.CutOff = cutAt
	if cutAt < 0 {
		rep.CutOff = -time.Since(t0)
	}
	if r.c.fabric != nil {
		rep.Refused = r.c.fabric.Stats().Refused
	}
	for _, m := range r.c.Members() {
		if rv := r.revoker(m); rv != nil {
			st := rv.spreader.Stats()
			s := &rep.Spread
			s.Received += st.Received
			s.ViaBroadcast += st.ViaBroadcast
			s.ViaPeer += st.ViaPeer
			s.ViaDHT += st.ViaDHT
			s.Refused += st.Refused
			s.Duplicate += st.Duplicate
			s.Dropped += st.Dropped
			s.Checked += st.Checked
			s.Published += st.Published
			s.Pushed += st.Pushed
			s.Checks += st.Checks
			s.DHTFetched += st.DHTFetched
			s.DHTStored += st.DHTStored
			s.DHTErrors += st.DHTErrors
		}
	}
	return rep, nil
}

// revokeRows are the report's lines of the revocation.
func revokeRows() []row {
	rv := func(f func(v *RevokeReport) string) func(r *Report) string {
		return func(r *Report) string {
			if r.Revoke == nil {
				return "-"
			}
			return f(r.Revoke)
		}
	}
	return []row{
		{"revocation", "list", rv(func(v *RevokeReport) string {
			return fmt.Sprintf("%s publishes a list revoking %s (%d bytes)", v.Publisher, v.Revoked, v.Bytes)
		})},
		{"", "reached", rv(func(v *RevokeReport) string {
			all := "not all"
			if v.AllReached > 0 {
				all = "all in " + dur(v.AllReached)
			}
			return fmt.Sprintf("%s of the other nodes (%d/%d), %s; median %s, p90 %s", pct(v.ReachPercent), v.Reached, v.Members, all, dur(v.Median), dur(v.P90))
		})},
		{"", "revoked node", rv(func(v *RevokeReport) string {
			cut := fmt.Sprintf("no links left %s after the publication", dur(v.CutOff))
			if v.CutOff < 0 {
				cut = fmt.Sprintf("STILL LINKED %s after the publication", dur(-v.CutOff))
			}
			heard := "it did not get the list itself"
			if v.RevokedHeard {
				heard = "it got the list itself"
			}
			return fmt.Sprintf("%s; %s; %d handshakes refused", cut, heard, v.Refused)
		})},
		{"", "spread", rv(func(v *RevokeReport) string {
			s := v.Spread
			return fmt.Sprintf("taken %d (from the broadcast %d, from a neighbour %d, from the DHT %d); duplicates %d, pushes %d, DHT writes %d",
				s.Received, s.ViaBroadcast, s.ViaPeer, s.ViaDHT, s.Duplicate, s.Pushed, s.DHTStored)
		})},
	}
}
