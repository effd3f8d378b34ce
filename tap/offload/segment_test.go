package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ringvpn/ringvpn/tap/frame"
)

func TestVnetHdr_RoundTrip(t *testing.T) {
	b := vnet(FlagNeedsCsum, GSOTCPv6|GSOECN, 86, 1228, 54, 16)
	h, err := ParseVnetHdr(b)
	if err != nil {
		t.Fatal(err)
	}
	want := VnetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv6 | GSOECN, HdrLen: 86, GSOSize: 1228, CsumStart: 54, CsumOffset: 16}
	if h != want {
		t.Fatalf("ParseVnetHdr = %+v, want %+v", h, want)
	}
	out := make([]byte, VnetHdrLen)
	h.Put(out)
	if !bytes.Equal(out, b) {
		t.Errorf("Put = %x, want %x", out, b)
	}
	if _, err := ParseVnetHdr(b[:9]); !errors.Is(err, frame.ErrTruncated) {
		t.Errorf("ParseVnetHdr of 9 bytes = %v, want ErrTruncated", err)
	}
}

func TestSegment(t *testing.T) {
	base := seg{sport: 40000, dport: 5201, seq: 0xfffff000, ack: 77, flags: tcpACK | tcpPSH, window: 500, id: 0xfffe, df: true, ttl: 64}
	with := func(f func(*seg)) seg {
		s := base
		f(&s)
		return s
	}
	tests := []struct {
		name string
		s    seg
		gso  int
	}{
		{"IPv4, payload a multiple of the size", with(func(s *seg) { s.payload = data(4 * 1240) }), 1240},
		{"IPv4, short last segment, seq and ID wrap", with(func(s *seg) { s.payload = data(64000) }), 1240},
		{"IPv4 without DF, timestamps", with(func(s *seg) { s.df, s.opts, s.payload = false, tsOpts, data(3000) }), 1228},
		{"IPv4 with IP options", with(func(s *seg) { s.ipOpts, s.payload = []byte{1, 1, 1, 0}, data(3000) }), 1000},
		{"IPv4, FIN and PSH on the last only", with(func(s *seg) { s.flags, s.payload = tcpACK|tcpPSH|tcpFIN, data(2500) }), 1000},
		{"IPv4, CWR on the first only", with(func(s *seg) { s.flags, s.payload = tcpACK|tcpCWR|tcpECE, data(2500) }), 1000},
		{"IPv4, one segment", with(func(s *seg) { s.payload = data(700) }), 1240},
		{"IPv4, odd size", with(func(s *seg) { s.payload = data(5001) }), 999},
		{"IPv6", with(func(s *seg) { s.v6, s.payload = true, data(20000) }), 1220},
		{"IPv6, timestamps, traffic class", with(func(s *seg) { s.v6, s.opts, s.tos, s.payload = true, tsOpts, 0xb8, data(65000) }), 1208},
		{"VLAN tagged", with(func(s *seg) { s.vlan, s.payload = true, data(4000) }), 1240},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.s.super(tt.gso)
			h, err := ParseVnetHdr(in)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.s.segs(tt.gso)
			bufs, sizes := make([][]byte, len(want)+1), make([]int, len(want)+1)
			for i := range bufs {
				bufs[i] = make([]byte, 8+1600)
			}
			n, err := Segment(h, in[VnetHdrLen:], bufs, sizes, 8)
			if err != nil || n != len(want) {
				t.Fatalf("Segment = %d, %v; want %d segments", n, err, len(want))
			}
			for i := range n {
				got := bufs[i][8 : 8+sizes[i]]
				if !bytes.Equal(got, want[i]) {
					t.Fatalf("segment %d:\n got %x\nwant %x", i, got, want[i])
				}
				if !tt.s.vlan && !tcpValid(t, got) {
					t.Errorf("segment %d: checksum invalid", i)
				}
			}
		})
	}
}

