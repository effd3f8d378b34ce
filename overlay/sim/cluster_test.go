package sim_test

import (
	"context"
	"fmt"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

// allPairsEcho sends a routed echo between every ordered pair of live
// members and returns the failures.
func allPairsEcho(t *testing.T, c *sim.Cluster) []string {
	t.Helper()
	ms := c.Members()
	var (
		mu      sync.Mutex
		fails   []string
		wg      sync.WaitGroup
		hops    atomic.Int64
		retried atomic.Int64
	)
	sem := make(chan struct{}, 64)
	for _, a := range ms {
		for _, b := range ms {
			if a == b {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				// A message in flight on a link that is being replaced
				// is lost (datagrams); a second try must get through.
				var r overlay.EchoResult
				var err error
				for try := range 3 {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					r, err = a.Node.Echo(ctx, b.Node.Address())
					cancel()
					if err == nil {
						break
					}
					if try == 0 {
						retried.Add(1)
					}
				}
				if err != nil {
					mu.Lock()
					fails = append(fails, fmt.Sprintf("node%d -> node%d: %v", a.Index, b.Index, err))
					mu.Unlock()
					return
				}
				hops.Add(int64(r.Hops))
			}()
		}
	}
	wg.Wait()
	pairs := len(ms) * (len(ms) - 1)
	t.Logf("%d pairs, mean path %.2f links, %d needed a second try", pairs, 1+float64(hops.Load())/float64(pairs), retried.Load())
	return fails
}

// TestCluster_Secure32 is the ring over real DTLS on memnet: 32 nodes
// form a correct ring, every pair exchanges a routed message, and a node
// that leaves is healed around.
func TestCluster_Secure32(t *testing.T) {
	var mu sync.Mutex
	dhts := map[int]*dht.DHT{}
	attach := func(m *sim.Member) error {
		d, err := dht.New(m.Node, dht.Default(), nil, zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)))
		if err != nil {
			return err
		}
		mu.Lock()
		dhts[m.Index] = d
		mu.Unlock()
		t.Cleanup(func() { d.Close() })
		return nil
	}
	c := overlaytest.NewCluster(t, sim.Options{N: 32, Secure: true, Latency: simnet.Constant(4 * time.Millisecond), Seed: 1, OnNode: attach})
	if fails := allPairsEcho(t, c); len(fails) > 0 {
		t.Fatalf("%d echoes failed, first: %s", len(fails), fails[0])
	}
	// The DHT: values put from some nodes are read from others.
	ctx := context.Background()
	keys := make([]overlay.Address, 20)
	for i := range keys {
		keys[i] = dht.KeyOf("test", fmt.Sprint("key", i))
		if err := dhts[i%32].Put(ctx, keys[i], fmt.Appendf(nil, "value %d", i), time.Hour); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	checkDHT := func() {
		t.Helper()
		for i, k := range keys {
			reader := dhts[(i*7+3)%32]
			if reader == dhts[5] || reader == dhts[17] {
				reader = dhts[0]
			}
			v, err := reader.Get(ctx, k)
			if err != nil || string(v) != fmt.Sprintf("value %d", i) {
				t.Fatalf("get %d: %q, %v", i, v, err)
			}
		}
	}
	checkDHT()
	c.Remove(5, false)
	c.Remove(17, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	took, err := c.WaitRing(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("healed %v after two nodes left", took.Round(time.Millisecond))
	if fails := allPairsEcho(t, c); len(fails) > 0 {
		t.Fatalf("after leaves: %d echoes failed, first: %s", len(fails), fails[0])
	}
	checkDHT()
}
