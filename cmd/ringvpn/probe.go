package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
)

func newProbeCommand(a *app) *cobra.Command {
	var (
		configPath string
		sessions   int
		count      int
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "probe --config FILE [--sessions N] [--count M] HOST:PORT",
		Short: "open sessions to a member and ping through them",
		Long: `Open N sessions at once to the member at HOST:PORT from one new socket,
authenticating with the identity in the configuration file, send M pings
through each, and report handshake times, RTT and failures. Use it to check
that a member is reachable and accepts your certificate (and why not).`,
		Args: withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "config"); err != nil {
				return err
			}
			target, err := netip.ParseAddrPort(args[0])
			if err != nil {
				return usageErrorf("%q is not an ip:port", args[0])
			}
			if sessions < 1 || sessions > 10000 || count < 0 {
				return usageErrorf("--sessions must be in [1,10000] and --count at least 0")
			}
			cfg, log, err := loadNodeConfig(cmd, a, configPath)
			if err != nil {
				return err
			}
			defer log.Sync()
			report, err := node.Probe(cmd.Context(), cfg, target, sessions, count, log)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				enc.Encode(report)
			} else if report.Established > 0 {
				fmt.Fprintf(a.stdout, "%s (%s… at %s): %d/%d sessions authenticated in %s (%.0f handshakes/s; p50 %s, max %s); %d/%d pongs, rtt p50 %s\n",
					report.Peer, report.PeerAddress[:12], report.Target, report.Established, report.Sessions,
					report.Elapsed.Round(time.Millisecond), report.HandshakesPerSecond(),
					report.HandshakeP50.Round(time.Microsecond), report.HandshakeMax.Round(time.Microsecond),
					report.PongsBack, report.PingsSent, report.RTTP50.Round(time.Microsecond))
			}
			return err
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file with the identity to use (listen and peers are ignored)")
	cmd.Flags().IntVar(&sessions, "sessions", 1, "sessions to open at once")
	cmd.Flags().IntVar(&count, "count", 3, "pings per session")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