// TestSegment_IPv6ExtensionHeader: the TCP header is found after a
// destination options header, and the payload length covers both.
func TestSegment_IPv6ExtensionHeader(t *testing.T) {
	s := seg{v6: true, sport: 1, dport: 2, seq: 100, flags: tcpACK, ttl: 64, payload: data(3000)}
	plain := s.segs(1200)
	in := s.super(1200)
	// Insert 8 bytes of destination options (next header TCP, PadN).
	ext := []byte{6, 0, 1, 4, 0, 0, 0, 0}
	f := append(append(append([]byte{}, in[VnetHdrLen:VnetHdrLen+14+40]...), ext...), in[VnetHdrLen+14+40:]...)
	f[14+6] = 60
	binary.BigEndian.PutUint16(f[14+4:], 3020+8)
	h, _ := ParseVnetHdr(in)
	bufs, sizes := [][]byte{make([]byte, 1500), make([]byte, 1500), make([]byte, 1500)}, make([]int, 3)
	n, err := Segment(h, f, bufs, sizes, 0)
	if err != nil || n != 3 {
		t.Fatalf("Segment = %d, %v", n, err)
	}
	for i := range n {
		got := bufs[i][:sizes[i]]
		// The same segment with the options header taken out again.
		if plen := int(got[18])<<8 | int(got[19]); plen != len(got)-54 {
			t.Errorf("segment %d: payload length %d, want %d", i, plen, len(got)-54)
		}
		stripped := append(append([]byte{}, got[:54]...), got[62:]...)
		stripped[20] = 6
		stripped[18], stripped[19] = byte((len(stripped)-54)>>8), byte(len(stripped)-54)
		if !bytes.Equal(stripped, plain[i]) {
			t.Errorf("segment %d:\n got %x\nwant %x", i, stripped, plain[i])
		}
	}
}

// TestSegment_NeedsCsum: a frame that is not GSO comes out whole, its
// checksum completed where the header says.
func TestSegment_NeedsCsum(t *testing.T) {
	tcp := seg{sport: 1, dport: 2, flags: tcpACK | tcpPSH, ttl: 64, payload: data(333), partial: true}
	tcpWant := tcp
	tcpWant.partial = false
	udp := udpFrame(data(100), true)
	udpZero := udpFrame(nil, true)
	tests := []struct {
		name string
		h    []byte
		f    []byte
		want []byte
	}{
		{"TCP", vnet(FlagNeedsCsum, GSONone, 0, 0, 34, 16), tcp.build(), tcpWant.build()},
		{"UDP", vnet(FlagNeedsCsum, GSONone, 0, 0, 34, 6), udp, udpFrame(data(100), false)},
		{"UDP summing to zero", vnet(FlagNeedsCsum, GSONone, 0, 0, 34, 6), udpZero, udpFrame(nil, false)},
		{"no checksum asked", vnet(0, GSONone, 0, 0, 0, 0), tcpWant.build(), tcpWant.build()},
		{"data valid", vnet(FlagDataValid, GSONone, 0, 0, 0, 0), tcpWant.build(), tcpWant.build()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := ParseVnetHdr(tt.h)
			bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
			n, err := Segment(h, tt.f, bufs, sizes, 0)
			if err != nil || n != 1 {
				t.Fatalf("Segment = %d, %v", n, err)
			}
			if got := bufs[0][:sizes[0]]; !bytes.Equal(got, tt.want) {
				t.Errorf("got  %x\nwant %x", got, tt.want)
			}
		})
	}
}

// udpFrame returns an IPv4 UDP frame; partial leaves the pseudo-header
// sum in the checksum.
func udpFrame(payload []byte, partial bool) []byte {
	s := seg{ttl: 64}
	f := s.build()[:34]
	f[14+9] = 17
	f[16], f[17] = byte((28+len(payload))>>8), byte(28+len(payload))
	f[24], f[25] = 0, 0
	c := ^naiveSum(f[14:34], 0)
	f[24], f[25] = byte(c>>8), byte(c)
	u := []byte{0x12, 0x34, 0x00, 0x35, byte((8 + len(payload)) >> 8), byte(8 + len(payload)), 0, 0}
	u = append(u, payload...)
	ph := append(append(ip4A.AsSlice(), ip4B.AsSlice()...), 0, 17, byte(len(u)>>8), byte(len(u)))
	if partial {
		c = naiveSum(ph, 0)
	} else if c = ^naiveSum(append(ph, u...), 0); c == 0 {
		c = 0xffff
	}
	u[6], u[7] = byte(c>>8), byte(c)
	return append(f, u...)
}

