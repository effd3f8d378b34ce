package offload

import (
	"encoding/binary"
	"net/netip"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// TCP header fields.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80

	tcpMinHeaderLen = 20
	tcpCsumOffset   = 16
)

// Segmenter cuts a frame the kernel read out of the device into the frames
// it stands for: a TCP super-segment (GSO type TCPV4 or TCPV6) into
// segments of GSOSize payload bytes, each a complete frame with its own IP
// length, IPv4 ID and header checksum, TCP sequence number, flags (FIN and
// PSH on the last segment only, CWR on the first only) and TCP checksum; any
// other frame into itself, with its checksum completed when the header says
// NEEDS_CSUM. This is what the kernel does in software (tcp_gso_segment)
// for a device without TSO.
//
// Reset takes a frame, then Next returns its segments one by one, so that
// a reader can hand them out over several batches. The zero value holds no
// frame. A Segmenter allocates nothing.
type Segmenter struct {
	// owned by the caller of Reset and Next
	pkt    []byte // the frame; borrowed until the last segment is out
	left   int    // segments not yet returned
	next   int    // index of the next segment
	single bool   // pkt goes out whole
	v6     bool
	ipOff  int // IP header
	tcpOff int // TCP header
	hdrLen int // all headers
	end    int // end of the IP packet (bytes after it are padding)
	gso    int
	seq    uint32
	id     uint16
	flags  uint8
	pseudo uint32 // pseudo-header sum without the length
}

// Reset prepares the segments of pkt, a frame as read from the device
// behind its header h. A frame that is not GSO is returned whole by Next,
// its checksum completed in place first if h asks for it. An error means
// the frame is malformed or of a GSO type other than TCP, and leaves the
// Segmenter empty.
func (s *Segmenter) Reset(h VnetHdr, pkt []byte) error {
	*s = Segmenter{}
	if len(pkt) < frame.EthernetHeaderLen {
		return errShortFrame
	}
	switch h.GSOType &^ GSOECN {
	case GSONone:
		if h.Flags&FlagNeedsCsum != 0 {
			if err := completeChecksum(pkt, int(h.CsumStart), int(h.CsumOffset)); err != nil {
				return err
			}
		}
		s.pkt, s.single, s.left = pkt, true, 1
		return nil
	case GSOTCPv4, GSOTCPv6:
	default:
		return errGSOType
	}
	if h.GSOSize == 0 {
		return errGSOSize
	}
	eth, err := frame.ParseEthernet(pkt)
	if err != nil {
		return err
	}
	v6 := h.GSOType&^GSOECN == GSOTCPv6
	var src, dst netip.Addr
	ipOff := eth.HeaderLen
	switch {
	case eth.Type == frame.TypeIPv4 && !v6:
		ip, err := frame.ParseIPv4(eth.Payload)
		if err != nil {
			return err
		}
		if ip.Protocol != frame.ProtoTCP || ip.IsFragment() {
			return errNotTCP
		}
		src, dst = ip.Src, ip.Dst
		s.tcpOff, s.end, s.id = ipOff+ip.HeaderLen, ipOff+ip.TotalLen, ip.ID
	case eth.Type == frame.TypeIPv6 && v6:
		ip, err := frame.ParseIPv6(eth.Payload)
		if err != nil {
			return err
		}
		if ip.Protocol != frame.ProtoTCP || ip.Fragment {
			return errNotTCP
		}
		src, dst = ip.Src, ip.Dst
		s.tcpOff = ipOff + frame.IPv6HeaderLen + len(ip.Payload) - len(ip.Upper)
		s.end = ipOff + frame.IPv6HeaderLen + ip.PayloadLen
	default:
		return errGSOFamily
	}
	if s.tcpOff+tcpMinHeaderLen > s.end {
		return errTCPHeader
	}
	thl := int(pkt[s.tcpOff+12]>>4) * 4
	if thl < tcpMinHeaderLen || s.tcpOff+thl > s.end {
		return errTCPHeader
	}
	s.pkt, s.v6, s.ipOff, s.hdrLen, s.gso = pkt, v6, ipOff, s.tcpOff+thl, int(h.GSOSize)
	s.seq = binary.BigEndian.Uint32(pkt[s.tcpOff+4:])
	s.flags = pkt[s.tcpOff+13]
	s.pseudo = frame.PseudoHeaderSum(frame.ProtoTCP, src, dst, 0)
	s.left = max(1, (s.end-s.hdrLen+s.gso-1)/s.gso)
	return nil
}

