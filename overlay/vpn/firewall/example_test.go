package firewall_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
)

// The acceptance case of issue 6: group web may reach port 80 of this
// member (10.20.0.1), and nothing else may start anything inbound; this
// member may start anything. Replies pass both ways.
func Example() {
	cfg := firewall.Default() // no rules: everything passes
	cfg.Outbound = []firewall.Rule{{Port: "any", Proto: "any", Host: "any"}}
	cfg.Inbound = []firewall.Rule{{Port: "80", Proto: "tcp", Group: "web"}}
	fw, err := firewall.New(cfg, nil)
	if err != nil {
		panic(err)
	}
	fw.Sweep(time.Now()) // the VPN's housekeeping does this every second

	web := &security.Member{MemberSpec: security.MemberSpec{Name: "web-01", Groups: []string{"web"}}}
	guest := &security.Member{MemberSpec: security.MemberSpec{Name: "guest-01"}}
	web.Address[0], guest.Address[0] = 1, 2

	// Packets as the VPN hands them over: IP packets, Ethernet header off.
	fmt.Println("web -> :80 SYN     ", fw.Inbound(tcpPacket("10.20.0.2", "10.20.0.1", 40000, 80, syn), web))
	fmt.Println("     <- :80 SYN-ACK", fw.Outbound(tcpPacket("10.20.0.1", "10.20.0.2", 80, 40000, syn|ack), web))
	fmt.Println("guest -> :80 SYN   ", fw.Inbound(tcpPacket("10.20.0.3", "10.20.0.1", 40000, 80, syn), guest))
	fmt.Println("web -> :22 SYN     ", fw.Inbound(tcpPacket("10.20.0.2", "10.20.0.1", 40001, 22, syn), web))

	s := fw.Stats()
	fmt.Println("flows:", s.Flows, "dropped inbound, no rule:", s.Inbound.NoRule)
	// Output:
	// web -> :80 SYN      accept
	//      <- :80 SYN-ACK accept
	// guest -> :80 SYN    no_rule
	// web -> :22 SYN      no_rule
	// flows: 1 dropped inbound, no rule: 2
}

const (
	syn = 0x02
	ack = 0x10
)

// tcpPacket returns an IPv4 TCP segment with no data (checksums left at
// zero: the firewall does not read them).
func tcpPacket(src, dst string, sport, dport uint16, flags byte) []byte {
	p := make([]byte, 40)
	p[0], p[3], p[8], p[9] = 0x45, 40, 64, 6
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	p[32], p[33] = 5<<4, flags
	return p
}
