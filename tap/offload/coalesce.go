package offload

import (
	"encoding/binary"
	"net/netip"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// Coalescer limits.
const (
	// MaxBatch is the most frames one Coalescer batch takes.
	MaxBatch = 128
	// MaxSegments is the most frames merged into one super-segment.
	MaxSegments = 64
	// maxOpen is how many flows a batch keeps open for merging at once;
	// the oldest is closed when another one starts.
	maxOpen = 8
	// maxIPLen bounds a merged packet: IPv4's total length and IPv6's
	// payload length are 16 bits.
	maxIPLen = 65535
)

// Offsets in an untagged Ethernet frame.
const (
	ethLen      = frame.EthernetHeaderLen
	ip4Len      = frame.IPv4HeaderLen
	ip6Len      = frame.IPv6HeaderLen
	typeIPv4    = 0x0800
	typeIPv6    = 0x86dd
	ip4FlagDF   = 0x40
	maxTCPHdr   = 60
	maxHdrBytes = VnetHdrLen + ethLen + ip6Len + maxTCPHdr
)

// Coalescer merges the TCP segments in a batch of frames into
// super-segments, so that one write hands many of them to the kernel
// (user-space GRO). A segment joins the open super-segment of its flow
// when Linux's tcp_gro_receive would merge it: an untagged frame, IPv4
// without options and unfragmented or IPv6 without extension headers,
// the same Ethernet header, TOS or traffic class and flow label, TTL or
// hop limit and DF bit, IPv4 IDs counting up unless DF is set; TCP with
// ACK and at most PSH and ECE, the same ACK number, window, ECE and
// options (timestamps included), a payload, a sequence number right after
// the super-segment's, no more payload than the first segment's and a
// valid checksum (the kernel would drop a bad one; merged, it would not
// check). PSH or a segment shorter than the first ends a super-segment,
// and so does any other packet of the flow, which keeps the flow's
// packets in order. Frames that merge with nothing are written as they
// came.
//
// Use: Reset, Add each frame, then write Packet(k) for k < Len(). The
// frames must stay unchanged until then; they are never modified. A
// Coalescer allocates nothing and is not safe for concurrent use.
type Coalescer struct {
	segs  [MaxBatch]segInfo
	nsegs int
	pkts  [MaxBatch]packet
	npkts int
	open  [maxOpen]int16 // packets still taking segments, oldest first
	nopen int
	hdr   [maxHdrBytes]byte // Packet's header, valid until its next call
}

// segInfo is one frame added to the batch.
type segInfo struct {
	b         []byte
	flowable  bool // an IPv4 or IPv6 TCP packet whose addresses and ports are known
	mergeable bool // a segment that may join or start a super-segment
	v6        bool
	flags     uint8
	tcpOff    int
	hdrLen    int
	payload   int
	seq       uint32
	next      int16 // next frame of the same packet, -1 for none
}

// packet is one write: a frame, or segments merged.
type packet struct {
	head, last int16 // frames
	n          int   // frames merged
	bytes      int   // TCP payload of all of them
	gso        int   // payload of the first, the segment size
}

// Reset empties the batch.
func (c *Coalescer) Reset() { c.nsegs, c.npkts, c.nopen = 0, 0, 0 }

// Len is the number of packets to write.
func (c *Coalescer) Len() int { return c.npkts }

// Frames is the number of frames packet k carries.
func (c *Coalescer) Frames(k int) int { return c.pkts[k].n }

// Add adds the frame f to the batch; false, and f not added, if the batch
// already holds MaxBatch frames.
func (c *Coalescer) Add(f []byte) bool {
	if c.nsegs == MaxBatch {
		return false
	}
	i := int16(c.nsegs)
	c.nsegs++
	s := &c.segs[i]
	classify(s, f)
	if s.flowable {
		if k := c.findOpen(s); k >= 0 {
			p := &c.pkts[c.open[k]]
			if s.mergeable && c.canMerge(p, s) {
				c.segs[p.last].next = i
				p.last = i
				p.n++
				p.bytes += s.payload
				if s.payload < p.gso || s.flags&tcpPSH != 0 || p.n == MaxSegments {
					c.closeOpen(k)
				}
				return true
			}
			// Anything else of the flow ends its super-segment, so the
			// flow's packets stay in order.
			c.closeOpen(k)
		}
	}
	c.pkts[c.npkts] = packet{head: i, last: i, n: 1, bytes: s.payload, gso: s.payload}
	if s.mergeable && s.flags&tcpPSH == 0 {
		if c.nopen == maxOpen {
			c.closeOpen(0)
		}
		c.open[c.nopen] = int16(c.npkts)
		c.nopen++
	}
	c.npkts++
	return true
}

// classify fills s for the frame f.
func classify(s *segInfo, f []byte) {
	*s = segInfo{b: f, next: -1}
	if len(f) < ethLen+ip4Len+tcpMinHeaderLen {
		return
	}
	var src, dst netip.Addr
	switch binary.BigEndian.Uint16(f[12:]) {
	case typeIPv4:
		ip := f[ethLen:]
		// No options, TCP, exactly the frame, not a fragment.
		if ip[0] != 0x45 || ip[9] != frame.ProtoTCP || int(binary.BigEndian.Uint16(ip[2:])) != len(ip) || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return
		}
		s.tcpOff = ethLen + ip4Len
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	case typeIPv6:
		if len(f) < ethLen+ip6Len+tcpMinHeaderLen {
			return
		}
		ip := f[ethLen:]
		if ip[0]>>4 != 6 || ip[6] != frame.ProtoTCP || int(binary.BigEndian.Uint16(ip[4:])) != len(ip)-ip6Len {
			return
		}
		s.v6, s.tcpOff = true, ethLen+ip6Len
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	default:
		return
	}
	tcp := f[s.tcpOff:]
	thl := int(tcp[12]>>4) * 4
	if thl < tcpMinHeaderLen || thl > len(tcp) {
		return
	}
	s.flowable = true
	s.hdrLen, s.payload = s.tcpOff+thl, len(tcp)-thl
	s.seq, s.flags = binary.BigEndian.Uint32(tcp[4:]), tcp[13]
	if s.payload == 0 || s.flags&tcpACK == 0 || s.flags&(tcpSYN|tcpFIN|tcpRST|tcpURG|tcpCWR) != 0 {
		return
	}
	if !s.v6 && frame.Checksum(f[ethLen:ethLen+ip4Len], 0) != 0 {
		return
	}
	if frame.Checksum(tcp, frame.PseudoHeaderSum(frame.ProtoTCP, src, dst, len(tcp))) != 0 {
		return
	}
	s.mergeable = true
}

