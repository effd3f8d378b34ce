package firewall

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringvpn/ringvpn/security"
)

// TestRules_Match: the first packet of a flow, inbound, against one rule
// list; every case on a fresh firewall.
func TestRules_Match(t *testing.T) {
	web80 := Rule{Port: "80", Proto: "tcp", Group: "web"}
	tests := []struct {
		name  string
		rules []Rule
		pkt   []byte
		peer  *security.Member
		want  Verdict
	}{
		{"group matches", rules(web80), tcp(peer4, local4, 40000, 80, syn), web, Accept},
		{"group does not", rules(web80), tcp(peer4, local4, 40000, 80, syn), ops, DropNoRule},
		{"other port", rules(web80), tcp(peer4, local4, 40000, 81, syn), web, DropNoRule},
		{"source port is not the port", rules(web80), tcp(peer4, local4, 80, 40000, syn), web, DropNoRule},
		{"tcp rule, udp packet", rules(web80), udp(peer4, local4, 40000, 80), web, DropNoRule},
		{"IPv6", rules(web80), tcp(peer6, local6, 40000, 80, syn), web, Accept},
		{"nil peer", rules(web80), tcp(peer4, local4, 40000, 80, syn), nil, DropNoRule},

		{"groups: all", rules(Rule{Port: "22", Proto: "tcp", Groups: []string{"ops", "laptop"}}), tcp(peer4, local4, 1, 22, syn), laptop, Accept},
		{"groups: one of two", rules(Rule{Port: "22", Proto: "tcp", Groups: []string{"ops", "laptop"}}), tcp(peer4, local4, 1, 22, syn), ops, DropNoRule},
		{"group and groups", rules(Rule{Port: "22", Proto: "tcp", Group: "laptop", Groups: []string{"ops"}}), tcp(peer4, local4, 1, 22, syn), laptop, Accept},
		{"group any", rules(Rule{Port: "22", Proto: "tcp", Group: "any"}), tcp(peer4, local4, 1, 22, syn), nobody, Accept},

		{"host", rules(Rule{Port: "any", Proto: "any", Host: "ops-01"}), udp(peer4, local4, 1, 53), ops, Accept},
		{"host, other member", rules(Rule{Port: "any", Proto: "any", Host: "ops-01"}), udp(peer4, local4, 1, 53), laptop, DropNoRule},
		{"host any", rules(anyHost), udp(peer4, local4, 1, 53), nobody, Accept},
		{"host any and group: AND", rules(Rule{Port: "any", Proto: "any", Host: "any", Group: "web"}), udp(peer4, local4, 1, 53), nobody, DropNoRule},
		{"host and group: AND", rules(Rule{Port: "any", Proto: "any", Host: "ops-01", Group: "web"}), udp(peer4, local4, 1, 53), ops, DropNoRule},
		{"ca_name", rules(Rule{Port: "any", Proto: "any", CAName: "group-ca"}), udp(peer4, local4, 1, 53), ops, Accept},
		{"ca_name, other CA", rules(Rule{Port: "any", Proto: "any", CAName: "old-ca"}), udp(peer4, local4, 1, 53), ops, DropNoRule},

		{"cidr", rules(Rule{Port: "53", Proto: "udp", CIDR: "10.20.0.0/16"}), udp(peer4, local4, 1, 53), nobody, Accept},
		{"cidr, outside", rules(Rule{Port: "53", Proto: "udp", CIDR: "10.30.0.0/16"}), udp(peer4, local4, 1, 53), nobody, DropNoRule},
		{"cidr, one address", rules(Rule{Port: "53", Proto: "udp", CIDR: "10.20.0.2"}), udp(peer4, local4, 1, 53), nobody, Accept},
		{"cidr, nil peer", rules(Rule{Port: "53", Proto: "udp", CIDR: "10.20.0.0/16"}), udp(peer4, local4, 1, 53), nil, Accept},
		{"cidr IPv4, IPv6 packet", rules(Rule{Port: "53", Proto: "udp", CIDR: "0.0.0.0/0"}), udp(peer6, local6, 1, 53), nobody, DropNoRule},
		{"cidr IPv6", rules(Rule{Port: "53", Proto: "udp", CIDR: "::/0"}), udp(peer6, local6, 1, 53), nobody, Accept},
		{"cidr any, IPv6", rules(Rule{Port: "53", Proto: "udp", CIDR: "any"}), udp(peer6, local6, 1, 53), nobody, Accept},
		{"cidr and group: AND", rules(Rule{Port: "53", Proto: "udp", CIDR: "10.20.0.0/16", Group: "web"}), udp(peer4, local4, 1, 53), nobody, DropNoRule},
		{"local_cidr", rules(Rule{Port: "53", Proto: "udp", Host: "any", LocalCIDR: "10.20.0.1"}), udp(peer4, local4, 1, 53), nobody, Accept},
		{"local_cidr, other address", rules(Rule{Port: "53", Proto: "udp", Host: "any", LocalCIDR: "10.20.0.1"}), udp(peer4, netip.MustParseAddr("10.20.0.3"), 1, 53), nobody, DropNoRule},

		{"range low", rules(Rule{Port: "1000-2000", Proto: "udp", Host: "any"}), udp(peer4, local4, 1, 1000), nobody, Accept},
		{"range high", rules(Rule{Port: "1000-2000", Proto: "udp", Host: "any"}), udp(peer4, local4, 1, 2000), nobody, Accept},
		{"below range", rules(Rule{Port: "1000-2000", Proto: "udp", Host: "any"}), udp(peer4, local4, 1, 999), nobody, DropNoRule},
		{"above range", rules(Rule{Port: "1000-2000", Proto: "udp", Host: "any"}), udp(peer4, local4, 1, 2001), nobody, DropNoRule},

		{"icmp", rules(Rule{Port: "any", Proto: "icmp", Host: "any"}), ping(peer4, local4, 7, false), nobody, Accept},
		{"icmp covers ICMPv6", rules(Rule{Port: "any", Proto: "icmp", Host: "any"}), ping(peer6, local6, 7, false), nobody, Accept},
		{"icmp rule, tcp packet", rules(Rule{Port: "any", Proto: "icmp", Host: "any"}), tcp(peer4, local4, 1, 80, syn), nobody, DropNoRule},
		{"proto any with a port: not icmp", rules(Rule{Port: "1-65535", Proto: "any", Host: "any"}), ping(peer4, local4, 7, false), nobody, DropNoRule},
		{"proto any with a port: udp", rules(Rule{Port: "1-65535", Proto: "any", Host: "any"}), udp(peer4, local4, 7, 9), nobody, Accept},
		{"proto any, any port: GRE", rules(Rule{Port: "any", Proto: "any", Host: "any"}), ipPacket(47, peer4, local4, make([]byte, 8)), nobody, Accept},
		{"tcp any port: not GRE", rules(Rule{Port: "any", Proto: "tcp", Host: "any"}), ipPacket(47, peer4, local4, make([]byte, 8)), nobody, DropNoRule},
		{"other ICMP under the rules", rules(Rule{Port: "any", Proto: "icmp", Host: "any"}), icmpMessage(peer4, local4, 13, 0, make([]byte, 16)), nobody, Accept},
		{"other ICMP, no rule", rules(web80), icmpMessage(peer4, local4, 13, 0, make([]byte, 16)), web, DropNoRule},

		{"second rule", rules(web80, Rule{Port: "443", Proto: "tcp", Group: "web"}), tcp(peer4, local4, 40000, 443, syn), web, Accept},
		{"empty list", []Rule{}, tcp(peer4, local4, 40000, 80, syn), web, DropNoRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFirewall(t, tt.rules, []Rule{})
			want(t, "Inbound", f.Inbound(tt.pkt, tt.peer), tt.want)
		})
	}
}

