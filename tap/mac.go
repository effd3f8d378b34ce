package tap

import (
	"crypto/sha256"
	"net"
)

// MACFromBytes derives a stable, locally administered, unicast Ethernet
// address from b, e.g. a node's overlay address: the same b gives the same
// MAC on every start, so the ARP and neighbour caches of the node and its
// peers stay right across restarts. b is hashed first, so any input
// spreads over the 46 free bits; the first byte has the locally
// administered bit set and the group bit clear (RFC 7042 2.1).
func MACFromBytes(b []byte) net.HardwareAddr {
	h := sha256.Sum256(b)
	mac := make(net.HardwareAddr, 6)
	copy(mac, h[:])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}
