package taptest

import (
	"os"
	"testing"
)

// RequireRoot skips t unless it runs as root on a machine with
// /dev/net/tun.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root and /dev/net/tun: run the tests as root (sudo -E go test ...)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs root and /dev/net/tun: %v (modprobe tun, or --device /dev/net/tun in a container)", err)
	}
}
