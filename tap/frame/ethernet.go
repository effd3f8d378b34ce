package frame

import (
	"encoding/binary"
	"net"
	"strconv"
)

// Ethernet header sizes.
const (
	// EthernetHeaderLen is the length of an untagged Ethernet II header.
	EthernetHeaderLen = 14
	// VLANTagLen is the length of one 802.1Q tag.
	VLANTagLen = 4
)

// EtherType names the protocol an Ethernet frame carries.
type EtherType uint16

// EtherTypes this package knows.
const (
	TypeIPv4 EtherType = 0x0800
	TypeARP  EtherType = 0x0806
	TypeVLAN EtherType = 0x8100 // 802.1Q tag
	TypeIPv6 EtherType = 0x86DD
	TypeQinQ EtherType = 0x88A8 // 802.1ad service tag
)

func (t EtherType) String() string {
	switch t {
	case TypeIPv4:
		return "IPv4"
	case TypeARP:
		return "ARP"
	case TypeVLAN:
		return "802.1Q"
	case TypeIPv6:
		return "IPv6"
	case TypeQinQ:
		return "802.1ad"
	}
	return "0x" + strconv.FormatUint(uint64(t), 16)
}

// minEtherType is the smallest EtherType; smaller values are 802.3 lengths.
const minEtherType = 0x0600

// Ethernet is a parsed Ethernet II header. Dst, Src and Payload are views
// into the parsed frame.
type Ethernet struct {
	Dst, Src net.HardwareAddr
	// Type is the EtherType of the payload, after any VLAN tag.
	Type EtherType
	// Tagged reports an 802.1Q tag; VLAN is its tag control information
	// (priority: 3 bits, DEI: 1 bit, VLAN ID: 12 bits).
	Tagged bool
	VLAN   uint16
	// HeaderLen is 14, or 18 with a tag.
	HeaderLen int
	Payload   []byte
}

// VLANID is the 12-bit VLAN identifier of a tagged frame.
func (e Ethernet) VLANID() uint16 { return e.VLAN & 0x0fff }

// ParseEthernet parses the header of an Ethernet II frame without preamble
// or FCS, as a TAP device delivers it. One 802.1Q tag is reported in
// Tagged and VLAN; a second tag, an 802.1ad tag and 802.3 length fields are
// refused with ErrUnsupported.
func ParseEthernet(b []byte) (Ethernet, error) {
	if len(b) < EthernetHeaderLen {
		return Ethernet{}, errorf(ErrTruncated, "ethernet", "frame length %d below %d", len(b), EthernetHeaderLen)
	}
	e := Ethernet{
		Dst:       net.HardwareAddr(b[0:6:6]),
		Src:       net.HardwareAddr(b[6:12:12]),
		Type:      EtherType(binary.BigEndian.Uint16(b[12:14])),
		HeaderLen: EthernetHeaderLen,
	}
	if e.Type == TypeVLAN {
		if len(b) < EthernetHeaderLen+VLANTagLen {
			return Ethernet{}, errorf(ErrTruncated, "ethernet", "tagged frame length %d below %d", len(b), EthernetHeaderLen+VLANTagLen)
		}
		e.Tagged = true
		e.VLAN = binary.BigEndian.Uint16(b[14:16])
		e.Type = EtherType(binary.BigEndian.Uint16(b[16:18]))
		e.HeaderLen += VLANTagLen
	}
	switch {
	case e.Type == TypeVLAN || e.Type == TypeQinQ:
		return Ethernet{}, errorf(ErrUnsupported, "ethernet", "stacked VLAN tag (type %#04x) not supported", int(e.Type))
	case e.Type < minEtherType:
		return Ethernet{}, errorf(ErrUnsupported, "ethernet", "802.3 length field %d instead of an EtherType not supported", int(e.Type))
	}
	e.Payload = b[e.HeaderLen:]
	return e, nil
}

// AppendEthernet appends an untagged Ethernet II header to dst. to and from
// are six bytes long.
func AppendEthernet(dst []byte, to, from net.HardwareAddr, t EtherType) []byte {
	dst = appendMAC(dst, to)
	dst = appendMAC(dst, from)
	return binary.BigEndian.AppendUint16(dst, uint16(t))
}

// appendReplyHeader appends the Ethernet header of a reply to the frame
// eth heads: the addresses swapped, the same VLAN tag and EtherType.
func appendReplyHeader(dst []byte, eth Ethernet) []byte {
	if !eth.Tagged {
		return AppendEthernet(dst, eth.Src, eth.Dst, eth.Type)
	}
	dst = AppendEthernet(dst, eth.Src, eth.Dst, TypeVLAN)
	dst = binary.BigEndian.AppendUint16(dst, eth.VLAN)
	return binary.BigEndian.AppendUint16(dst, uint16(eth.Type))
}
