package taptest

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// LockNetns moves the calling goroutine into a fresh, empty network
// namespace for the rest of its life: it locks the goroutine to its thread
// and unshares the thread's network namespace. Call it first thing in the
// test (or subtest) function, after RequireRoot.
//
// Only this goroutine is in the namespace. Interfaces, sockets and TAP
// devices created from it stay in the namespace and may then be used from
// any goroutine; commands started from it (os/exec) run in it too. The
// thread is never unlocked, so when the test function returns the runtime
// ends the thread, and the namespace disappears once the last socket or
// device in it is closed — even if the test failed half-way.
func LockNetns(t testing.TB) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare network namespace: %v", err)
	}
}
