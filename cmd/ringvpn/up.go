package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/config"
	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/logging"
	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
)

func newUpCommand(a *app) *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "up --config FILE",
		Short: "run a member node until interrupted",
		Long: `Run a member node: open the UDP socket, link with the configured peers
over DTLS, keep the links alive and serve status on the control socket.
SIGINT or SIGTERM closes every link (telling the peers) and exits.
SIGHUP reads the file again and applies the certificate, the CA bundle,
the revocation lists and the firewall rules without dropping the links
they don't concern; other changes need a restart.

configs/ringvpn.yaml documents every key.`,
		Args: withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "config"); err != nil {
				return err
			}
			cfg, log, err := loadNodeConfig(cmd, a, configPath)
			if err != nil {
				return err
			}
			defer log.Sync()
			reload := func() (node.Config, error) {
				cfg, _, err := loadNodeConfig(cmd, a, configPath)
				return cfg, err
			}
			return runUp(cmd.Context(), cfg, log, reload)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (YAML)")
	return cmd
}

// loadNodeConfig reads a node configuration and builds its logger: the
// file's log settings, unless --log-level or --log-format were given.
func loadNodeConfig(cmd *cobra.Command, a *app, path string) (node.Config, *zap.Logger, error) {
	cfg := node.Default()
	if err := config.Load(path, "RINGVPN", &cfg); err != nil {
		return cfg, nil, err
	}
	if cmd.Flags().Changed("log-level") {
		cfg.Log.Level = a.logLevel
	}
	if cmd.Flags().Changed("log-format") {
		cfg.Log.Format = a.logFormat
	}
	log, err := logging.New(cfg.Log.Level, cfg.Log.Format, a.stderr)
	if err != nil {
		return cfg, nil, fmt.Errorf("log: %w", err)
	}
	// Identity paths in the file are relative to the file.
	dir := filepath.Dir(path)
	paths := []*string{&cfg.Identity.Cert, &cfg.Identity.Key, &cfg.Identity.CA}
	for i := range cfg.Identity.CRL {
		paths = append(paths, &cfg.Identity.CRL[i])
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return cfg, log, nil
}

func runUp(ctx context.Context, cfg node.Config, log *zap.Logger, reload func() (node.Config, error)) error {
	n, err := node.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := n.ServeControl(ctx); err != nil {
		n.Close()
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return n.Close()
		case <-hup:
			cfg, err := reload()
			if err == nil {
				err = n.Reload(cfg)
			}
			if err != nil {
				log.Error("reload failed; the running configuration stays", zap.Error(err))
			}
		}
	}
}
