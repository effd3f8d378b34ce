package frame

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIPv4_Captured(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  IPv4
	}{
		{"echo request", dumpEcho4, IPv4{HeaderLen: 20, TotalLen: 44, ID: 0x0f00, DontFragment: true, TTL: 64, Protocol: ProtoICMP, Checksum: 0x1735, Src: ip4Local, Dst: ip4Peer}},
		{"SYN", dumpSYN4, IPv4{HeaderLen: 20, TotalLen: 60, ID: 0x60d7, DontFragment: true, TTL: 64, Protocol: ProtoTCP, Checksum: 0xc548, Src: ip4Local, Dst: ip4Peer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.frame[14:]
			p, err := ParseIPv4(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.Header, b[:20]) || !bytes.Equal(p.Payload, b[20:]) {
				t.Errorf("header %x payload %x", p.Header, p.Payload)
			}
			p.Header, p.Payload = nil, nil
			if diff := cmp.Diff(tt.want, p, addrComparer); diff != "" {
				t.Errorf("ParseIPv4 (-want +got):\n%s", diff)
			}
			if p, _ := ParseIPv4(b); !p.ChecksumValid() || p.IsFragment() {
				t.Errorf("checksum valid %v, fragment %v", p.ChecksumValid(), p.IsFragment())
			}
		})
	}
}

func TestParseIPv4_Fields(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	t.Run("options and padding", func(t *testing.T) {
		// IHL 6 with a 4-byte option (router alert), then 3 bytes of data
		// and 10 bytes of Ethernet padding past the total length.
		b := ipv4Packet(ProtoUDP, src, dst, 0, []byte{0x94, 0x04, 0, 0, 'a', 'b', 'c'})
		b[0] = 0x46
		b = append(b, make([]byte, 10)...)
		p, err := ParseIPv4(b)
		if err != nil {
			t.Fatal(err)
		}
		if p.HeaderLen != 24 || p.TotalLen != 27 || string(p.Payload) != "abc" || len(p.Header) != 24 || p.Src != src || p.Dst != dst {
			t.Errorf("got %+v", p)
		}
	})
	t.Run("fragments", func(t *testing.T) {
		for _, tt := range []struct {
			flags        uint16
			df, mf       bool
			off          int
			fragment, ok bool
		}{
			{0x4000, true, false, 0, false, true},
			{0x2000, false, true, 0, true, true},
			{0x2000 | 185, false, true, 1480, true, true},
			{185, false, false, 1480, true, true},
			{0x1fff, false, false, 0x1fff * 8, true, true},
		} {
			p, err := ParseIPv4(ipv4Packet(ProtoUDP, src, dst, tt.flags, make([]byte, 8)))
			if err != nil {
				t.Fatal(err)
			}
			if p.DontFragment != tt.df || p.MoreFragments != tt.mf || p.FragOffset != tt.off || p.IsFragment() != tt.fragment || !p.ChecksumValid() {
				t.Errorf("flags %#04x: DF %v MF %v offset %d fragment %v", tt.flags, p.DontFragment, p.MoreFragments, p.FragOffset, p.IsFragment())
			}
		}
	})
	t.Run("checksum", func(t *testing.T) {
		b := bytes.Clone(dumpEcho4[14:])
		b[8]-- // TTL
		if p, _ := ParseIPv4(b); p.ChecksumValid() {
			t.Error("ChecksumValid after a change")
		}
	})
}

func TestParseIPv4_Errors(t *testing.T) {
	edit := func(i int, v ...byte) []byte {
		b := bytes.Clone(dumpEcho4[14:])
		copy(b[i:], v)
		return b
	}
	tests := []struct {
		name string
		pkt  []byte
		kind error
		want string
	}{
		{"empty", nil, ErrTruncated, "ipv4: packet length 0 below 20"},
		{"19 bytes", dumpEcho4[14:33], ErrTruncated, "packet length 19 below 20"},
		{"version 6", edit(0, 0x65), ErrMalformed, "ipv4: version 6 is not 4"},
		{"IHL 3", edit(0, 0x43), ErrMalformed, "ipv4: header length 12 below 20"},
		{"IHL beyond the packet", edit(0, 0x4f), ErrTruncated, "header length 60 exceeds packet length 44"},
		{"total length below header", edit(2, 0, 19), ErrMalformed, "total length 19 below header length 20"},
		{"total length beyond the packet", edit(2, 0, 45), ErrTruncated, "total length 45 exceeds packet length 44"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIPv4(tt.pkt)
			wantError(t, err, tt.kind, tt.want)
		})
	}
}
