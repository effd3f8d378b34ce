package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
)

// ProbeReport is what `ringvpn probe` found.
type ProbeReport struct {
	Target       string        `json:"target"`
	Peer         string        `json:"peer,omitempty"`
	PeerAddress  string        `json:"peer_address,omitempty"`
	Sessions     int           `json:"sessions"`
	Established  int           `json:"established"`
	Errors       []string      `json:"errors,omitempty"`
	Elapsed      time.Duration `json:"elapsed_ns"`
	HandshakeP50 time.Duration `json:"handshake_p50_ns"`
	HandshakeMax time.Duration `json:"handshake_max_ns"`
	PingsSent    int           `json:"pings_sent"`
	PongsBack    int           `json:"pongs_back"`
	RTTP50       time.Duration `json:"rtt_p50_ns"`
}

// HandshakesPerSecond is the rate at which the sessions were established.
func (r ProbeReport) HandshakesPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Established) / r.Elapsed.Seconds()
}

// Probe opens sessions to the node at target from a fresh socket, all at
// once, sends overlay pings over each and reports what worked. It
// diagnoses reachability and authentication of one peer; target must run
// `ringvpn up`. The target keeps one link per member, so of parallel
// sessions it closes all but one soon after their handshakes: handshakes
// count them all, pongs come back on the sessions still open.
func Probe(ctx context.Context, cfg Config, target netip.AddrPort, sessions, pings int, log *zap.Logger) (ProbeReport, error) {
	cfg.Overlay.Bootstrap = nil
	cfg.Control.Socket = ""
	cfg.Listen = netip.AddrPortFrom(cfg.Listen.Addr(), 0) // never the node's own port
	// The probe's node never joins the ring: it only dials the target.
	n, err := open(cfg, log)
	if err != nil {
		return ProbeReport{}, err
	}
	defer n.Close()

	report := ProbeReport{Target: target.String(), Sessions: sessions}
	var (
		mu         sync.Mutex
		handshakes []time.Duration
		rtts       []time.Duration
		wg         sync.WaitGroup
	)
	start := time.Now()
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			l, err := n.Endpoint().Dial(ctx, target)
			if err != nil {
				mu.Lock()
				report.Errors = append(report.Errors, err.Error())
				mu.Unlock()
				return
			}
			defer l.Close()
			took := time.Since(t0)
			pongs := make(chan time.Duration, pings)
			l.SetHandler(func(pkt []byte) {
				if sent, ok := overlay.PongSent(pkt); ok {
					select {
					case pongs <- time.Duration(time.Now().UnixNano() - int64(sent)):
					default:
					}
				}
			})
			mu.Lock()
			handshakes = append(handshakes, took)
			report.Peer, report.PeerAddress = l.Peer().Name, l.Peer().Address.String()
			mu.Unlock()
			var got []time.Duration
			for range pings {
				l.Send(overlay.PingMessage(n.identity.Member.Address, l.Peer().Address, uint64(time.Now().UnixNano())))
				select {
				case rtt := <-pongs:
					got = append(got, rtt)
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			mu.Lock()
			report.PingsSent += pings
			report.PongsBack += len(got)
			rtts = append(rtts, got...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	report.Elapsed = time.Since(start)
	report.Established = len(handshakes)
	report.HandshakeP50, report.HandshakeMax = percentile(handshakes, 50), percentile(handshakes, 100)
	report.RTTP50 = percentile(rtts, 50)
	if report.Established < sessions {
		return report, fmt.Errorf("%d of %d sessions to %s failed; first error: %s",
			sessions-report.Established, sessions, target, report.Errors[0])
	}
	return report, nil
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i]
}
