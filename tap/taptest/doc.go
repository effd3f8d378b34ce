// Package taptest helps tests that need a real TAP device: RequireRoot
// skips them where that is impossible, and LockNetns runs them in a
// network namespace of their own. The in-memory device is
// tap.NewChannelPair; this package stays free of package tap so that tap's
// own tests can use it.
package taptest
