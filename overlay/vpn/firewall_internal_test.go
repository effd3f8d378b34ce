package vpn

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap/frame"
)

var (
	ourIP   = netip.MustParseAddr("10.66.0.1")
	webIP   = netip.MustParseAddr("10.66.0.2")
	otherIP = netip.MustParseAddr("10.66.0.3")
)

// newFilterVPN returns a VPN with what receiveFrom and allowOut use, our
// virtual IP 10.66.0.1/24, on a device that discards what it is given,
// filtering with fw.
func newFilterVPN(t testing.TB, fw firewall.Config) *VPN {
	t.Helper()
	v, d := newWriterVPN(t)
	d.discard = true
	close(d.gate)
	v.cfg = Default()
	v.cfg.Firewall = fw
	v.own = []netip.Prefix{netip.PrefixFrom(ourIP, 24)}
	v.fixed = v.own
	v.mac = []byte{0x02, 0, 0, 0, 0, 1}
	v.byIP = make(map[netip.Addr]*mapping)
	v.byAddr = make(map[overlay.Address]*remote)
	var err error
	if v.fw, err = firewall.New(fw, v.log); err != nil {
		t.Fatal(err)
	}
	return v
}

// testMember returns a member with virtual IP ip (its address derived
// from it) in groups.
func testMember(name string, ip netip.Addr, groups ...string) *security.Member {
	var a security.Address
	a[0], a[19] = 0xaa, ip.As4()[3]
	return &security.Member{
		MemberSpec: security.MemberSpec{Name: name, IPs: []netip.Prefix{netip.PrefixFrom(ip, 24)}, Groups: groups},
		Address:    a,
	}
}

// udp4 builds an Ethernet frame (after headroom bytes of room) with an
// IPv4/UDP packet.
func udp4(headroom int, from, to netip.AddrPort, payload []byte) []byte {
	f := frame.AppendEthernet(make([]byte, headroom), gatewayMAC, []byte{0x02, 0, 0, 0, 0, 9}, frame.TypeIPv4)
	ip := make([]byte, 28+len(payload))
	ip[0], ip[8], ip[9] = 0x45, 64, frame.ProtoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	s, d := from.Addr().As4(), to.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], frame.Checksum(ip[:20], 0))
	binary.BigEndian.PutUint16(ip[20:], from.Port())
	binary.BigEndian.PutUint16(ip[22:], to.Port())
	binary.BigEndian.PutUint16(ip[24:], uint16(8+len(payload)))
	copy(ip[28:], payload)
	return append(f, ip...)
}

// serveWeb: port 4001 for group web; this member starts nothing.
func serveWeb() firewall.Config {
	c := firewall.Default()
	c.Inbound = []firewall.Rule{{Port: "4001", Proto: "udp", Group: "web"}}
	c.Outbound = []firewall.Rule{}
	return c
}

// TestReceiveFrom_Firewall: a packet the rules refuse is dropped and
// counted before the VPN takes anything from it (no traffic counted, no
// address learned, nothing written); an allowed one is written, and the
// reply to it may leave though no outbound rule allows it, while a flow
// this member would start may not.
func TestReceiveFrom_Firewall(t *testing.T) {
	v := newFilterVPN(t, serveWeb())
	web, other := testMember("w1", webIP, "web"), testMember("o1", otherIP, "db")
	rWeb, rOther := &remote{addr: web.Address}, &remote{addr: other.Address}

	v.receiveFrom(rOther, other, udp4(0, netip.AddrPortFrom(otherIP, 4000), netip.AddrPortFrom(ourIP, 4001), []byte("x")))
	v.receiveFrom(rWeb, web, udp4(0, netip.AddrPortFrom(webIP, 4000), netip.AddrPortFrom(ourIP, 4002), []byte("x")))
	if got := v.fw.Stats().Inbound.NoRule; got != 2 {
		t.Errorf("inbound no_rule drops = %d, want 2", got)
	}
	if n := rOther.packetsIn.Load() + rOther.heard.Load() + rWeb.packetsIn.Load(); n != 0 {
		t.Errorf("dropped packets counted as traffic (%d)", n)
	}
	if m := v.byIP[otherIP]; m != nil || rOther.member.Load() != nil {
		t.Errorf("learned from a dropped packet: mapping %+v", m)
	}
	if n := v.stats.framesIn.Load(); n != 0 {
		t.Errorf("%d frames written", n)
	}

	v.receiveFrom(rWeb, web, udp4(0, netip.AddrPortFrom(webIP, 4000), netip.AddrPortFrom(ourIP, 4001), []byte("x")))
	if n := v.stats.framesIn.Load(); n != 1 || rWeb.packetsIn.Load() != 1 {
		t.Fatalf("allowed packet: %d frames written, %d packets in; firewall %+v", n, rWeb.packetsIn.Load(), v.fw.Stats())
	}
	if v.byIP[webIP] == nil || rWeb.member.Load() != web {
		t.Errorf("the sender of an allowed packet was not learned")
	}
	reply := udp4(headroom, netip.AddrPortFrom(ourIP, 4001), netip.AddrPortFrom(webIP, 4000), []byte("y"))
	if !v.allowOut(rWeb, reply) {
		t.Errorf("the reply was refused: %+v", v.fw.Stats())
	}
	start := udp4(headroom, netip.AddrPortFrom(ourIP, 4001), netip.AddrPortFrom(webIP, 4001), []byte("y"))
	if v.allowOut(rWeb, start) {
		t.Errorf("a flow no outbound rule allows was let out")
	}
	if s := v.fw.Stats(); s.Outbound.NoRule != 1 || s.Flows != 1 {
		t.Errorf("outbound no_rule drops = %d, flows = %d; want 1, 1", s.Outbound.NoRule, s.Flows)
	}
}

