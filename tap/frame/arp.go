package frame

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// ARP operations.
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARPLen is the length of an ARP packet for IPv4 over Ethernet.
const ARPLen = 28

// ARP is an ARP request or reply for IPv4 over Ethernet (RFC 826):
//
//	 0        2        4    5    6        8
//	+--------+--------+----+----+--------+
//	| htype 1| 0x0800 | 6  | 4  | op     |
//	+--------+--------+----+----+--------+-------------------+
//	| sender MAC (6)  | sender IPv4 (4)  | target MAC (6)    |
//	+-----------------+------------------+-------------------+
//	| target IPv4 (4) |
//	+-----------------+
//
// The MACs of a parsed ARP are views into the parsed packet.
type ARP struct {
	Op        uint16
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// IsGratuitous reports an announcement of the sender's own address.
func (a ARP) IsGratuitous() bool { return a.SenderIP == a.TargetIP }

// ParseARP parses the payload of an Ethernet frame of type ARP. Only
// requests and replies for IPv4 over Ethernet are accepted; bytes after the
// 28 of the packet (Ethernet padding) are ignored.
func ParseARP(b []byte) (ARP, error) {
	if len(b) < ARPLen {
		return ARP{}, errorf(ErrTruncated, "arp", "packet length %d below %d", len(b), ARPLen)
	}
	if h := binary.BigEndian.Uint16(b[0:2]); h != 1 {
		return ARP{}, errorf(ErrUnsupported, "arp", "hardware type %d is not Ethernet (1)", int(h))
	}
	if p := binary.BigEndian.Uint16(b[2:4]); p != uint16(TypeIPv4) {
		return ARP{}, errorf(ErrUnsupported, "arp", "protocol type %#04x is not IPv4 (0x0800)", int(p))
	}
	if b[4] != MACLen || b[5] != 4 {
		return ARP{}, errorf(ErrMalformed, "arp", "address lengths %d and %d are not 6 and 4", int(b[4]), int(b[5]))
	}
	a := ARP{
		Op:        binary.BigEndian.Uint16(b[6:8]),
		SenderMAC: net.HardwareAddr(b[8:14:14]),
		SenderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		TargetMAC: net.HardwareAddr(b[18:24:24]),
		TargetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}
	if a.Op != ARPRequest && a.Op != ARPReply {
		return ARP{}, errorf(ErrUnsupported, "arp", "operation %d is neither request (1) nor reply (2)", int(a.Op))
	}
	return a, nil
}

// AppendARP appends an Ethernet frame carrying a, sent from a.SenderMAC to
// the Ethernet address to (ff:ff:ff:ff:ff:ff for a request). The frame is
// 42 bytes: a TAP device needs no padding to the 60-byte Ethernet minimum.
// SenderIP and TargetIP are IPv4 addresses.
func AppendARP(dst []byte, to net.HardwareAddr, a ARP) []byte {
	dst = AppendEthernet(dst, to, a.SenderMAC, TypeARP)
	dst = append(dst, 0, 1, 0x08, 0x00, MACLen, 4)
	dst = binary.BigEndian.AppendUint16(dst, a.Op)
	dst = appendMAC(dst, a.SenderMAC)
	s := as4(a.SenderIP)
	dst = append(dst, s[:]...)
	dst = appendMAC(dst, a.TargetMAC)
	t := as4(a.TargetIP)
	return append(dst, t[:]...)
}

// AppendARPReply appends the Ethernet frame that answers the request req
// with "req.TargetIP is at mac", addressed to the requester. The VPN uses
// it to answer requests for virtual addresses without sending them over
// the overlay.
func AppendARPReply(dst []byte, req ARP, mac net.HardwareAddr) []byte {
	return AppendARP(dst, req.SenderMAC, ARP{
		Op:        ARPReply,
		SenderMAC: mac,
		SenderIP:  req.TargetIP,
		TargetMAC: req.SenderMAC,
		TargetIP:  req.SenderIP,
	})
}
