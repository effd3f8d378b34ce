package frame

import (
	"bytes"
	"net"
	"testing"
)

func TestParseEthernet(t *testing.T) {
	tagged := append(append(bytes.Clone(dumpEcho4[:12]), 0x81, 0x00, 0xa0, 0x2a), dumpEcho4[12:]...)
	tests := []struct {
		name      string
		frame     []byte
		dst, src  net.HardwareAddr
		typ       EtherType
		vlan      uint16
		tagged    bool
		headerLen int
	}{
		{"ARP request", dumpARPRequest, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macLocal, TypeARP, 0, false, 14},
		{"IPv4", dumpEcho4, macPeer, macLocal, TypeIPv4, 0, false, 14},
		{"IPv6 multicast", dumpNS, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 2}, macLocal, TypeIPv6, 0, false, 14},
		{"802.1Q priority 5 VLAN 42", tagged, macPeer, macLocal, TypeIPv4, 0xa02a, true, 18},
		{"header only", dumpEcho4[:14], macPeer, macLocal, TypeIPv4, 0, false, 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEthernet(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.Dst, tt.dst) || !bytes.Equal(e.Src, tt.src) || e.Type != tt.typ || e.VLAN != tt.vlan || e.Tagged != tt.tagged || e.HeaderLen != tt.headerLen {
				t.Errorf("got dst %v src %v type %v vlan %#x tagged %v len %d", e.Dst, e.Src, e.Type, e.VLAN, e.Tagged, e.HeaderLen)
			}
			if !bytes.Equal(e.Payload, tt.frame[tt.headerLen:]) {
				t.Errorf("payload %x, want %x", e.Payload, tt.frame[tt.headerLen:])
			}
		})
	}
	if e, _ := ParseEthernet(tagged); e.VLANID() != 42 {
		t.Errorf("VLANID = %d, want 42", e.VLANID())
	}
}

func TestParseEthernet_Errors(t *testing.T) {
	hdr := func(types ...byte) []byte { return append(bytes.Clone(dumpEcho4[:12]), types...) }
	tests := []struct {
		name  string
		frame []byte
		kind  error
		want  string
	}{
		{"empty", nil, ErrTruncated, "ethernet: frame length 0 below 14"},
		{"13 bytes", dumpEcho4[:13], ErrTruncated, "frame length 13 below 14"},
		{"tag cut short", hdr(0x81, 0x00, 0x00, 0x01, 0x08), ErrTruncated, "tagged frame length 17 below 18"},
		{"two 802.1Q tags", hdr(0x81, 0x00, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00), ErrUnsupported, "stacked VLAN tag (type 0x8100)"},
		{"802.1ad outer tag", hdr(0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00), ErrUnsupported, "stacked VLAN tag (type 0x88a8)"},
		{"802.1ad inner tag", hdr(0x81, 0x00, 0, 1, 0x88, 0xa8, 0, 2, 0x08, 0x00), ErrUnsupported, "stacked VLAN tag (type 0x88a8)"},
		{"802.3 length", hdr(0x00, 0x26, 0x42, 0x42, 0x03), ErrUnsupported, "802.3 length field 38"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEthernet(tt.frame)
			wantError(t, err, tt.kind, tt.want)
		})
	}
}

func TestMAC_Classes(t *testing.T) {
	tests := []struct {
		mac                  net.HardwareAddr
		broadcast, multicast bool
	}{
		{net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true, true},
		{net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, false, true},
		{net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}, false, true},
		{macLocal, false, false},
		{net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff}, false, false}, // wrong length
		{nil, false, false},
	}
	for _, tt := range tests {
		if got := IsBroadcast(tt.mac); got != tt.broadcast {
			t.Errorf("IsBroadcast(%v) = %v", tt.mac, got)
		}
		if got := IsMulticast(tt.mac); got != tt.multicast {
			t.Errorf("IsMulticast(%v) = %v", tt.mac, got)
		}
	}
}

func TestAppendEthernet(t *testing.T) {
	got := AppendEthernet([]byte{0xaa}, macPeer, macLocal, TypeIPv4)
	if want := append([]byte{0xaa}, dumpEcho4[:14]...); !bytes.Equal(got, want) {
		t.Errorf("AppendEthernet = %x, want %x", got, want)
	}
	// Addresses of the wrong length still give a 14-byte header.
	if got := AppendEthernet(nil, nil, net.HardwareAddr{1, 2, 3, 4, 5, 6, 7}, TypeARP); len(got) != 14 {
		t.Errorf("AppendEthernet with bad addresses = %x", got)
	}
}

func TestEtherType_String(t *testing.T) {
	for typ, want := range map[EtherType]string{TypeIPv4: "IPv4", TypeARP: "ARP", TypeIPv6: "IPv6", TypeVLAN: "802.1Q", TypeQinQ: "802.1ad", 0x88cc: "0x88cc"} {
		if got := typ.String(); got != want {
			t.Errorf("%#04x.String() = %q, want %q", uint16(typ), got, want)
		}
	}
}