// TestRules_Outbound: outbound rules match the remote port and address.
func TestRules_Outbound(t *testing.T) {
	f := newFirewall(t, []Rule{}, rules(
		Rule{Port: "443", Proto: "tcp", Group: "web", CIDR: "10.20.0.0/16"},
		Rule{Port: "53", Proto: "udp", CIDR: "10.20.0.2", LocalCIDR: "10.20.0.1"},
	))
	want(t, "to web:443", f.Outbound(tcp(local4, peer4, 50000, 443, syn), web), Accept)
	want(t, "to web:443 outside cidr", f.Outbound(tcp(local4, other4, 50000, 443, syn), web), DropNoRule)
	want(t, "to ops:443", f.Outbound(tcp(local4, peer4, 50001, 443, syn), ops), DropNoRule)
	want(t, "from port 443", f.Outbound(tcp(local4, peer4, 443, 50002, syn), web), DropNoRule)
	want(t, "dns, unknown member", f.Outbound(udp(local4, peer4, 50000, 53), nil), Accept)
	want(t, "dns from another local address", f.Outbound(udp(netip.MustParseAddr("10.20.0.7"), peer4, 50000, 53), nil), DropNoRule)
}

// TestFirewall_Off: with no rule lists everything passes, unparsed.
func TestFirewall_Off(t *testing.T) {
	f := newFirewall(t, nil, nil)
	for _, pkt := range [][]byte{tcp(peer4, local4, 1, 2, syn), nil, {0x45}, []byte("garbage")} {
		want(t, "Inbound", f.Inbound(pkt, nobody), Accept)
		want(t, "Outbound", f.Outbound(pkt, nil), Accept)
	}
	if s := f.Stats(); s.Enabled || s.Flows != 0 || s.InboundRules != -1 || s.OutboundRules != -1 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestFirewall_AbsentListAllows: a list that is absent lets everything
// through its way, while the other is enforced, replies included.
func TestFirewall_AbsentListAllows(t *testing.T) {
	f := newFirewall(t, rules(Rule{Port: "80", Proto: "tcp", Group: "web"}), nil)
	want(t, "any outbound", f.Outbound(udp(local4, peer4, 5000, 9999), nobody), Accept)
	want(t, "its reply", f.Inbound(udp(peer4, local4, 9999, 5000), nobody), Accept)
	want(t, "new inbound", f.Inbound(udp(peer4, local4, 9999, 5001), nobody), DropNoRule)
	want(t, "allowed inbound", f.Inbound(tcp(peer4, local4, 40000, 80, syn), web), Accept)
	s := f.Stats()
	if !s.Enabled || s.InboundRules != 1 || s.OutboundRules != -1 || s.Flows != 2 || s.NewFlows != 2 || s.Inbound.NoRule != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestConntrack_RepliesPass: the acceptance scenario of issue 6, and
// replies of flows started either way.
func TestConntrack_RepliesPass(t *testing.T) {
	// Only web may reach port 80; outbound, anything.
	f := newFirewall(t, rules(Rule{Port: "80", Proto: "tcp", Group: "web"}), rules(anyHost))
	want(t, "web SYN", f.Inbound(tcp(peer4, local4, 40000, 80, syn), web), Accept)
	want(t, "SYN-ACK", f.Outbound(tcp(local4, peer4, 80, 40000, synack), web), Accept)
	want(t, "ACK", f.Inbound(tcp(peer4, local4, 40000, 80, ack), web), Accept)
	want(t, "ops SYN", f.Inbound(tcp(peer4, local4, 40001, 80, syn), ops), DropNoRule)
	want(t, "web to port 22", f.Inbound(tcp(peer4, local4, 40002, 22, syn), web), DropNoRule)

	// Outbound flows' replies pass inbound without a rule.
	want(t, "DNS query", f.Outbound(udp(local6, peer6, 5353, 53), ops), Accept)
	want(t, "DNS answer", f.Inbound(udp(peer6, local6, 53, 5353), ops), Accept)
	want(t, "from another port", f.Inbound(udp(peer6, local6, 54, 5353), ops), DropNoRule)
	want(t, "to another port", f.Inbound(udp(peer6, local6, 53, 5354), ops), DropNoRule)
	want(t, "ping", f.Outbound(ping(local4, peer4, 99, false), ops), Accept)
	want(t, "pong", f.Inbound(ping(peer4, local4, 99, true), ops), Accept)
	want(t, "pong, other id", f.Inbound(ping(peer4, local4, 98, true), ops), DropNoRule)
	want(t, "ping6", f.Outbound(ping(local6, peer6, 99, false), ops), Accept)
	want(t, "pong6", f.Inbound(ping(peer6, local6, 99, true), ops), Accept)

	// And the other way: with no outbound rule, replies still go out.
	g := newFirewall(t, rules(Rule{Port: "53", Proto: "udp", Host: "any"}), []Rule{})
	want(t, "query in", g.Inbound(udp(peer4, local4, 5353, 53), ops), Accept)
	want(t, "answer out", g.Outbound(udp(local4, peer4, 53, 5353), ops), Accept)
	want(t, "new out", g.Outbound(udp(local4, peer4, 53, 5354), ops), DropNoRule)
	if s := g.Stats(); s.Outbound.NoRule != 1 || s.Inbound.Total() != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestConntrack_FlowBelongsToItsMember: another member can't use a flow
// it did not start, even from the same addresses.
func TestConntrack_FlowBelongsToItsMember(t *testing.T) {
	f := newFirewall(t, []Rule{}, rules(Rule{Port: "any", Proto: "any", Host: "ops-01"}))
	want(t, "to ops", f.Outbound(udp(local4, peer4, 5000, 53), ops), Accept)
	want(t, "reply from ops", f.Inbound(udp(peer4, local4, 53, 5000), ops), Accept)
	want(t, "reply from web", f.Inbound(udp(peer4, local4, 53, 5000), web), DropNoRule)
	want(t, "reply from ops again", f.Inbound(udp(peer4, local4, 53, 5000), ops), Accept)

	// When the member is not known (Outbound with nil), addresses
	// decide alone.
	want(t, "to an unknown member", f.Outbound(udp(local4, peer4, 5001, 53), nil), DropNoRule) // host: ops-01 needs the member
	g := newFirewall(t, []Rule{}, rules(Rule{Port: "any", Proto: "any", CIDR: "10.20.0.0/16"}))
	want(t, "to an unknown member", g.Outbound(udp(local4, peer4, 5001, 53), nil), Accept)
	want(t, "its reply, from ops", g.Inbound(udp(peer4, local4, 53, 5001), ops), Accept)
	want(t, "to ops", g.Outbound(udp(local4, peer4, 5002, 53), ops), Accept)
	want(t, "the same flow, member unknown", g.Outbound(udp(local4, peer4, 5002, 53), nil), Accept)
	want(t, "its reply, from web", g.Inbound(udp(peer4, local4, 53, 5002), web), DropNoRule)
}

// TestConntrack_Expiry: flows are forgotten after their timeouts, which
// depend on the protocol and, for TCP, the state.
func TestConntrack_Expiry(t *testing.T) {
	cfg := Default()
	cfg.Inbound, cfg.Outbound = []Rule{}, rules(anyHost)
	cfg.Conntrack.TCPTimeout = 10 * time.Minute
	cfg.Conntrack.UDPTimeout = time.Minute
	cfg.Conntrack.DefaultTimeout = 20 * time.Second
	f := newFirewallConfig(t, cfg)
	sec := time.Second

	// UDP: each packet restarts the timeout.
	want(t, "udp out", f.Outbound(udp(local4, peer4, 1000, 53), ops), Accept)
	at(f, 59*sec)
	want(t, "udp reply at 59s", f.Inbound(udp(peer4, local4, 53, 1000), ops), Accept)
	at(f, 118*sec)
	want(t, "udp reply at 118s", f.Inbound(udp(peer4, local4, 53, 1000), ops), Accept)
	if n := f.Sweep(t0.Add(178 * sec)); n != 0 {
		t.Errorf("Sweep at 178s forgot %d flows, want 0", n)
	}
	if n := f.Sweep(t0.Add(179 * sec)); n != 1 {
		t.Errorf("Sweep at 179s forgot %d flows, want 1", n)
	}
	want(t, "udp reply at 179s", f.Inbound(udp(peer4, local4, 53, 1000), ops), DropNoRule)

	// ICMP echo: default_timeout.
	f = newFirewallConfig(t, cfg)
	want(t, "ping", f.Outbound(ping(local4, peer4, 5, false), ops), Accept)
	at(f, 21*sec)
	want(t, "late pong", f.Inbound(ping(peer4, local4, 5, true), ops), DropNoRule)

	// TCP, never answered: 2m.
	f = newFirewallConfig(t, cfg)
	want(t, "SYN", f.Outbound(tcp(local4, peer4, 1000, 80, syn), ops), Accept)
	at(f, 2*time.Minute+sec)
	want(t, "SYN-ACK after 2m", f.Inbound(tcp(peer4, local4, 80, 1000, synack), ops), DropNoRule)

	// TCP, answered: tcp_timeout.
	f = newFirewallConfig(t, cfg)
	want(t, "SYN", f.Outbound(tcp(local4, peer4, 1000, 80, syn), ops), Accept)
	want(t, "SYN-ACK", f.Inbound(tcp(peer4, local4, 80, 1000, synack), ops), Accept)
	at(f, 9*time.Minute)
	want(t, "data after 9m", f.Inbound(tcp(peer4, local4, 80, 1000, ack), ops), Accept)
	at(f, 19*time.Minute)
	want(t, "data after 10m more", f.Inbound(tcp(peer4, local4, 80, 1000, ack), ops), Accept)
	at(f, 29*time.Minute+sec)
	want(t, "data after 10m and 1s more", f.Inbound(tcp(peer4, local4, 80, 1000, ack), ops), DropNoRule)

	// TCP, closed by a FIN each way: 30s.
	f = newFirewallConfig(t, cfg)
	want(t, "SYN", f.Outbound(tcp(local4, peer4, 1000, 80, syn), ops), Accept)
	want(t, "SYN-ACK", f.Inbound(tcp(peer4, local4, 80, 1000, synack), ops), Accept)
	want(t, "FIN out", f.Outbound(tcp(local4, peer4, 1000, 80, finack), ops), Accept)
	at(f, 20*sec)
	want(t, "data in, half closed", f.Inbound(tcp(peer4, local4, 80, 1000, ack), ops), Accept)
	want(t, "FIN in", f.Inbound(tcp(peer4, local4, 80, 1000, finack), ops), Accept)
	at(f, 49*sec)
	want(t, "last ACK", f.Outbound(tcp(local4, peer4, 1000, 80, ack), ops), Accept)
	at(f, 80*sec)
	want(t, "FIN again after 31s", f.Inbound(tcp(peer4, local4, 80, 1000, finack), ops), DropNoRule)

	// TCP, reset: 30s.
	f = newFirewallConfig(t, cfg)
	want(t, "SYN", f.Outbound(tcp(local4, peer4, 1000, 80, syn), ops), Accept)
	want(t, "RST", f.Inbound(tcp(peer4, local4, 80, 1000, rst|ack), ops), Accept)
	at(f, 31*sec)
	want(t, "RST again after 31s", f.Inbound(tcp(peer4, local4, 80, 1000, rst|ack), ops), DropNoRule)

	if s := f.Stats(); s.Flows != 0 || s.Expired != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestConntrack_ClosedFlowReopened: a SYN on the ports of a closed TCP
// flow starts a new flow, under the rules of its own direction.
func TestConntrack_ClosedFlowReopened(t *testing.T) {
	f := newFirewall(t, []Rule{}, rules(anyHost))
	want(t, "SYN out", f.Outbound(tcp(local4, peer4, 1000, 80, syn), ops), Accept)
	want(t, "SYN-ACK", f.Inbound(tcp(peer4, local4, 80, 1000, synack), ops), Accept)
	want(t, "RST out", f.Outbound(tcp(local4, peer4, 1000, 80, rst), ops), Accept)
	want(t, "SYN in, same ports", f.Inbound(tcp(peer4, local4, 80, 1000, syn), ops), DropNoRule)
	want(t, "SYN out again", f.Outbound(tcp(local4, peer4, 1000, 80, syn), ops), Accept)
	want(t, "SYN-ACK again", f.Inbound(tcp(peer4, local4, 80, 1000, synack), ops), Accept)
	if s := f.Stats(); s.NewFlows != 2 || s.Flows != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestReload_DropsNewlyForbiddenFlows: after a reload that changes the
// rules, a flow they no longer allow is dropped at its next packet, both
// ways; flows they still allow go on; a reload that only changes
// timeouts keeps the generation.
func TestReload_DropsNewlyForbiddenFlows(t *testing.T) {
	cfg := Default()
	cfg.Inbound = rules(Rule{Port: "80", Proto: "tcp", Group: "web"}, Rule{Port: "22", Proto: "tcp", Group: "ops"})
	cfg.Outbound = []Rule{}
	f := newFirewallConfig(t, cfg)
	want(t, "web SYN", f.Inbound(tcp(peer4, local4, 40000, 80, syn), web), Accept)
	want(t, "ssh SYN", f.Inbound(tcp(peer4, local4, 40001, 22, syn), ops), Accept)
	gen := f.Stats().Generation

	cfg.Inbound = rules(Rule{Port: "22", Proto: "tcp", Group: "ops"})
	if err := f.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if g := f.Stats().Generation; g != gen+1 {
		t.Errorf("generation %d after a change, want %d", g, gen+1)
	}
	want(t, "web SYN-ACK", f.Outbound(tcp(local4, peer4, 80, 40000, synack), web), DropNoRule)
	want(t, "web ACK", f.Inbound(tcp(peer4, local4, 40000, 80, ack), web), DropNoRule)
	want(t, "ssh SYN-ACK", f.Outbound(tcp(local4, peer4, 22, 40001, synack), ops), Accept)
	want(t, "ssh ACK", f.Inbound(tcp(peer4, local4, 40001, 22, ack), ops), Accept)
	if s := f.Stats(); s.Revoked != 1 || s.Flows != 1 {
		t.Errorf("Stats = %+v", s)
	}

	// Only a timeout: same generation.
	cfg.Conntrack.UDPTimeout = time.Minute
	if err := f.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if g := f.Stats().Generation; g != gen+1 {
		t.Errorf("generation %d after a timeout change, want %d", g, gen+1)
	}

	// An invalid config changes nothing.
	bad := cfg
	bad.Inbound = rules(Rule{Port: "80-", Proto: "tcp", Host: "any"})
	if err := f.Reload(bad); err == nil {
		t.Error("Reload of an invalid config: no error")
	}
	want(t, "ssh after a failed reload", f.Inbound(tcp(peer4, local4, 40001, 22, ack), ops), Accept)
	want(t, "web after a failed reload", f.Inbound(tcp(peer4, local4, 40009, 80, syn), web), DropNoRule)

	// Turning the firewall off lets everything through; on again, flows
	// are checked again.
	if err := f.Reload(Default()); err != nil {
		t.Fatal(err)
	}
	want(t, "off", f.Inbound(tcp(peer4, local4, 40009, 80, syn), web), Accept)
	cfg.Inbound = []Rule{}
	if err := f.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	want(t, "ssh, rule gone", f.Inbound(tcp(peer4, local4, 40001, 22, ack), ops), DropNoRule)
}

// TestReload_FlowRestartsTheOtherWay: a flow that lost its rule but whose
// packet the other direction's rules allow starts again that way.
func TestReload_FlowRestartsTheOtherWay(t *testing.T) {
	cfg := Default()
	cfg.Inbound, cfg.Outbound = []Rule{}, rules(Rule{Port: "53", Proto: "udp", Host: "any"})
	f := newFirewallConfig(t, cfg)
	want(t, "query out", f.Outbound(udp(local4, peer4, 5000, 53), ops), Accept)
	cfg.Inbound, cfg.Outbound = rules(Rule{Port: "5000", Proto: "udp", Host: "any"}), []Rule{}
	if err := f.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	want(t, "answer in, allowed in now", f.Inbound(udp(peer4, local4, 53, 5000), ops), Accept)
	want(t, "query out, as its reply", f.Outbound(udp(local4, peer4, 5000, 53), ops), Accept)
}

// TestConntrack_Bounded: a full table refuses new flows while its flows
// are answered and open, and pushes out never-answered ones.
func TestConntrack_Bounded(t *testing.T) {
	cfg := Default()
	cfg.Inbound, cfg.Outbound = rules(anyHost), rules(anyHost)
	cfg.Conntrack.MaxEntries = MinEntries
	f := newFirewallConfig(t, cfg)
	for i := range MinEntries {
		port := uint16(1000 + i)
		want(t, "out", f.Outbound(udp(local4, peer4, port, 53), ops), Accept)
		want(t, "answer", f.Inbound(udp(peer4, local4, 53, port), ops), Accept)
	}
	want(t, "one more", f.Outbound(udp(local4, peer4, 999, 53), ops), DropTableFull)
	want(t, "one more in", f.Inbound(tcp(peer4, local4, 999, 22, syn), ops), DropTableFull)
	want(t, "a known flow", f.Inbound(udp(peer4, local4, 53, 1000), ops), Accept)
	s := f.Stats()
	if s.Flows != MinEntries || s.MaxFlows != MinEntries || s.Outbound.TableFull != 1 || s.Inbound.TableFull != 1 || s.Evicted != 0 {
		t.Errorf("Stats = %+v", s)
	}

	// Flows never answered make room.
	g := newFirewallConfig(t, cfg)
	for i := range 10 * MinEntries {
		want(t, "scan", g.Inbound(tcp(peer4, local4, 999, uint16(1+i), syn), nobody), Accept)
	}
	s = g.Stats()
	if s.Flows != MinEntries || s.Evicted != 9*MinEntries || s.Inbound.TableFull != 0 {
		t.Errorf("Stats = %+v", s)
	}

	// Expired ones too, before the Sweep.
	h := newFirewallConfig(t, cfg)
	for i := range MinEntries {
		port := uint16(1000 + i)
		want(t, "out", h.Outbound(udp(local4, peer4, port, 53), ops), Accept)
		want(t, "answer", h.Inbound(udp(peer4, local4, 53, port), ops), Accept)
	}
	h.now.Add(int64(DefaultUDPTimeout + time.Second)) // the clock, without a sweep
	want(t, "after the timeout", h.Outbound(udp(local4, peer4, 999, 53), ops), Accept)
	if s := h.Stats(); s.Expired != 1 || s.Evicted != 0 || s.Flows != MinEntries {
		t.Errorf("Stats = %+v", s)
	}
}

// TestFirewall_DropLogsLimited: at debug level, at most 10 drops are
// logged between two Sweeps; none above debug level.
func TestFirewall_DropLogsLimited(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	cfg := Default()
	cfg.Inbound, cfg.Outbound = []Rule{}, []Rule{}
	f, err := New(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	drop := func(n int) {
		for i := range n {
			f.Inbound(udp(peer4, local4, uint16(i), 53), ops)
		}
	}
	drop(25)
	if n := logs.FilterMessage("packet dropped").Len(); n != dropLogsPerSweep {
		t.Errorf("%d drops logged, want %d", n, dropLogsPerSweep)
	}
	f.Sweep(t0)
	drop(3)
	if n := logs.FilterMessage("packet dropped").Len(); n != dropLogsPerSweep+3 {
		t.Errorf("%d drops logged, want %d", n, dropLogsPerSweep+3)
	}
	e := logs.FilterMessage("packet dropped").All()[0]
	if got := e.ContextMap(); got["reason"] != "no_rule" || got["member"] != "ops-01" || got["src"] != "10.20.0.2" || got["dport"] != uint16(53) {
		t.Errorf("fields %v", got)
	}

	core, logs = observer.New(zap.InfoLevel)
	f, err = New(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	drop(5)
	if n := logs.FilterMessage("packet dropped").Len(); n != 0 {
		t.Errorf("%d drops logged at info level", n)
	}
	if n := logs.FilterMessage("firewall rules loaded").Len(); n != 1 {
		t.Errorf("%d lines on loading rules, want 1", n)
	}
	if f.logBudget.Load() != dropLogsPerSweep {
		t.Errorf("budget spent with debug off: %d", f.logBudget.Load())
	}
}

// TestFragments: later fragments follow their first fragment.
func TestFragments(t *testing.T) {
	f := newFirewall(t, rules(Rule{Port: "53", Proto: "udp", Host: "any"}), []Rule{})
	for _, fam := range []struct {
		name  string
		frags func(id uint32, dport uint16) ([]byte, []byte)
	}{
		{"IPv4", func(id uint32, dport uint16) ([]byte, []byte) {
			return fragments4(peer4, local4, uint16(id), 5000, dport)
		}},
		{"IPv6", func(id uint32, dport uint16) ([]byte, []byte) { return fragments6(peer6, local6, id, 5000, dport) }},
	} {
		t.Run(fam.name, func(t *testing.T) {
			first, second := fam.frags(7, 53)
			want(t, "first", f.Inbound(first, ops), Accept)
			want(t, "second", f.Inbound(second, ops), Accept)
			want(t, "second from another member", f.Inbound(second, web), DropFragment)
			_, orphan := fam.frags(8, 53)
			want(t, "second of an unseen datagram", f.Inbound(orphan, ops), DropFragment)
			first, second = fam.frags(9, 54)
			want(t, "first, no rule", f.Inbound(first, ops), DropNoRule)
			want(t, "its second", f.Inbound(second, ops), DropFragment)
			first, second = fam.frags(10, 53)
			want(t, "first", f.Inbound(first, ops), Accept)
			at(f, 31*time.Second)
			want(t, "second after 31s", f.Inbound(second, ops), DropFragment)
			at(f, 0)
		})
	}
	if s := f.Stats(); s.Inbound.Fragment != 8 {
		t.Errorf("Stats = %+v", s)
	}

	// Tiny first fragments and RFC 1858 overlaps are bad packets.
	tcpHdr := tcpHeader(5000, 53, syn)
	tiny := ip4(protoTCP, peer4, local4, 11, 0x2000, tcpHdr[:8])
	want(t, "tiny first fragment", f.Inbound(tiny, ops), DropBadPacket)
	overlap := ip4(protoTCP, peer4, local4, 11, 1, tcpHdr[8:])
	want(t, "offset 8 TCP fragment", f.Inbound(overlap, ops), DropBadPacket)
}

// TestICMPErrors: an ICMP error about a tracked flow passes with it.
func TestICMPErrors(t *testing.T) {
	f := newFirewall(t, rules(Rule{Port: "53", Proto: "udp", Host: "any"}), rules(Rule{Port: "any", Proto: "tcp", Host: "any"}, Rule{Port: "any", Proto: "udp", Host: "any"}))
	query := udp(local4, peer4, 5000, 53)
	want(t, "query", f.Outbound(query, ops), Accept)
	want(t, "port unreachable", f.Inbound(icmpError(peer4, local4, query), ops), Accept)
	want(t, "about an unknown flow", f.Inbound(icmpError(peer4, local4, udp(local4, peer4, 5001, 53)), ops), DropNoRule)
	want(t, "about a flow, from another member", f.Inbound(icmpError(peer4, local4, query), web), DropNoRule)
	want(t, "about a flow, to someone else", f.Inbound(icmpError(peer4, other4, query), ops), DropNoRule)

	syn6 := tcp(local6, peer6, 5000, 443, syn)
	want(t, "SYN", f.Outbound(syn6, ops), Accept)
	want(t, "packet too big", f.Inbound(icmpError(peer6, local6, syn6), ops), Accept)

	ping4 := ping(local4, peer4, 3, false)
	want(t, "ping, no rule", f.Outbound(ping4, ops), DropNoRule)
	want(t, "error about it", f.Inbound(icmpError(peer4, local4, ping4), ops), DropNoRule)

	// Our own errors about inbound flows go out.
	in := udp(peer4, local4, 6000, 53)
	want(t, "query in", f.Inbound(in, ops), Accept)
	want(t, "port unreachable out", f.Outbound(icmpError(local4, peer4, in), ops), Accept)
}

// TestNDP: neighbour discovery passes whatever the rules.
func TestNDP(t *testing.T) {
	f := newFirewall(t, []Rule{}, []Rule{})
	ns := ip6(protoICMPv6, peer6, local6, 255, append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, local6.AsSlice()...))
	want(t, "NS in", f.Inbound(ns, ops), Accept)
	na := ip6(protoICMPv6, local6, peer6, 255, append([]byte{136, 0, 0, 0, 0x60, 0, 0, 0}, local6.AsSlice()...))
	want(t, "NA out", f.Outbound(na, ops), Accept)
	routed := ip6(protoICMPv6, peer6, local6, 64, append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, local6.AsSlice()...))
	want(t, "NS with hop limit 64", f.Inbound(routed, ops), DropNoRule)
	redirect := ip6(protoICMPv6, peer6, local6, 255, make([]byte, 40))
	redirect[40] = 137
	want(t, "redirect", f.Inbound(redirect, ops), DropNoRule)
}

// TestBadPackets: what does not parse is dropped and counted.
func TestBadPackets(t *testing.T) {
	f := newFirewall(t, rules(anyHost), rules(anyHost))
	good := tcp(peer4, local4, 1, 2, syn)
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"version 5", append([]byte{0x55}, good[1:]...)},
		{"truncated IPv4", good[:19]},
		{"short TCP", ip4(protoTCP, peer4, local4, 1, 0, make([]byte, 19))},
		{"short UDP", ip4(protoUDP, peer4, local4, 1, 0, make([]byte, 7))},
		{"short ICMP", ip4(protoICMP, peer4, local4, 1, 0, make([]byte, 7))},
		{"short ICMPv6", ip6(protoICMPv6, peer6, local6, 64, make([]byte, 4))},
		{"IPv6 length past the end", ip6(protoUDP, peer6, local6, 64, make([]byte, 8))[:47]},
		{"IPv6 fragment header cut", ip6(extFragment, peer6, local6, 64, []byte{protoUDP, 0, 0, 8, 0, 0})},
	}
	for _, tt := range tests {
		want(t, tt.name, f.Inbound(tt.pkt, ops), DropBadPacket)
	}
	want(t, "trailing bytes are fine", f.Inbound(append(good, 0, 0, 0, 0), ops), Accept)
	if s := f.Stats(); s.Inbound.BadPacket != uint64(len(tests)) {
		t.Errorf("Stats = %+v", s)
	}
}

func TestVerdict_String(t *testing.T) {
	got := []string{Accept.String(), DropNoRule.String(), DropBadPacket.String(), DropTableFull.String(), DropFragment.String(), Verdict(0).String(), Verdict(9).String()}
	want := []string{"accept", "no_rule", "bad_packet", "table_full", "fragment", "Verdict(0)", "Verdict(9)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error(diff)
	}
}

// TestStats_Counts: each drop reason is counted by direction.
func TestStats_Counts(t *testing.T) {
	cfg := Default()
	cfg.Inbound, cfg.Outbound = []Rule{}, rules(Rule{Port: "53", Proto: "udp", Host: "any"})
	cfg.Conntrack.MaxEntries = MinEntries
	f := newFirewallConfig(t, cfg)
	f.Inbound(udp(peer4, local4, 1, 2), ops)
	f.Outbound(nil, ops)
	_, second := fragments4(local4, peer4, 3, 4, 53)
	f.Outbound(second, ops)
	for i := range MinEntries + 1 {
		f.Outbound(udp(local4, peer4, uint16(i+1), 53), ops)
		f.Inbound(udp(peer4, local4, 53, uint16(i+1)), ops)
	}
	got := f.Stats()
	want := Stats{
		Enabled: true, Generation: 1, InboundRules: 0, OutboundRules: 1,
		Flows: MinEntries, MaxFlows: MinEntries, NewFlows: MinEntries,
		Inbound:  Drops{NoRule: 2},
		Outbound: Drops{BadPacket: 1, Fragment: 1, TableFull: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

// TestFirewall_Concurrent: packets, sweeps, reloads and stats at once
// (for the race detector).
func TestFirewall_Concurrent(t *testing.T) {
	cfg := Default()
	cfg.Inbound, cfg.Outbound = rules(Rule{Port: "1-30000", Proto: "udp", Host: "any"}), rules(anyHost)
	cfg.Conntrack.MaxEntries = 1024
	f := newFirewallConfig(t, cfg)
	const n = 3000
	var wg sync.WaitGroup
	run := func(fn func(i int)) {
		wg.Go(func() {
			for i := range n {
				fn(i)
			}
		})
	}
	run(func(i int) {
		p := uint16(i % 4000)
		f.Outbound(udp(local4, peer4, p, 53), ops)
		f.Inbound(udp(peer4, local4, p, 53), ops)
	})
	run(func(i int) {
		p := uint16(i % 4000)
		f.Inbound(udp(peer4, local4, 53, p), ops)
		f.Outbound(tcp(local4, peer4, p, 80, syn), web)
	})
	run(func(i int) {
		if i%10 == 0 {
			at(f, time.Duration(i)*time.Second)
			_ = f.Stats()
		}
	})
	run(func(i int) {
		if i%10 != 0 {
			return
		}
		c := cfg
		if i%20 == 0 {
			c.Inbound = rules(Rule{Port: "53", Proto: "udp", Host: "any"})
		}
		if err := f.Reload(c); err != nil {
			t.Error(err)
		}
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("still running after a minute")
	}
	if s := f.Stats(); s.Flows > 1024 {
		t.Errorf("%d flows, more than max_entries", s.Flows)
	}
}
