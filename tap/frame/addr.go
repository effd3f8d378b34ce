package frame

import "net/netip"

// as4 is ip.As4 without the panic on an IPv6 or zero address (zeros
// instead): builders must not panic on a caller's mistake.
func as4(ip netip.Addr) [4]byte {
	if ip.Is4() || ip.Is4In6() {
		return ip.As4()
	}
	return [4]byte{}
}