// completeChecksum stores the checksum of pkt[start:] at start+offset,
// where the kernel left the pseudo-header's partial sum (CHECKSUM_PARTIAL).
func completeChecksum(pkt []byte, start, offset int) error {
	at := start + offset
	if at+2 > len(pkt) {
		return errCsumBounds
	}
	c := frame.Checksum(pkt[start:], 0)
	if c == 0 {
		// As the kernel does (CSUM_MANGLED_0): a UDP checksum of 0
		// would mean none, and 0xffff is the same sum.
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
	return nil
}

// Remaining is how many segments Next has still to return.
func (s *Segmenter) Remaining() int { return s.left }

// MaxLen is the length of the longest segment: a buffer this long holds
// any of them.
func (s *Segmenter) MaxLen() int {
	switch {
	case s.left == 0:
		return 0
	case s.single:
		return len(s.pkt)
	}
	return s.hdrLen + min(s.gso, s.end-s.hdrLen)
}

// Next writes the next segment to dst and returns its length. It fails
// with ErrShortBuffer, and returns the same segment next time, if dst is
// too short; with nothing left it returns 0 and no error.
func (s *Segmenter) Next(dst []byte) (int, error) {
	if s.left == 0 {
		return 0, nil
	}
	if s.single {
		if len(dst) < len(s.pkt) {
			return 0, ErrShortBuffer
		}
		s.left = 0
		return copy(dst, s.pkt), nil
	}
	i := s.next
	start := s.hdrLen + i*s.gso
	segLen := min(s.gso, s.end-start)
	n := s.hdrLen + segLen
	if len(dst) < n {
		return 0, ErrShortBuffer
	}
	out := dst[:n]
	copy(out, s.pkt[:s.hdrLen])
	copy(out[s.hdrLen:], s.pkt[start:start+segLen])

	ip := out[s.ipOff:s.tcpOff]
	if s.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(n-s.ipOff-frame.IPv6HeaderLen))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(n-s.ipOff))
		binary.BigEndian.PutUint16(ip[4:], s.id+uint16(i))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], frame.Checksum(ip, 0))
	}
	tcp := out[s.tcpOff:]
	binary.BigEndian.PutUint32(tcp[4:], s.seq+uint32(i*s.gso))
	flags := s.flags
	if s.left > 1 {
		flags &^= tcpFIN | tcpPSH
	}
	if i > 0 {
		flags &^= tcpCWR
	}
	tcp[13] = flags
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], frame.Checksum(tcp, s.pseudo+uint32(len(tcp))))
	s.next++
	s.left--
	return n, nil
}

// Segment cuts pkt (behind header h) into bufs[i][offset:], setting
// sizes[i], and returns how many segments it wrote. It fails with
// ErrShortBuffer when bufs, sizes or a buffer are too short, having
// written the segments before.
func Segment(h VnetHdr, pkt []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	var s Segmenter
	if err := s.Reset(h, pkt); err != nil {
		return 0, err
	}
	n := 0
	for s.Remaining() > 0 {
		if n == len(bufs) || n == len(sizes) || offset > len(bufs[n]) {
			return n, ErrShortBuffer
		}
		m, err := s.Next(bufs[n][offset:])
		if err != nil {
			return n, err
		}
		sizes[n] = m
		n++
	}
	return n, nil
}
