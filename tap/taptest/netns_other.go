//go:build !linux

package taptest

import "testing"

// LockNetns skips t: network namespaces exist only on Linux.
func LockNetns(t testing.TB) {
	t.Helper()
	t.Skip("needs Linux network namespaces")
}
