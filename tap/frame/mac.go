package frame

import (
	"net"
	"net/netip"
)

// MACLen is the length of an Ethernet (EUI-48) address.
const MACLen = 6

// IsBroadcast reports whether mac is ff:ff:ff:ff:ff:ff.
func IsBroadcast(mac net.HardwareAddr) bool {
	if len(mac) != MACLen {
		return false
	}
	for _, b := range mac {
		if b != 0xff {
			return false
		}
	}
	return true
}

// IsMulticast reports whether mac is a group address (the I/G bit, the
// least significant bit of the first byte, is set). Broadcast is a group
// address too.
func IsMulticast(mac net.HardwareAddr) bool {
	return len(mac) == MACLen && mac[0]&0x01 != 0
}

// multicastMAC is the Ethernet group address an IPv6 multicast address maps
// to (RFC 2464 section 7): 33:33 and the address's last 32 bits.
func multicastMAC(ip netip.Addr) [MACLen]byte {
	a := ip.As16()
	return [MACLen]byte{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// appendMAC appends mac as exactly six bytes, so a frame keeps its layout
// even if a caller passes an address of the wrong length.
func appendMAC(dst []byte, mac net.HardwareAddr) []byte {
	var m [MACLen]byte
	copy(m[:], mac)
	return append(dst, m[:]...)
}
