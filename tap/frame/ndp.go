package frame

import (
	"net"
	"net/netip"
)

// ICMPv6 neighbour discovery (RFC 4861).
const (
	icmpv6NeighborSolicitation  = 135
	icmpv6NeighborAdvertisement = 136
	// ndpLen is the length of a solicitation or an advertisement without
	// options: type, code, checksum, 4 bytes of flags or reserved, target.
	ndpLen = 24
	// Option types.
	ndpOptSourceLinkAddr = 1
	ndpOptTargetLinkAddr = 2
	// ndpHopLimit is the hop limit every NDP message has, which proves it
	// was not forwarded by a router.
	ndpHopLimit = 255
	// Advertisement flags.
	naSolicited = 0x40
	naOverride  = 0x20
)

// allNodes is ff02::1, where an advertisement answering duplicate address
// detection goes.
var allNodes = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x01})

// NeighborSolicitation is an ICMPv6 neighbour solicitation:
//
//	 0        1        2                 4                        8
//	+--------+--------+-----------------+------------------------+
//	| 135    | code 0 | checksum        | reserved               |
//	+--------+--------+-----------------+------------------------+
//	| target address (16 bytes)                                  |
//	+--------+--------+------------------------------------------+
//	| type 1 | len 1  | source link-layer address (6) | options...
//	+--------+--------+-------------------------------+----------
//
// SourceLinkAddr is a view into the parsed packet.
type NeighborSolicitation struct {
	// Src and Dst are the IPv6 addresses of the packet. Src is
	// unspecified for duplicate address detection.
	Src, Dst netip.Addr
	// Target is the address whose link-layer address is asked for.
	Target netip.Addr
	// SourceLinkAddr is the solicitor's MAC from the source link-layer
	// address option; nil when the option is absent.
	SourceLinkAddr net.HardwareAddr
}

// ParseNeighborSolicitation parses the ICMPv6 message of ip as a neighbour
// solicitation and validates it as RFC 4861 section 7.1.1 asks: hop limit
// 255, a correct checksum, code 0, a unicast target, well-formed options,
// and for duplicate address detection a solicited-node destination and no
// source link-layer address.
func ParseNeighborSolicitation(ip IPv6) (NeighborSolicitation, error) {
	if ip.Protocol != ProtoICMPv6 || ip.IsFragment() {
		return NeighborSolicitation{}, errorf(ErrUnsupported, "ipv6", "upper-layer protocol %d is not ICMPv6 (58)", int(ip.Protocol))
	}
	m := ip.Upper
	switch {
	case len(m) < ndpLen:
		return NeighborSolicitation{}, errorf(ErrTruncated, "icmpv6", "neighbour solicitation length %d below %d", len(m), ndpLen)
	case m[0] != icmpv6NeighborSolicitation:
		return NeighborSolicitation{}, errorf(ErrUnsupported, "icmpv6", "type %d is not a neighbour solicitation (135)", int(m[0]))
	case m[1] != 0:
		return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "neighbour solicitation code %d is not 0", int(m[1]))
	case ip.HopLimit != ndpHopLimit:
		return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "neighbour solicitation hop limit %d is not 255", int(ip.HopLimit))
	case Checksum(m, PseudoHeaderSum(ProtoICMPv6, ip.Src, ip.Dst, len(m))) != 0:
		return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "neighbour solicitation checksum %#04x is wrong", int(m[2])<<8|int(m[3]))
	}
	ns := NeighborSolicitation{
		Src:    ip.Src,
		Dst:    ip.Dst,
		Target: netip.AddrFrom16([16]byte(m[8:24])),
	}
	if ns.Target.IsMulticast() {
		return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "neighbour solicitation target is a multicast address")
	}
	for opts := m[ndpLen:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 {
			return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "option of length 0 or cut short at %d bytes", len(opts))
		}
		olen := int(opts[1]) * 8
		if olen > len(opts) {
			return NeighborSolicitation{}, errorf(ErrTruncated, "icmpv6", "option length %d exceeds the %d bytes left", olen, len(opts))
		}
		if opts[0] == ndpOptSourceLinkAddr && olen == 8 {
			ns.SourceLinkAddr = net.HardwareAddr(opts[2:8:8])
		}
		opts = opts[olen:]
	}
	if ns.Src.IsUnspecified() {
		if !isSolicitedNode(ns.Dst) {
			return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "duplicate address detection not sent to a solicited-node address")
		}
		if ns.SourceLinkAddr != nil {
			return NeighborSolicitation{}, errorf(ErrMalformed, "icmpv6", "duplicate address detection with a source link-layer address")
		}
	}
	return ns, nil
}

// isSolicitedNode reports whether ip is in ff02::1:ff00:0/104.
func isSolicitedNode(ip netip.Addr) bool {
	a := ip.As16()
	return ip.Is6() && a == [16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]}
}

// AppendNeighborAdvertisement appends the Ethernet frame that answers ns
// with "ns.Target is at mac": a solicited advertisement with the override
// flag and a target link-layer address option, from ns.Target to the
// solicitor. It goes to the solicitor's MAC from its source link-layer
// address option, or to ethSrc (the Ethernet source of the solicitation)
// when it has none. A solicitation for duplicate address detection is
// answered unsolicited to all nodes (RFC 4861 7.2.4): the target is taken.
// The VPN uses it to answer for virtual addresses without sending the
// solicitation over the overlay.
func AppendNeighborAdvertisement(dst []byte, ns NeighborSolicitation, ethSrc, mac net.HardwareAddr) []byte {
	to, toMAC, flags := ns.Src, ethSrc, byte(naSolicited|naOverride)
	if ns.SourceLinkAddr != nil {
		toMAC = ns.SourceLinkAddr
	}
	if ns.Src.IsUnspecified() {
		m := multicastMAC(allNodes)
		to, toMAC, flags = allNodes, m[:], naOverride
	}
	const icmpLen = ndpLen + 8

	dst = AppendEthernet(dst, toMAC, mac, TypeIPv6)
	dst = appendIPv6Header(dst, ProtoICMPv6, ndpHopLimit, ns.Target, to, icmpLen)
	start := len(dst)
	dst = append(dst, icmpv6NeighborAdvertisement, 0, 0, 0, flags, 0, 0, 0)
	t := ns.Target.As16()
	dst = append(dst, t[:]...)
	dst = append(dst, ndpOptTargetLinkAddr, 1)
	dst = appendMAC(dst, mac)
	c := Checksum(dst[start:], PseudoHeaderSum(ProtoICMPv6, ns.Target, to, icmpLen))
	dst[start+2], dst[start+3] = byte(c>>8), byte(c)
	return dst
}
