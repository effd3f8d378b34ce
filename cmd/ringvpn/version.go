package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is ringvpn's version, set at build time with
// -ldflags "-X main.version=v1.2.3". When empty, the module version from the
// build information is used, or "dev".
var version = ""

const dtlsModule = "github.com/pion/dtls/v3"

// versionInfo returns ringvpn's version and the version of the DTLS
// library linked in ("not linked" if none is).
func versionInfo() (ringvpn, dtls string) {
	ringvpn, dtls = version, "not linked"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if ringvpn == "" {
			ringvpn = "dev"
		}
		return ringvpn, dtls
	}
	if ringvpn == "" {
		ringvpn = bi.Main.Version
		if ringvpn == "" || ringvpn == "(devel)" {
			ringvpn = "dev"
		}
	}
	for _, dep := range bi.Deps {
		if dep.Path != dtlsModule {
			continue
		}
		dtls = dep.Version
		if dep.Replace != nil {
			dtls = fmt.Sprintf("%s (replaced by %s %s)", dep.Version, dep.Replace.Path, dep.Replace.Version)
		}
	}
	return ringvpn, dtls
}

func newVersionCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of ringvpn, Go and pion/dtls",
		Args:  withUsage(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			rv, dv := versionInfo()
			_, err := fmt.Fprintf(a.stdout, "ringvpn    %s\ngo         %s %s/%s\npion/dtls  %s\n",
				rv, runtime.Version(), runtime.GOOS, runtime.GOARCH, dv)
			return err
		},
	}
}
