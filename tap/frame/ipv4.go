package frame

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers this package looks at.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// IPv4HeaderLen is the length of an IPv4 header without options.
const IPv4HeaderLen = 20

// IPv4 is a parsed IPv4 header (RFC 791):
//
//	 0       4       8              16    19                       32
//	+-------+-------+---------------+-----------------------------+
//	|version|  IHL  |     TOS       |        total length         |
//	+-------+-------+---------------+-----+-----------------------+
//	|         identification        |flags|   fragment offset     |
//	+---------------+---------------+-----+-----------------------+
//	|      TTL      |   protocol    |      header checksum        |
//	+---------------+---------------+-----------------------------+
//	|                      source address                         |
//	|                    destination address                      |
//	|                 options (IHL > 5) ...                       |
//
// Header and Payload are views into the parsed packet.
type IPv4 struct {
	HeaderLen     int // IHL in bytes, 20..60
	TOS           uint8
	TotalLen      int
	ID            uint16
	DontFragment  bool
	MoreFragments bool
	FragOffset    int // in bytes
	TTL           uint8
	Protocol      uint8
	Checksum      uint16
	Src, Dst      netip.Addr
	// Header is the header with its options, Payload the bytes after it up
	// to TotalLen: bytes past TotalLen (Ethernet padding) are in neither.
	Header  []byte
	Payload []byte
}

// ChecksumValid reports whether the header checksum is correct. Parsing
// does not check it: packets from the local kernel are correct, and for
// packets from peers the authenticated transport already vouches for the
// bytes.
func (p IPv4) ChecksumValid() bool { return Checksum(p.Header, 0) == 0 }

// IsFragment reports whether the packet is part of a fragmented datagram.
func (p IPv4) IsFragment() bool { return p.MoreFragments || p.FragOffset != 0 }

// ParseIPv4 parses an IPv4 packet: b starts at the IP header and may run
// past the packet's total length.
func ParseIPv4(b []byte) (IPv4, error) {
	if len(b) < IPv4HeaderLen {
		return IPv4{}, errorf(ErrTruncated, "ipv4", "packet length %d below %d", len(b), IPv4HeaderLen)
	}
	if v := b[0] >> 4; v != 4 {
		return IPv4{}, errorf(ErrMalformed, "ipv4", "version %d is not 4", int(v))
	}
	hl := int(b[0]&0x0f) * 4
	if hl < IPv4HeaderLen {
		return IPv4{}, errorf(ErrMalformed, "ipv4", "header length %d below %d", hl, IPv4HeaderLen)
	}
	if hl > len(b) {
		return IPv4{}, errorf(ErrTruncated, "ipv4", "header length %d exceeds packet length %d", hl, len(b))
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < hl {
		return IPv4{}, errorf(ErrMalformed, "ipv4", "total length %d below header length %d", total, hl)
	}
	if total > len(b) {
		return IPv4{}, errorf(ErrTruncated, "ipv4", "total length %d exceeds packet length %d", total, len(b))
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	return IPv4{
		HeaderLen:     hl,
		TOS:           b[1],
		TotalLen:      total,
		ID:            binary.BigEndian.Uint16(b[4:6]),
		DontFragment:  frag&0x4000 != 0,
		MoreFragments: frag&0x2000 != 0,
		FragOffset:    int(frag&0x1fff) * 8,
		TTL:           b[8],
		Protocol:      b[9],
		Checksum:      binary.BigEndian.Uint16(b[10:12]),
		Src:           netip.AddrFrom4([4]byte(b[12:16])),
		Dst:           netip.AddrFrom4([4]byte(b[16:20])),
		Header:        b[:hl:hl],
		Payload:       b[hl:total:total],
	}, nil
}

// appendIPv4Header appends a 20-byte IPv4 header with its checksum for a
// packet whose payload is payloadLen bytes.
func appendIPv4Header(dst []byte, tos, ttl, proto uint8, src, dstIP netip.Addr, payloadLen int) []byte {
	start := len(dst)
	s, d := as4(src), as4(dstIP)
	dst = append(dst, 0x45, tos)
	dst = binary.BigEndian.AppendUint16(dst, uint16(IPv4HeaderLen+payloadLen))
	// ID 0 with DF set: an atomic datagram, whose ID nobody reads
	// (RFC 6864). Builders here make packets of at most 1280 bytes.
	dst = append(dst, 0, 0, 0x40, 0, ttl, proto, 0, 0)
	dst = append(dst, s[:]...)
	dst = append(dst, d[:]...)
	binary.BigEndian.PutUint16(dst[start+10:], Checksum(dst[start:], 0))
	return dst
}