// addrs returns the IP addresses of a flowable frame.
func (s *segInfo) addrs() []byte {
	if s.v6 {
		return s.b[ethLen+8 : ethLen+40]
	}
	return s.b[ethLen+12 : ethLen+20]
}

// findOpen returns the index in c.open of the open packet of s's flow,
// or -1.
func (c *Coalescer) findOpen(s *segInfo) int {
	for k := c.nopen - 1; k >= 0; k-- {
		h := &c.segs[c.pkts[c.open[k]].head]
		if h.v6 == s.v6 && string(h.addrs()) == string(s.addrs()) && string(h.b[h.tcpOff:h.tcpOff+4]) == string(s.b[s.tcpOff:s.tcpOff+4]) {
			return k
		}
	}
	return -1
}

// closeOpen stops the packet at c.open[k] from taking segments.
func (c *Coalescer) closeOpen(k int) {
	copy(c.open[k:c.nopen], c.open[k+1:c.nopen])
	c.nopen--
}

// canMerge reports whether segment s (of p's flow) may follow p's.
func (c *Coalescer) canMerge(p *packet, s *segInfo) bool {
	h := &c.segs[p.head]
	hb, sb := h.b, s.b
	if s.hdrLen != h.hdrLen || s.seq != h.seq+uint32(p.bytes) || s.payload > p.gso ||
		s.hdrLen-ethLen+p.bytes+s.payload > maxIPLen || string(hb[:ethLen]) != string(sb[:ethLen]) {
		return false
	}
	if s.v6 {
		// Version, traffic class and flow label; hop limit.
		if string(hb[ethLen:ethLen+4]) != string(sb[ethLen:ethLen+4]) || hb[ethLen+7] != sb[ethLen+7] {
			return false
		}
	} else {
		// TOS, flags (DF), TTL; the ID counts up unless DF says it
		// means nothing (RFC 6864).
		if hb[ethLen+1] != sb[ethLen+1] || hb[ethLen+6] != sb[ethLen+6] || hb[ethLen+8] != sb[ethLen+8] {
			return false
		}
		if hb[ethLen+6]&ip4FlagDF == 0 && binary.BigEndian.Uint16(sb[ethLen+4:]) != binary.BigEndian.Uint16(hb[ethLen+4:])+uint16(p.n) {
			return false
		}
	}
	ht, st := hb[h.tcpOff:h.hdrLen], sb[s.tcpOff:s.hdrLen]
	// ACK number; data offset and flags but PSH; window; checksum
	// skipped; urgent pointer; options.
	return string(ht[8:12]) == string(st[8:12]) &&
		ht[12] == st[12] && ht[13] == st[13]&^tcpPSH &&
		string(ht[14:16]) == string(st[14:16]) &&
		string(ht[18:]) == string(st[18:])
}

