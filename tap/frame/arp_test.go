package frame

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestParseARP_Captured(t *testing.T) {
	a, err := ParseARP(dumpARPRequest[14:])
	if err != nil {
		t.Fatal(err)
	}
	if a.Op != ARPRequest || !bytes.Equal(a.SenderMAC, macLocal) || a.SenderIP != ip4Local ||
		!bytes.Equal(a.TargetMAC, make(net.HardwareAddr, 6)) || a.TargetIP != ip4Peer || a.IsGratuitous() {
		t.Errorf("ParseARP = %+v", a)
	}
	// Ethernet pads the frame to 60 bytes; the padding is ignored.
	padded := append(bytes.Clone(dumpARPRequest[14:]), make([]byte, 18)...)
	if b, err := ParseARP(padded); err != nil || b.TargetIP != a.TargetIP {
		t.Errorf("ParseARP(padded) = %+v, %v", b, err)
	}
}

func TestAppendARPReply(t *testing.T) {
	req, err := ParseARP(dumpARPRequest[14:])
	if err != nil {
		t.Fatal(err)
	}
	got := AppendARPReply(make([]byte, 0, 64), req, macPeer)
	// 10.77.0.2 is at 02:77:00:00:00:02, to 10.77.0.1 at 02:77:00:00:00:01.
	want := mustHex("027700000001 027700000002 0806" +
		" 0001 0800 06 04 0002 027700000002 0a4d0002 027700000001 0a4d0001")
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendARPReply =\n%x, want\n%x", got, want)
	}
	eth, err := ParseEthernet(got)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ParseARP(eth.Payload)
	if err != nil || rep.Op != ARPReply || rep.SenderIP != req.TargetIP || rep.TargetIP != req.SenderIP {
		t.Errorf("reply parses as %+v, %v", rep, err)
	}
}

func TestAppendARP_Gratuitous(t *testing.T) {
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := AppendARP(nil, bcast, ARP{Op: ARPRequest, SenderMAC: macLocal, SenderIP: ip4Local, TargetMAC: bcast, TargetIP: ip4Local})
	eth, _ := ParseEthernet(f)
	a, err := ParseARP(eth.Payload)
	if err != nil || !a.IsGratuitous() || !IsBroadcast(eth.Dst) || len(f) != 14+ARPLen {
		t.Errorf("gratuitous ARP %x parses as %+v, %v", f, a, err)
	}
	// An IPv6 or missing address gives zeros, not a panic.
	f = AppendARP(nil, bcast, ARP{Op: ARPRequest, SenderIP: netip.MustParseAddr("::1")})
	if len(f) != 14+ARPLen {
		t.Errorf("ARP with bad addresses is %d bytes", len(f))
	}
}

func TestParseARP_Errors(t *testing.T) {
	edit := func(i int, v ...byte) []byte {
		b := bytes.Clone(dumpARPRequest[14:])
		copy(b[i:], v)
		return b
	}
	tests := []struct {
		name string
		pkt  []byte
		kind error
		want string
	}{
		{"short", dumpARPRequest[14:41], ErrTruncated, "arp: packet length 27 below 28"},
		{"IEEE 802 hardware", edit(0, 0, 6), ErrUnsupported, "hardware type 6 is not Ethernet"},
		{"IPv6 protocol", edit(2, 0x86, 0xdd), ErrUnsupported, "protocol type 0x86dd is not IPv4"},
		{"hardware length 8", edit(4, 8), ErrMalformed, "address lengths 8 and 4"},
		{"protocol length 16", edit(5, 16), ErrMalformed, "address lengths 6 and 16"},
		{"RARP", edit(6, 0, 3), ErrUnsupported, "operation 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseARP(tt.pkt)
			wantError(t, err, tt.kind, tt.want)
		})
	}
}
