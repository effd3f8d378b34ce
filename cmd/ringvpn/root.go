package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/logging"
)

// run executes the command line args (without the program name), writing
// to stdout and stderr, and returns the process exit code. An error is
// printed once, as "ringvpn: <error>"; a usage mistake (an unknown flag or
// command, a missing or malformed flag) is followed by the command's usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "ringvpn: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) && cmd != nil {
		fmt.Fprintf(stderr, "\n%s", cmd.UsageString())
	}
	return 1
}

// app is what the sub-commands share: the output streams and the logger
// that the global flags configure.
type app struct {
	stdout, stderr io.Writer

	logLevel, logFormat string
	// log is built from the global flags before any sub-command runs.
	log *zap.Logger
}

// newRootCommand returns the ringvpn command with all its sub-commands.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr, logLevel: "info", logFormat: "console", log: zap.NewNop()}
	root := &cobra.Command{
		Use:   "ringvpn",
		Short: "ringvpn: a peer-to-peer overlay VPN with no central server",
		Long: `ringvpn is a peer-to-peer overlay VPN. Every member runs one node; the
nodes form a self-organising ring and carry each other's traffic over
DTLS links, authenticated by certificates that the group's CA issued.

Start a group:
  ringvpn ca init --name my-group-ca
  ringvpn cert issue --name alice --ip 10.20.0.5/16
  ringvpn cert show alice.crt`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(a.logLevel, a.logFormat, a.stderr)
			if err != nil {
				return &usageError{err}
			}
			a.log = log
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true

	pf := root.PersistentFlags()
	pf.Var(newEnum(&a.logLevel, logging.Levels...), "log-level", "log level: "+strings.Join(logging.Levels, ", "))
	pf.Var(newEnum(&a.logFormat, logging.Formats...), "log-format", "log format: "+strings.Join(logging.Formats, ", "))

	root.AddCommand(
		newVersionCommand(a),
		newCACommand(a),
		newCertCommand(a),
		newCRLCommand(a),
		newUpCommand(a),
		newStatusCommand(a),
		newProbeCommand(a),
		newSimCommand(a),
	)
	return root
}

// usageError marks a mistake in the command line: run prints the command's
// usage after it.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// groupRunE runs a command that only groups sub-commands: with no argument
// it prints help, otherwise the argument is an unknown sub-command.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return &usageError{errors.New(msg)}
}

// withUsage makes an argument validator's errors usage errors.
func withUsage(validate cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := validate(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// requireFlags returns a usage error naming the first of flags that was not
// given.
func requireFlags(cmd *cobra.Command, names ...string) error {
	for _, n := range names {
		if !cmd.Flags().Changed(n) {
			return usageErrorf("--%s is required", n)
		}
	}
	return nil
}

// enumValue is a string flag restricted to a set of values.
type enumValue struct {
	value   *string
	allowed []string
}

func newEnum(p *string, allowed ...string) *enumValue {
	return &enumValue{value: p, allowed: allowed}
}

func (e *enumValue) String() string { return *e.value }
func (e *enumValue) Type() string   { return "string" }
func (e *enumValue) Set(s string) error {
	if !slices.Contains(e.allowed, s) {
		return fmt.Errorf("use %s", strings.Join(e.allowed, ", "))
	}
	*e.value = s
	return nil
}

var _ pflag.Value = (*enumValue)(nil)

// clockSkew is how far back the validity of new certificates starts, so
// that peers whose clocks lag a little accept them at once.
const clockSkew = time.Minute

// validityFlags are --validity and --not-after, which say when a new
// certificate expires.
type validityFlags struct {
	validity time.Duration
	notAfter string
}

func (v *validityFlags) register(fs *pflag.FlagSet, def time.Duration) {
	fs.DurationVar(&v.validity, "validity", def, "how long the certificate is valid, from now (e.g. 720h)")
	fs.StringVar(&v.notAfter, "not-after", "", "when the certificate expires, instead of --validity (RFC 3339, e.g. 2027-01-31T00:00:00Z, or a date)")
}

// end returns the expiry the flags ask for, for a certificate issued now.
func (v *validityFlags) end(cmd *cobra.Command, now time.Time) (time.Time, error) {
	fs := cmd.Flags()
	if fs.Changed("validity") && fs.Changed("not-after") {
		return time.Time{}, usageErrorf("--validity and --not-after both set; pass one of them")
	}
	if v.notAfter == "" {
		if v.validity <= 0 {
			return time.Time{}, usageErrorf("--validity %s: must be positive", v.validity)
		}
		return now.Add(v.validity), nil
	}
	t, err := time.Parse(time.RFC3339, v.notAfter)
	if err != nil {
		t, err = time.Parse(time.DateOnly, v.notAfter)
	}
	if err != nil {
		return time.Time{}, usageErrorf("--not-after %q: want a time like 2027-01-31T00:00:00Z or a date like 2027-01-31", v.notAfter)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--not-after %s is in the past", t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// checkFree refuses, unless force is set, to go on when one of paths
// exists, before any key is generated or file written.
func checkFree(force bool, paths ...string) error {
	if force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists; use --force to overwrite", p)
		}
	}
	return nil
}

// fmtTime formats a time for people: RFC 3339 in UTC.
func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
