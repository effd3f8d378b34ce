// Package overlaytest starts ring clusters for tests: NewCluster runs N
// nodes in the test's process (overlay/sim) and stops them, and the
// networks under them, when the test ends.
package overlaytest

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/security"
)

// FastConfig is an overlay configuration with short intervals, so rings
// converge and heal in a test's time.
func FastConfig() overlay.Config {
	c := overlay.Default()
	c.MaintainInterval = 200 * time.Millisecond
	c.PingInterval = 500 * time.Millisecond
	c.DeadAfter = 2 * time.Second
	c.ConnectTimeout = 5 * time.Second
	return c
}

// FastSecurity is a security configuration to match FastConfig.
func FastSecurity() security.Config {
	c := security.Default()
	c.KeepaliveInterval = time.Second
	c.DeadAfter = 4 * time.Second
	c.HandshakeTimeout = 5 * time.Second
	return c
}

// NewCluster starts a cluster and waits until its ring is correct. Zero
// Overlay and Security options get FastConfig and FastSecurity, and a nil
// Log the test's logger at info level.
func NewCluster(t testing.TB, opts sim.Options) *sim.Cluster {
	t.Helper()
	if opts.Overlay.Near == 0 {
		opts.Overlay = FastConfig()
	}
	if opts.Security.HandshakeTimeout == 0 {
		opts.Security = FastSecurity()
	}
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	}
	c, err := sim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(c.Close) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	took, err := c.WaitRing(ctx, opts.Overlay.Near)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d nodes: ring correct %v after the last start", opts.N, took.Round(time.Millisecond))
	return c
}
