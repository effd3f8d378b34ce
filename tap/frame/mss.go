package frame

import "encoding/binary"

// TCP header fields ClampMSS reads.
const (
	tcpHeaderLen = 20
	tcpFlagSYN   = 0x02
	tcpOptEnd    = 0
	tcpOptNOP    = 1
	tcpOptMSS    = 2
	tcpOptMSSLen = 4
)

// ClampMSS lowers the maximum segment size option of a TCP SYN or SYN-ACK
// in the IPv4 or IPv6 packet ipPacket to maxMSS if it is larger, and fixes
// the TCP checksum incrementally (RFC 1624), so it stays exactly as valid
// as it was. It reports whether it changed the packet. Packets that are not
// TCP SYNs, later fragments and malformed packets are left alone.
//
// Clamping the MSS where packets enter the VPN keeps TCP segments within
// the overlay MTU even when ICMP "too big" messages are filtered on the way
// back to the sender. The MSS is the MTU minus 40 (IPv4) or 60 (IPv6).
// It does not allocate.
func ClampMSS(ipPacket []byte, maxMSS uint16) (changed bool) {
	if len(ipPacket) == 0 {
		return false
	}
	var seg []byte
	switch ipPacket[0] >> 4 {
	case 4:
		ip, err := ParseIPv4(ipPacket)
		if err != nil || ip.Protocol != ProtoTCP || ip.FragOffset != 0 {
			return false
		}
		seg = ip.Payload
	case 6:
		ip, err := ParseIPv6(ipPacket)
		if err != nil || ip.Protocol != ProtoTCP || ip.FragOffset != 0 {
			return false
		}
		seg = ip.Upper
	default:
		return false
	}
	if len(seg) < tcpHeaderLen || seg[13]&tcpFlagSYN == 0 {
		return false
	}
	hl := int(seg[12]>>4) * 4
	if hl < tcpHeaderLen || hl > len(seg) {
		return false
	}
	opts := seg[tcpHeaderLen:hl]
	for i := 0; i < len(opts); {
		switch kind := opts[i]; kind {
		case tcpOptEnd:
			return changed
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return changed
		}
		olen := int(opts[i+1])
		if olen < 2 || i+olen > len(opts) {
			return changed
		}
		if opts[i] == tcpOptMSS && olen == tcpOptMSSLen {
			if mss := binary.BigEndian.Uint16(opts[i+2:]); mss > maxMSS {
				setMSS(seg, tcpHeaderLen+i+2, mss, maxMSS)
				changed = true
			}
		}
		i += olen
	}
	return changed
}

// setMSS writes the MSS value at seg[off:off+2] and updates the checksum.
// An option can start at any byte, so the value may straddle two of the
// 16-bit words the checksum adds up; at an odd offset it contributes its
// bytes swapped, and so do the old and new values in the update.
func setMSS(seg []byte, off int, from, to uint16) {
	binary.BigEndian.PutUint16(seg[off:], to)
	if off%2 == 1 {
		from, to = from<<8|from>>8, to<<8|to>>8
	}
	hc := binary.BigEndian.Uint16(seg[16:18])
	binary.BigEndian.PutUint16(seg[16:18], updateChecksum(hc, from, to))
}