// TestVPN_ReloadFirewall: a valid configuration takes effect at the next
// packet; an invalid one is refused, naming its key, and the rules stay.
func TestVPN_ReloadFirewall(t *testing.T) {
	v := newFilterVPN(t, firewall.Default())
	other := testMember("o1", otherIP, "db")
	r := &remote{addr: other.Address}
	pkt := udp4(0, netip.AddrPortFrom(otherIP, 4000), netip.AddrPortFrom(ourIP, 4001), []byte("x"))
	v.receiveFrom(r, other, bytes.Clone(pkt))
	if n := v.stats.framesIn.Load(); n != 1 {
		t.Fatalf("with no rules, %d frames written, want 1", n)
	}
	bad := serveWeb()
	bad.Inbound[0].Port = "http"
	err := v.ReloadFirewall(bad)
	if want := `vpn.firewall.inbound[0].port: "http" is not a port or range`; err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("ReloadFirewall(bad) = %v, want an error with %q", err, want)
	}
	if err := v.ReloadFirewall(serveWeb()); err != nil {
		t.Fatal(err)
	}
	v.receiveFrom(r, other, bytes.Clone(pkt))
	if n, s := v.stats.framesIn.Load(), v.fw.Stats(); n != 1 || s.Inbound.NoRule != 1 || !s.Enabled {
		t.Errorf("after the reload: %d frames written, firewall %+v; want the packet dropped", n, s)
	}
}

// TestVPNPath_Firewall_NoAllocs: the firewall keeps the packet path free
// of allocations, on and off: a packet of a known flow in (through to
// the device) and out.
func TestVPNPath_Firewall_NoAllocs(t *testing.T) {
	for _, tt := range []struct {
		name string
		fw   firewall.Config
	}{{"off", firewall.Default()}, {"on", serveWeb()}} {
		t.Run(tt.name, func(t *testing.T) {
			v := newFilterVPN(t, tt.fw)
			web := testMember("w1", webIP, "web")
			r := &remote{addr: web.Address}
			in := udp4(0, netip.AddrPortFrom(webIP, 4000), netip.AddrPortFrom(ourIP, 4001), make([]byte, 1200))
			out := udp4(headroom, netip.AddrPortFrom(ourIP, 4001), netip.AddrPortFrom(webIP, 4000), make([]byte, 1200))
			v.receiveFrom(r, web, in) // the flow starts; web is learned
			for range 2 * writeQueueLen {
				v.receiveFrom(r, web, in) // the write queue's buffers are allocated
			}
			if !v.allowOut(r, out) {
				t.Fatal("reply refused")
			}
			v.fw.Sweep(time.Now())
			// Reached the device: written, or dropped at its full queue
			// (the test's writer drains it at its own pace).
			reached := func() uint64 { return v.stats.framesIn.Load() + v.stats.dropQueueFull.Load() }
			before := reached()
			if allocs := testing.AllocsPerRun(200, func() { v.receiveFrom(r, web, in) }); allocs != 0 {
				t.Errorf("receiveFrom allocates %v times, want 0", allocs)
			}
			// The queued frames are written on the writer's goroutine.
			for deadline := time.Now().Add(5 * time.Second); reached() == before && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			if reached() == before {
				t.Errorf("nothing reached the device: the firewall dropped the packets (%+v)", v.fw.Stats())
			}
			if allocs := testing.AllocsPerRun(200, func() { v.allowOut(r, out) }); allocs != 0 {
				t.Errorf("allowOut allocates %v times, want 0", allocs)
			}
		})
	}
}

// BenchmarkReceiveFrom_Firewall: a packet of a known flow from a member,
// through to the device, with the firewall off (no rules) and on.
func BenchmarkReceiveFrom_Firewall(b *testing.B) {
	for _, bb := range []struct {
		name string
		fw   firewall.Config
	}{{"off", firewall.Default()}, {"on", serveWeb()}} {
		b.Run(bb.name, func(b *testing.B) {
			v := newFilterVPN(b, bb.fw)
			web := testMember("w1", webIP, "web")
			r := &remote{addr: web.Address}
			in := udp4(0, netip.AddrPortFrom(webIP, 4000), netip.AddrPortFrom(ourIP, 4001), make([]byte, 1200))
			v.receiveFrom(r, web, in)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				v.receiveFrom(r, web, in)
			}
			if v.fw.Stats().Inbound.Total() != 0 {
				b.Fatalf("dropped: %+v", v.fw.Stats())
			}
		})
	}
}
