package frame

import (
	"encoding/binary"
	"net/netip"
)

// Limits of the ICMP errors AppendTooBig builds.
const (
	// icmpv4ErrorMax is the largest IPv4 packet carrying an ICMP error:
	// as much of the original as fits in 576 bytes (RFC 1812 4.3.2.3).
	icmpv4ErrorMax = 576
	// icmpv6ErrorMax is the largest IPv6 packet carrying an ICMPv6 error:
	// the IPv6 minimum MTU (RFC 4443 section 2.4 (c)).
	icmpv6ErrorMax = 1280
	// icmpHeaderLen is the length of an ICMP or ICMPv6 error header.
	icmpHeaderLen = 8
	// errorTTL is the TTL or hop limit of the errors built here.
	errorTTL = 64
	// minMTU4 and minMTU6 are the smallest MTUs IPv4 and IPv6 allow.
	minMTU4 = 68
	minMTU6 = 1280
)

// AppendTooBig appends to dst the Ethernet frame that tells the sender of
// frame that its packet exceeds mtu, the largest IP packet the path takes.
// This is what makes path MTU discovery work through the VPN instead of
// black-holing large packets:
//   - for IPv4, an ICMP "fragmentation needed" (type 3 code 4, RFC 1191)
//     with the next-hop MTU, quoting as much of the packet as fits in 576
//     bytes;
//   - for IPv6, an ICMPv6 "packet too big" (type 2, RFC 4443) with the MTU,
//     quoting as much of the packet as fits in 1280 bytes.
//
// The reply goes back the way the packet came: the MACs are swapped, the
// VLAN tag if any is kept, and it comes from src, or from the packet's
// destination when src is the zero Addr.
//
// It returns an error wrapping ErrSuppressed, and no frame, when the RFCs
// forbid the reply: the packet fits mtu, an IPv4 packet lacks the
// don't-fragment bit (the sender lets routers fragment it), it is an ICMP
// error itself or a later fragment, or it comes from or goes to an address
// no error may be sent about (unspecified, broadcast, multicast). Other
// errors come from parsing frame.
func AppendTooBig(dst, frame []byte, mtu int, src netip.Addr) ([]byte, error) {
	eth, err := ParseEthernet(frame)
	if err != nil {
		return dst, err
	}
	if eth.Type != TypeIPv4 && eth.Type != TypeIPv6 {
		return dst, errorf(ErrUnsupported, "ethernet", "type %#04x is not IP", int(eth.Type))
	}
	if IsMulticast(eth.Dst) || IsMulticast(eth.Src) {
		return dst, errorf(ErrSuppressed, "ethernet", "no ICMP error about a frame to or from a group address")
	}
	if eth.Type == TypeIPv4 {
		return appendFragNeeded(dst, eth, mtu, src)
	}
	return appendPacketTooBig(dst, eth, mtu, src)
}

func appendFragNeeded(dst []byte, eth Ethernet, mtu int, src netip.Addr) ([]byte, error) {
	ip, err := ParseIPv4(eth.Payload)
	switch {
	case err != nil:
		return dst, err
	case mtu < minMTU4 || mtu > 0xffff:
		return dst, errorf(ErrMalformed, "ipv4", "MTU %d not in [%d,65535]", mtu, minMTU4)
	case ip.TotalLen <= mtu:
		return dst, errorf(ErrSuppressed, "ipv4", "packet of %d bytes fits the MTU %d", ip.TotalLen, mtu)
	case !ip.DontFragment:
		return dst, errorf(ErrSuppressed, "ipv4", "don't-fragment bit clear: fragment the packet or drop it")
	case ip.FragOffset != 0:
		return dst, errorf(ErrSuppressed, "ipv4", "no ICMP error about a later fragment (offset %d)", ip.FragOffset)
	case !unicast4(ip.Src) || !unicast4(ip.Dst):
		return dst, errorf(ErrSuppressed, "ipv4", "no ICMP error about a packet from or to a non-unicast address")
	case ip.Protocol == ProtoICMP && isICMPv4Error(ip.Payload):
		return dst, errorf(ErrSuppressed, "icmp", "no ICMP error about an ICMP error (type %d)", int(ip.Payload[0]))
	}
	if !src.IsValid() {
		src = ip.Dst
	} else if !src.Is4() {
		return dst, errorf(ErrMalformed, "ipv4", "reply source is not an IPv4 address")
	}
	quote := eth.Payload[:min(ip.TotalLen, icmpv4ErrorMax-IPv4HeaderLen-icmpHeaderLen)]

	dst = appendReplyHeader(dst, eth)
	// Precedence "internetwork control", as routers mark ICMP errors.
	dst = appendIPv4Header(dst, 0xc0, errorTTL, ProtoICMP, src, ip.Src, icmpHeaderLen+len(quote))
	start := len(dst)
	dst = append(dst, 3, 4, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(mtu))
	dst = append(dst, quote...)
	binary.BigEndian.PutUint16(dst[start+2:], Checksum(dst[start:], 0))
	return dst, nil
}

