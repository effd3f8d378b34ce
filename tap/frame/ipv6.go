package frame

import (
	"encoding/binary"
	"net/netip"
)

// IPv6HeaderLen is the length of the fixed IPv6 header.
const IPv6HeaderLen = 40

// IPv6 extension header numbers (RFC 8200 section 4).
const (
	protoHopByHop    uint8 = 0
	protoRouting     uint8 = 43
	protoFragment    uint8 = 44
	protoESP         uint8 = 50
	protoAH          uint8 = 51
	protoNoNext      uint8 = 59
	protoDestOptions uint8 = 60
)

// maxExtHeaders bounds the extension headers ParseIPv6 walks through. A
// real packet has a few; a crafted one with hundreds of empty options
// headers must not make the parser loop for long.
const maxExtHeaders = 8

// IPv6 is a parsed IPv6 header (RFC 8200) with its extension headers
// skipped:
//
//	 0       4               12                                    32
//	+-------+---------------+--------------------------------------+
//	|version| traffic class |             flow label               |
//	+-------+---------------+-------+--------------+---------------+
//	|        payload length         | next header  |   hop limit   |
//	+-------------------------------+--------------+---------------+
//	|                source address (16 bytes)                     |
//	|              destination address (16 bytes)                  |
//	+---------------------------------------------------------------+
//	| extension headers ... | upper-layer header and data ...       |
//
// Payload and Upper are views into the parsed packet.
type IPv6 struct {
	TrafficClass uint8
	FlowLabel    uint32
	PayloadLen   int
	NextHeader   uint8 // of the fixed header
	HopLimit     uint8
	Src, Dst     netip.Addr
	// Protocol is the upper-layer protocol, found after the extension
	// headers (NextHeader when there are none). 59 means no next header;
	// 50 (ESP) is opaque and reported as the upper layer.
	Protocol uint8
	// Fragment reports a fragment header. Only a first fragment
	// (FragOffset 0) holds the upper-layer header; for a later one Upper
	// is fragment data.
	Fragment      bool
	FragOffset    int // in bytes
	MoreFragments bool
	// Payload is everything after the fixed header (PayloadLen bytes;
	// bytes past it, Ethernet padding, are excluded). Upper is its part
	// after the extension headers.
	Payload []byte
	Upper   []byte
}

// IsFragment reports whether the packet is part of a fragmented datagram.
func (p IPv6) IsFragment() bool { return p.Fragment && (p.MoreFragments || p.FragOffset != 0) }

// ParseIPv6 parses an IPv6 packet: b starts at the IP header and may run
// past the packet. It walks at most 8 extension headers (hop-by-hop
// options only first, as RFC 8200 requires) to find the upper-layer
// protocol. Jumbograms are not supported.
func ParseIPv6(b []byte) (IPv6, error) {
	if len(b) < IPv6HeaderLen {
		return IPv6{}, errorf(ErrTruncated, "ipv6", "packet length %d below %d", len(b), IPv6HeaderLen)
	}
	if v := b[0] >> 4; v != 6 {
		return IPv6{}, errorf(ErrMalformed, "ipv6", "version %d is not 6", int(v))
	}
	vtf := binary.BigEndian.Uint32(b[0:4])
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if IPv6HeaderLen+plen > len(b) {
		return IPv6{}, errorf(ErrTruncated, "ipv6", "payload length %d exceeds the %d bytes after the header", plen, len(b)-IPv6HeaderLen)
	}
	p := IPv6{
		TrafficClass: uint8(vtf >> 20),
		FlowLabel:    vtf & 0xfffff,
		PayloadLen:   plen,
		NextHeader:   b[6],
		HopLimit:     b[7],
		Src:          netip.AddrFrom16([16]byte(b[8:24])),
		Dst:          netip.AddrFrom16([16]byte(b[24:40])),
		Payload:      b[IPv6HeaderLen : IPv6HeaderLen+plen : IPv6HeaderLen+plen],
	}
	if err := p.skipExtensions(); err != nil {
		return IPv6{}, err
	}
	return p, nil
}

// skipExtensions sets Protocol, Upper and the fragment fields.
func (p *IPv6) skipExtensions() error {
	next, rest := p.NextHeader, p.Payload
	for i := 0; ; i++ {
		var hlen int
		switch next {
		case protoHopByHop, protoRouting, protoDestOptions:
			if next == protoHopByHop && i > 0 {
				return errorf(ErrMalformed, "ipv6", "hop-by-hop options header at position %d, not first", i)
			}
			if len(rest) < 2 {
				return errorf(ErrTruncated, "ipv6", "extension header %d cut short at %d bytes", int(next), len(rest))
			}
			hlen = (int(rest[1]) + 1) * 8
		case protoAH:
			if len(rest) < 2 {
				return errorf(ErrTruncated, "ipv6", "extension header %d cut short at %d bytes", int(next), len(rest))
			}
			hlen = (int(rest[1]) + 2) * 4
		case protoFragment:
			hlen = 8
			if len(rest) >= hlen {
				off := binary.BigEndian.Uint16(rest[2:4])
				p.Fragment = true
				p.FragOffset = int(off>>3) * 8
				p.MoreFragments = off&1 != 0
			}
		default:
			p.Protocol, p.Upper = next, rest
			return nil
		}
		if hlen > len(rest) {
			return errorf(ErrTruncated, "ipv6", "extension header length %d exceeds the %d bytes left", hlen, len(rest))
		}
		if i == maxExtHeaders {
			return errorf(ErrUnsupported, "ipv6", "more than %d extension headers", maxExtHeaders)
		}
		next, rest = rest[0], rest[hlen:]
		if p.Fragment && p.FragOffset != 0 {
			// A later fragment carries no further headers to walk.
			p.Protocol, p.Upper = next, rest
			return nil
		}
	}
}

// appendIPv6Header appends a fixed IPv6 header for a payload of
// payloadLen bytes.
func appendIPv6Header(dst []byte, next, hopLimit uint8, src, dstIP netip.Addr, payloadLen int) []byte {
	dst = append(dst, 0x60, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(payloadLen))
	dst = append(dst, next, hopLimit)
	s, d := src.As16(), dstIP.As16()
	dst = append(dst, s[:]...)
	return append(dst, d[:]...)
}
