package frame

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// mssOf returns every MSS option value in the TCP segment of an IPv4 or
// IPv6 packet without extension headers, parsed independently.
func mssOf(t *testing.T, ip []byte) []uint16 {
	t.Helper()
	hl := 40
	if ip[0]>>4 == 4 {
		hl = int(ip[0]&0xf) * 4
	}
	seg := ip[hl:]
	opts := seg[20 : int(seg[12]>>4)*4]
	var out []uint16
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return out
		case 1:
			i++
			continue
		}
		if opts[i] == 2 {
			out = append(out, binary.BigEndian.Uint16(opts[i+2:]))
		}
		i += int(opts[i+1])
	}
	return out
}

func TestClampMSS(t *testing.T) {
	const syn, synAck, ack = 0x02, 0x12, 0x10
	mss := func(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	v4 := func(flags byte, opts []byte) []byte {
		return ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0x4000, tcpSegment(ip4Local, ip4Peer, flags, opts, nil))
	}
	v6 := func(flags byte, opts []byte) []byte {
		return ipv6Packet(ProtoTCP, ip6Local, ip6Peer, 64, tcpSegment(ip6Local, ip6Peer, flags, opts, nil))
	}
	tests := []struct {
		name    string
		pkt     []byte
		max     uint16
		changed bool
		want    []uint16
	}{
		{"captured IPv4 SYN", bytes.Clone(dumpSYN4[14:]), 1200, true, []uint16{1200}},
		{"captured IPv4 SYN below the limit", bytes.Clone(dumpSYN4[14:]), 1360, false, []uint16{1360}},
		{"captured IPv6 SYN", bytes.Clone(dumpSYN6[14:]), 1220, true, []uint16{1220}},
		{"SYN-ACK", v4(synAck, mss(1460)), 1360, true, []uint16{1360}},
		{"MSS at an odd offset", v4(syn, cat([]byte{1}, mss(1460))), 1360, true, []uint16{1360}},
		{"MSS at an odd offset, IPv6", v6(syn, cat([]byte{1, 1, 1}, mss(0xffff))), 0x1234, true, []uint16{0x1234}},
		{"carries in the update", v4(syn, cat([]byte{1}, mss(0xffff))), 1, true, []uint16{1}},
		{"two MSS options", v4(syn, cat(mss(9000), mss(1400))), 1300, true, []uint16{1300, 1300}},
		{"after other options", v6(syn, cat([]byte{4, 2, 8, 10}, make([]byte, 8), []byte{1, 3, 3, 7}, mss(8940))), 1340, true, []uint16{1340}},
		{"not a SYN", v4(ack, mss(1460)), 1360, false, []uint16{1460}},
		{"after end of options", v4(syn, cat([]byte{0, 0, 0, 0}, mss(1460))), 1360, false, []uint16(nil)},
		{"no options", v4(syn, nil), 1360, false, nil},
		{"option of length 0 stops the walk", v4(syn, cat([]byte{30, 0, 0, 0}, mss(1460))), 1360, false, nil},
		{"MSS option of length 3", v4(syn, []byte{2, 3, 5, 0xb4}), 1360, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bytes.Clone(tt.pkt)
			if !tcpChecksumValid(t, tt.pkt) {
				t.Fatal("test packet has a bad checksum")
			}
			if got := ClampMSS(tt.pkt, tt.max); got != tt.changed {
				t.Errorf("ClampMSS = %v, want %v", got, tt.changed)
			}
			if !tcpChecksumValid(t, tt.pkt) {
				t.Error("checksum invalid after ClampMSS")
			}
			if tt.want != nil {
				if got := mssOf(t, tt.pkt); !slices.Equal(got, tt.want) {
					t.Errorf("MSS options %v, want %v", got, tt.want)
				}
			}
			if !tt.changed && !bytes.Equal(before, tt.pkt) {
				t.Error("packet modified though ClampMSS reported no change")
			}
		})
	}
}

func TestClampMSS_LeavesOthersAlone(t *testing.T) {
	synOpts := []byte{2, 4, 0x05, 0xb4}
	seg4 := tcpSegment(ip4Local, ip4Peer, 0x02, synOpts, nil)
	seg6 := tcpSegment(ip6Local, ip6Peer, 0x02, synOpts, nil)
	badOpts := bytes.Clone(seg4)
	badOpts[12] = 0xf0 // data offset 60 beyond the segment
	shortOff := bytes.Clone(seg4)
	shortOff[12] = 0x40 // data offset 16
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"not IP", []byte{0x20, 1, 2, 3}},
		{"UDP", ipv4Packet(ProtoUDP, ip4Local, ip4Peer, 0, make([]byte, 30))},
		{"later IPv4 fragment", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0x2000|3, seg4)},
		{"later IPv6 fragment", ipv6Packet(protoFragment, ip6Local, ip6Peer, 64, append(fragHeader(ProtoTCP, 24, true), seg6...))},
		{"truncated IPv4", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0, seg4)[:30]},
		{"TCP header cut short", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0, seg4[:19])},
		{"data offset beyond the segment", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0, badOpts)},
		{"data offset below 20", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0, shortOff)},
		{"option length past the options", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0, tcpSegment(ip4Local, ip4Peer, 0x02, []byte{1, 1, 1, 2}, nil))},
		{"option kind in the last byte", ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0, tcpSegment(ip4Local, ip4Peer, 0x02, []byte{1, 1, 1, 5}, nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bytes.Clone(tt.pkt)
			if ClampMSS(tt.pkt, 500) {
				t.Error("ClampMSS changed it")
			}
			if !bytes.Equal(before, tt.pkt) {
				t.Error("packet modified")
			}
		})
	}
	// A first fragment holds the TCP header and is clamped.
	first := ipv4Packet(ProtoTCP, ip4Local, ip4Peer, 0x2000, seg4)
	if !ClampMSS(first, 500) {
		t.Error("first fragment not clamped")
	}
	first6 := ipv6Packet(protoFragment, ip6Local, ip6Peer, 64, append(fragHeader(ProtoTCP, 0, true), seg6...))
	if !ClampMSS(first6, 500) {
		t.Error("first IPv6 fragment not clamped")
	}
}