func appendPacketTooBig(dst []byte, eth Ethernet, mtu int, src netip.Addr) ([]byte, error) {
	ip, err := ParseIPv6(eth.Payload)
	switch {
	case err != nil:
		return dst, err
	case mtu < minMTU6 || mtu > 0xffff:
		return dst, errorf(ErrMalformed, "ipv6", "MTU %d not in [%d,65535]", mtu, minMTU6)
	case IPv6HeaderLen+ip.PayloadLen <= mtu:
		return dst, errorf(ErrSuppressed, "ipv6", "packet of %d bytes fits the MTU %d", IPv6HeaderLen+ip.PayloadLen, mtu)
	case ip.Src.IsUnspecified() || ip.Src.IsMulticast():
		return dst, errorf(ErrSuppressed, "ipv6", "no ICMPv6 error to an unspecified or multicast source")
	case ip.Protocol == ProtoICMPv6 && !ip.IsFragment() && len(ip.Upper) > 0 && ip.Upper[0] < 128:
		return dst, errorf(ErrSuppressed, "icmpv6", "no ICMPv6 error about an ICMPv6 error (type %d)", int(ip.Upper[0]))
	}
	if !src.IsValid() {
		// Packet too big may answer a multicast packet (RFC 4443 2.4 (e)),
		// but not from the multicast address: the caller names a router.
		if ip.Dst.IsMulticast() {
			return dst, errorf(ErrMalformed, "ipv6", "a packet to a multicast group needs a unicast reply source")
		}
		src = ip.Dst
	} else if !src.Is6() || src.Is4In6() || src.IsMulticast() {
		return dst, errorf(ErrMalformed, "ipv6", "reply source is not a unicast IPv6 address")
	}
	quote := eth.Payload[:min(IPv6HeaderLen+ip.PayloadLen, icmpv6ErrorMax-IPv6HeaderLen-icmpHeaderLen)]
	icmpLen := icmpHeaderLen + len(quote)

	dst = appendReplyHeader(dst, eth)
	dst = appendIPv6Header(dst, ProtoICMPv6, errorTTL, src, ip.Src, icmpLen)
	start := len(dst)
	dst = append(dst, 2, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(mtu))
	dst = append(dst, quote...)
	binary.BigEndian.PutUint16(dst[start+2:], Checksum(dst[start:], PseudoHeaderSum(ProtoICMPv6, src, ip.Src, icmpLen)))
	return dst, nil
}

// unicast4 reports whether ip may be the source or destination of a
// packet an ICMP error is sent about (RFC 1812 4.3.2.7).
func unicast4(ip netip.Addr) bool {
	return !ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsLoopback() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// isICMPv4Error reports whether an ICMP message (not an echo or another
// query) is an error, which must not be answered with another error.
func isICMPv4Error(icmp []byte) bool {
	if len(icmp) == 0 {
		return true // unknown: stay quiet
	}
	switch icmp[0] {
	case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
		return true
	}
	return false
}