// Packet returns packet k: hdr is the virtio_net_hdr followed by any
// headers rewritten for a merged packet, and parts, appended to parts, are
// the rest of it. Written one after the other (writev), they make one
// write to the device. hdr is valid until the next call of Packet.
//
// A packet of one frame has an empty virtio_net_hdr and the frame as its
// one part. A merged packet is the first frame's headers with the IP
// length for all the payload, PSH if the last segment had it, the TCP
// checksum left to the kernel (NEEDS_CSUM, the pseudo-header's partial
// sum in its place) and GSO type TCPV4 or TCPV6 with the first segment's
// size; then the payload of each segment.
func (c *Coalescer) Packet(k int, parts [][]byte) (hdr []byte, _ [][]byte) {
	p := &c.pkts[k]
	h := &c.segs[p.head]
	if p.n == 1 {
		hdr = c.hdr[:VnetHdrLen]
		clear(hdr)
		return hdr, append(parts, h.b)
	}
	hdr = c.hdr[:VnetHdrLen+h.hdrLen]
	f := hdr[VnetHdrLen:]
	copy(f, h.b[:h.hdrLen])
	ipLen := h.hdrLen - ethLen + p.bytes
	var src, dst netip.Addr
	gsoType := GSOTCPv4
	if h.v6 {
		gsoType = GSOTCPv6
		binary.BigEndian.PutUint16(f[ethLen+4:], uint16(ipLen-ip6Len))
		src, dst = netip.AddrFrom16([16]byte(f[ethLen+8:ethLen+24])), netip.AddrFrom16([16]byte(f[ethLen+24:ethLen+40]))
	} else {
		ip := f[ethLen : ethLen+ip4Len]
		binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], frame.Checksum(ip, 0))
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	}
	tcp := f[h.tcpOff:]
	tcp[13] |= c.segs[p.last].flags & tcpPSH
	binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], uint16(frame.PseudoHeaderSum(frame.ProtoTCP, src, dst, h.hdrLen-h.tcpOff+p.bytes)))
	VnetHdr{
		Flags:      FlagNeedsCsum,
		GSOType:    gsoType,
		HdrLen:     uint16(h.hdrLen),
		GSOSize:    uint16(p.gso),
		CsumStart:  uint16(h.tcpOff),
		CsumOffset: tcpCsumOffset,
	}.Put(hdr)
	for j := p.head; j >= 0; j = c.segs[j].next {
		s := &c.segs[j]
		parts = append(parts, s.b[s.hdrLen:])
	}
	return hdr, parts
}

// AppendFrames appends the frames packet k is made of to dst, in order:
// what to write one by one if the kernel refuses the packet.
func (c *Coalescer) AppendFrames(dst [][]byte, k int) [][]byte {
	for j := c.pkts[k].head; j >= 0; j = c.segs[j].next {
		dst = append(dst, c.segs[j].b)
	}
	return dst
}

// AppendPacket appends packet k, its virtio_net_hdr first, to dst: the
// bytes one write to the device would carry.
func (c *Coalescer) AppendPacket(dst []byte, k int) []byte {
	var arr [MaxSegments][]byte
	hdr, parts := c.Packet(k, arr[:0])
	dst = append(dst, hdr...)
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}
