package firewall

import (
	"encoding/binary"
	"net/netip"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// Protocol numbers.
const (
	protoICMP   = frame.ProtoICMP
	protoTCP    = frame.ProtoTCP
	protoUDP    = frame.ProtoUDP
	protoICMPv6 = frame.ProtoICMPv6
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// kind says how the firewall treats a packet.
type kind uint8

const (
	// kindFlow: tracked by its flow (TCP, UDP, ICMP echo, any other
	// protocol).
	kindFlow kind = iota
	// kindICMP: an ICMP message that is neither echo nor an error: the
	// rules decide, and it is not tracked.
	kindICMP
	// kindError: an ICMP error quoting a packet: it passes if the quoted
	// packet's flow is known, else it is a kindICMP.
	kindError
	// kindNDP: an ICMPv6 neighbour solicitation or advertisement (hop
	// limit 255): the link's own plumbing, it always passes.
	kindNDP
	// kindFragment: a later fragment: it passes if its first fragment
	// did.
	kindFragment
)

// packet is what the firewall reads from an IP packet. Addresses are
// kept as 16 bytes (IPv4 mapped into IPv6), as flow keys hold them.
type packet struct {
	src, dst [16]byte
	v6       bool
	proto    uint8
	kind     kind
	tcpFlags uint8
	// sport and dport are the ports of TCP and UDP; ICMP echo puts its
	// identifier in both.
	sport, dport uint16
	// firstFragment: the packet is the first of a fragmented datagram;
	// fragID is the datagram's identification (first and later
	// fragments).
	firstFragment bool
	fragID        uint32
	// icmp is the ICMP message of a kindError.
	icmp []byte
}

// The IP parsers below accept exactly what tap/frame's ParseIPv4 and
// ParseIPv6 accept (a fuzz test holds them to it), but read only what
// the firewall needs, into a small struct, without allocating even for a
// malformed packet: the firewall's packet path is the VPN's.

// parse reads an IPv4 or IPv6 packet; false if it is malformed, or a
// fragment that RFC 1858 or RFC 7112 says to drop.
func (p *packet) parse(b []byte) bool {
	l4, ok := p.parseIP(b)
	if !ok {
		return false
	}
	if p.kind == kindFragment {
		return !(p.proto == protoTCP && !p.v6 && p.fragOffset8(b))
	}
	return p.parseTransport(l4)
}

// fragOffset8 reports an IPv4 fragment at offset 8: it would overwrite
// the TCP flags of its first fragment (RFC 1858).
func (p *packet) fragOffset8(b []byte) bool {
	return binary.BigEndian.Uint16(b[6:8])&0x1fff == 1
}

// parseIP reads the IP header (and IPv6 extension headers) and returns
// the upper-layer bytes.
func (p *packet) parseIP(b []byte) (l4 []byte, ok bool) {
	if len(b) == 0 {
		return nil, false
	}
	switch b[0] >> 4 {
	case 4:
		return p.parseIPv4(b)
	case 6:
		return p.parseIPv6(b)
	}
	return nil, false
}

func (p *packet) parseIPv4(b []byte) ([]byte, bool) {
	if len(b) < 20 {
		return nil, false
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < 20 || hl > len(b) || total < hl || total > len(b) {
		return nil, false
	}
	p.src, p.dst = mapped4(b[12:16]), mapped4(b[16:20])
	p.proto = b[9]
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&0x3fff != 0 { // more fragments, or an offset
		p.fragID = uint32(binary.BigEndian.Uint16(b[4:6]))
		if frag&0x1fff != 0 {
			p.kind = kindFragment
			return nil, true
		}
		p.firstFragment = true
	}
	return b[hl:total], true
}

// mapped4 returns an IPv4 address as an IPv4-mapped IPv6 address.
func mapped4(b []byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}
}

// IPv6 extension headers (RFC 8200 section 4), and how many the parser
// walks (as tap/frame does).
const (
	extHopByHop    = 0
	extRouting     = 43
	extFragment    = 44
	extAH          = 51
	extDestOptions = 60
	maxExtHeaders  = 8
)

func (p *packet) parseIPv6(b []byte) ([]byte, bool) {
	if len(b) < 40 {
		return nil, false
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if 40+plen > len(b) {
		return nil, false
	}
	p.v6 = true
	p.src, p.dst = [16]byte(b[8:24]), [16]byte(b[24:40])
	hopLimit := b[7]
	next, rest := b[6], b[40:40+plen]
	fragment, fragOffset, more := false, 0, false
	for i := 0; ; i++ {
		var hlen int
		switch next {
		case extHopByHop, extRouting, extDestOptions:
			if next == extHopByHop && i > 0 || len(rest) < 2 {
				return nil, false
			}
			hlen = (int(rest[1]) + 1) * 8
		case extAH:
			if len(rest) < 2 {
				return nil, false
			}
			hlen = (int(rest[1]) + 2) * 4
		case extFragment:
			hlen = 8
			if len(rest) >= hlen {
				off := binary.BigEndian.Uint16(rest[2:4])
				fragment, fragOffset, more = true, int(off>>3)*8, off&1 != 0
				p.fragID = binary.BigEndian.Uint32(rest[4:8])
			}
		default:
			p.proto = next
			if fragment && (more || fragOffset != 0) {
				p.firstFragment = true
			}
			if next == protoICMPv6 && len(rest) >= 1 && (rest[0] == 135 || rest[0] == 136) && hopLimit == 255 {
				p.kind = kindNDP // parseTransport checks the length
			}
			return rest, true
		}
		if hlen > len(rest) || i == maxExtHeaders {
			return nil, false
		}
		next, rest = rest[0], rest[hlen:]
		if fragment && fragOffset != 0 {
			p.proto, p.kind = next, kindFragment // no further headers in a later fragment
			return nil, true
		}
	}
}

// parseTransport reads the ports and classifies ICMP.
func (p *packet) parseTransport(l4 []byte) bool {
	switch {
	case p.proto == protoTCP:
		// A first fragment too must hold the whole header (RFC 7112
		// for IPv6; flags past the cut are how RFC 1858's attacks work).
		if len(l4) < 20 {
			return false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		p.tcpFlags = l4[13]
	case p.proto == protoUDP:
		if len(l4) < 8 {
			return false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case p.proto == protoICMP && !p.v6, p.proto == protoICMPv6 && p.v6:
		if len(l4) < 8 {
			return false
		}
		switch typ := l4[0]; {
		case p.kind == kindNDP:
		case isEcho(typ, p.v6):
			p.sport = binary.BigEndian.Uint16(l4[4:6])
			p.dport = p.sport
		case isError(typ, p.v6):
			p.kind, p.icmp = kindError, l4
		default:
			p.kind = kindICMP
		}
	}
	return true
}

// isEcho reports an echo request or reply.
func isEcho(typ uint8, v6 bool) bool {
	if v6 {
		return typ == 128 || typ == 129
	}
	return typ == 8 || typ == 0
}

// isError reports an ICMP error that quotes the packet it is about:
// destination unreachable (with fragmentation needed), time exceeded,
// parameter problem, and ICMPv6 packet too big.
func isError(typ uint8, v6 bool) bool {
	if v6 {
		return typ >= 1 && typ <= 4
	}
	return typ == 3 || typ == 11 || typ == 12
}

// flowKey names a flow the same way in both directions: this member's
// side, then the peer's. It holds no pointer and no padding, so the map
// hashes and compares it as plain memory.
type flowKey struct {
	local, remote [16]byte
	lport, rport  uint16
	proto         uint8
	v6            bool
}

// keyOf returns the key of the flow a packet from src to dst in
// direction d belongs to.
func keyOf(d dir, v6 bool, src, dst [16]byte, proto uint8, sport, dport uint16) flowKey {
	if d == dirIn {
		return flowKey{local: dst, remote: src, lport: dport, rport: sport, proto: proto, v6: v6}
	}
	return flowKey{local: src, remote: dst, lport: sport, rport: dport, proto: proto, v6: v6}
}

// ipOf returns an address of a key as a netip.Addr.
func ipOf(b [16]byte, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte(b[12:16]))
}

// relatedKey returns the key of the flow an ICMP error (p, direction d)
// is about: the flow of the packet it quotes, which went the other way.
// false if the quote can't be read (an IPv6 packet with extension
// headers, a later fragment, an ICMP message other than echo), or the
// error does not go to the quoted packet's source.
func (p *packet) relatedKey(d dir) (flowKey, bool) {
	b := p.icmp[8:]
	var q packet
	q.v6 = p.v6
	var l4 []byte
	if !p.v6 {
		if len(b) < 20 || b[0]>>4 != 4 {
			return flowKey{}, false
		}
		hl := int(b[0]&0x0f) * 4
		if hl < 20 || len(b) < hl+8 || binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return flowKey{}, false
		}
		q.src, q.dst, q.proto, l4 = mapped4(b[12:16]), mapped4(b[16:20]), b[9], b[hl:]
	} else {
		if len(b) < 48 || b[0]>>4 != 6 {
			return flowKey{}, false
		}
		q.src, q.dst, q.proto, l4 = [16]byte(b[8:24]), [16]byte(b[24:40]), b[6], b[40:]
	}
	if q.src != p.dst {
		return flowKey{}, false
	}
	switch {
	case q.proto == protoTCP, q.proto == protoUDP:
		q.sport, q.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case q.proto == protoICMP && !q.v6, q.proto == protoICMPv6 && q.v6:
		if !isEcho(l4[0], q.v6) {
			return flowKey{}, false // an error about an error, or the like
		}
		q.sport = binary.BigEndian.Uint16(l4[4:6])
		q.dport = q.sport
	case q.v6 && isExtension(q.proto):
		return flowKey{}, false
	}
	return keyOf(d^1, q.v6, q.src, q.dst, q.proto, q.sport, q.dport), true
}

func isExtension(proto uint8) bool {
	switch proto {
	case extHopByHop, extRouting, extFragment, extAH, extDestOptions:
		return true
	}
	return false
}
