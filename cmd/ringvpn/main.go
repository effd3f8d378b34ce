// Command ringvpn is the ringvpn node and its tools: run a node, manage the
// group CA and member certificates, print the version. Run
// `ringvpn help` for the sub-commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