func TestSegment_Errors(t *testing.T) {
	good := seg{sport: 1, dport: 2, flags: tcpACK, ttl: 64, payload: data(3000)}
	f4 := good.super(1000)[VnetHdrLen:]
	good.v6 = true
	f6 := good.super(1000)[VnetHdrLen:]
	frag := bytes.Clone(f4)
	frag[14+6] = 0x20 // more fragments
	udp := bytes.Clone(f4)
	udp[14+9] = 17
	shortTCP := bytes.Clone(f4[:14+20+10])
	shortTCP[16], shortTCP[17] = 0, 30
	badOff := bytes.Clone(f4)
	badOff[34+12] = 0x20 // data offset 8 bytes
	tests := []struct {
		name string
		h    VnetHdr
		f    []byte
		kind error
	}{
		{"shorter than Ethernet", VnetHdr{}, f4[:13], frame.ErrTruncated},
		{"checksum position past the end", VnetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: uint16(len(f4) - 35)}, f4, frame.ErrMalformed},
		{"UDP GSO", VnetHdr{GSOType: GSOUDPL4, GSOSize: 1000}, f4, frame.ErrUnsupported},
		{"unknown GSO type", VnetHdr{GSOType: 9, GSOSize: 1000}, f4, frame.ErrUnsupported},
		{"GSO size 0", VnetHdr{GSOType: GSOTCPv4}, f4, frame.ErrMalformed},
		{"TCPV6 on IPv4", VnetHdr{GSOType: GSOTCPv6, GSOSize: 1000}, f4, frame.ErrMalformed},
		{"TCPV4 on IPv6", VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, f6, frame.ErrMalformed},
		{"IPv4 fragment", VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, frag, frame.ErrMalformed},
		{"UDP in a TCP GSO frame", VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, udp, frame.ErrMalformed},
		{"TCP header cut short", VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, shortTCP, frame.ErrTruncated},
		{"TCP data offset below 20", VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, badOff, frame.ErrTruncated},
		{"IPv4 length past the frame", VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, f4[:1000], frame.ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Segmenter
			err := s.Reset(tt.h, tt.f)
			if !errors.Is(err, tt.kind) {
				t.Errorf("Reset = %v, want %v", err, tt.kind)
			}
			if s.Remaining() != 0 || s.MaxLen() != 0 {
				t.Errorf("after an error: %d segments of up to %d bytes left", s.Remaining(), s.MaxLen())
			}
		})
	}
}

// TestSegmenter_AcrossBatches: segments come out over several calls, a
// short buffer refuses the segment without losing it.
func TestSegmenter_AcrossBatches(t *testing.T) {
	s0 := seg{sport: 1, dport: 2, seq: 1, flags: tcpACK | tcpPSH, ttl: 64, id: 9, payload: data(10 * 1000)}
	want := s0.segs(1000)
	in := s0.super(1000)
	h, _ := ParseVnetHdr(in)
	var s Segmenter
	if err := s.Reset(h, in[VnetHdrLen:]); err != nil {
		t.Fatal(err)
	}
	if s.Remaining() != 10 || s.MaxLen() != 1054 {
		t.Fatalf("%d segments of up to %d bytes, want 10 of 1054", s.Remaining(), s.MaxLen())
	}
	buf := make([]byte, 1054)
	for i := range 10 {
		if _, err := s.Next(buf[:100]); !errors.Is(err, ErrShortBuffer) {
			t.Fatalf("Next into 100 bytes = %v, want ErrShortBuffer", err)
		}
		n, err := s.Next(buf)
		if err != nil || !bytes.Equal(buf[:n], want[i]) {
			t.Fatalf("segment %d = %x, %v; want %x", i, buf[:n], err, want[i])
		}
	}
	if n, err := s.Next(buf); n != 0 || err != nil || s.Remaining() != 0 {
		t.Errorf("Next after the last = %d, %v", n, err)
	}
	bufs, sizes := [][]byte{buf}, []int{0}
	if n, err := Segment(h, in[VnetHdrLen:], bufs, sizes, 0); n != 1 || !errors.Is(err, ErrShortBuffer) {
		t.Errorf("Segment into one buffer = %d, %v; want 1, ErrShortBuffer", n, err)
	}
}
