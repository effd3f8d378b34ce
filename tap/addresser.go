package tap

import "net/netip"

// Addresser is implemented by devices whose interface addresses can
// change while they run (the TAP device): the VPN adds an address leased
// from a pool once it has it. Safe for concurrent use.
type Addresser interface {
	// AddAddress assigns p to the interface (replacing the same address).
	AddAddress(p netip.Prefix) error
	// RemoveAddress takes p off the interface.
	RemoveAddress(p netip.Prefix) error
}
