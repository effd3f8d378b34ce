package sim_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
)

// TestRun_Revoke: with Revoke, a list published by one node reaches
// every other node, the revoked node ends with no links, and the report
// says so.
func TestRun_Revoke(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := "plain"
		if secure {
			name = "dtls"
		}
		t.Run(name, func(t *testing.T) {
			if secure && testing.Short() {
				t.Skip("DTLS run")
			}
			n := 40
			if secure {
				n = 12
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			rep, err := sim.Run(ctx, sim.RunOptions{
				N: n, Secure: secure, Seed: 3, Latency: simnet.Constant(10 * time.Millisecond), Pairs: 50, Revoke: true,
				Log:     zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel)),
				NodeLog: zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)),
			})
			var out bytes.Buffer
			rep.Print(&out)
			t.Logf("\n%s", out.String())
			if err != nil {
				t.Fatal(err)
			}
			v := rep.Revoke
			if v == nil {
				t.Fatal("no revocation in the report")
			}
			if v.ReachPercent != 100 || v.AllReached <= 0 || v.Reached != v.Members {
				t.Errorf("the list reached %d of %d nodes (%.2f%%)", v.Reached, v.Members, v.ReachPercent)
			}
			if v.CutOff < 0 {
				t.Errorf("the revoked node still had links %v after the publication", -v.CutOff)
			}
			if !strings.Contains(out.String(), "no links left") {
				t.Errorf("the report does not say the revoked node was cut off")
			}
		})
	}
}
