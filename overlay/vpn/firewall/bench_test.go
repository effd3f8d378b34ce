package firewall

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// benchRules is a realistic list: the rule that matches comes last.
func benchRules() []Rule {
	var rs []Rule
	for i := range 15 {
		rs = append(rs, Rule{Port: fmt.Sprint(8000 + i), Proto: "tcp", Group: fmt.Sprintf("team%d", i)})
	}
	return append(rs,
		Rule{Port: "22", Proto: "tcp", Groups: []string{"ops", "laptop"}},
		Rule{Port: "any", Proto: "icmp", Host: "any"},
		Rule{Port: "53", Proto: "udp", CIDR: "10.20.0.0/16"},
		Rule{Port: "80", Proto: "tcp", Group: "web", LocalCIDR: "10.20.0.0/16"},
		Rule{Port: "80", Proto: "tcp", Group: "web", LocalCIDR: "fd20::/64"},
	)
}

// setPort writes a TCP or UDP source port into an IPv4 packet (20-byte
// header).
func setPort(pkt []byte, port uint16) { binary.BigEndian.PutUint16(pkt[20:], port) }

// TestFirewall_NoAllocs: the packet path allocates nothing: a packet of
// a known flow either way, a new flow (once the table has grown), a
// packet no rule allows, and the firewall turned off.
func TestFirewall_NoAllocs(t *testing.T) {
	f := newFirewall(t, benchRules(), rules(anyHost))
	f.logBudget.Store(0) // no drop logs (the test logger allocates)

	in := tcp(peer4, local4, 40000, 80, syn)
	out := tcp(local4, peer4, 80, 40000, synack)
	want(t, "SYN", f.Inbound(in, web), Accept)
	want(t, "SYN-ACK", f.Outbound(out, web), Accept)
	in6 := tcp(peer6, local6, 40000, 80, ack)
	want(t, "IPv6", f.Inbound(in6, web), Accept)
	denied := tcp(peer4, local4, 40000, 81, syn)
	frag1, frag2 := fragments4(peer4, local4, 77, 5000, 53)
	want(t, "first fragment", f.Inbound(frag1, web), Accept)
	icmpErr := icmpError(peer4, local4, out)

	// New flows: a table of 64 entries that never-answered flows keep
	// full, so every flow evicts one.
	cfg := Default()
	cfg.Inbound, cfg.Outbound = benchRules(), rules(anyHost)
	cfg.Conntrack.MaxEntries = MinEntries
	g := newFirewallConfig(t, cfg)
	newFlow := tcp(peer4, local4, 1, 80, syn)
	port := uint16(0)
	for range 2 * MinEntries {
		port++
		setPort(newFlow, port)
		g.Inbound(newFlow, web)
	}

	off := newFirewall(t, nil, nil)
	tests := []struct {
		name string
		f    func()
	}{
		{"known flow inbound", func() { f.Inbound(in, web) }},
		{"known flow outbound", func() { f.Outbound(out, web) }},
		{"known flow IPv6", func() { f.Inbound(in6, web) }},
		{"later fragment", func() { f.Inbound(frag2, web) }},
		{"ICMP error", func() { f.Inbound(icmpErr, web) }},
		{"no rule", func() { f.Inbound(denied, web) }},
		{"new flow", func() { port++; setPort(newFlow, port); g.Inbound(newFlow, web) }},
		{"off", func() { off.Inbound(in, web) }},
		{"Sweep", func() { f.Sweep(t0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(1000, tt.f); allocs != 0 {
				t.Errorf("%v allocations, want 0", allocs)
			}
		})
	}
}

// BenchmarkFirewall_Established: a packet of a known TCP flow, each way.
func BenchmarkFirewall_Established(b *testing.B) {
	for _, fam := range []struct {
		name       string
		in, out    []byte
		setupIn    []byte
		setupReply []byte
	}{
		{"IPv4", tcp(peer4, local4, 40000, 80, ack), tcp(local4, peer4, 80, 40000, ack), tcp(peer4, local4, 40000, 80, syn), tcp(local4, peer4, 80, 40000, synack)},
		{"IPv6", tcp(peer6, local6, 40000, 80, ack), tcp(local6, peer6, 80, 40000, ack), tcp(peer6, local6, 40000, 80, syn), tcp(local6, peer6, 80, 40000, synack)},
	} {
		b.Run(fam.name, func(b *testing.B) {
			f := newFirewall(b, benchRules(), rules(anyHost))
			f.Inbound(fam.setupIn, web)
			f.Outbound(fam.setupReply, web)
			b.ReportAllocs()
			for b.Loop() {
				if f.Inbound(fam.in, web) != Accept || f.Outbound(fam.out, web) != Accept {
					b.Fatal("dropped")
				}
			}
		})
	}
}

// BenchmarkFirewall_EstablishedParallel: known flows from all cores at
// once, in a table of many flows.
func BenchmarkFirewall_EstablishedParallel(b *testing.B) {
	f := newFirewall(b, benchRules(), rules(anyHost))
	const flows = 4096
	for i := range flows {
		f.Outbound(tcp(local4, peer4, uint16(10000+i), 80, syn), web)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		pkt := tcp(peer4, local4, 80, 10000, ack)
		i := 0
		for pb.Next() {
			binary.BigEndian.PutUint16(pkt[22:], uint16(10000+i%flows))
			i++
			if f.Inbound(pkt, web) != Accept {
				b.Fatal("dropped")
			}
		}
	})
}

// BenchmarkFirewall_NewFlow: the first packet of a flow: the rules (the
// 19th of 20 matches), then a table entry, in a full table of never-answered
// flows (each new flow evicts one).
func BenchmarkFirewall_NewFlow(b *testing.B) {
	cfg := Default()
	cfg.Inbound, cfg.Outbound = benchRules(), rules(anyHost)
	for _, max := range []int{MinEntries, DefaultMaxEntries} {
		b.Run(fmt.Sprint("max_entries=", max), func(b *testing.B) {
			cfg.Conntrack.MaxEntries = max
			f := newFirewallConfig(b, cfg)
			pkt := tcp(peer4, local4, 1, 80, syn)
			for i := range max + 1000 { // fill the table
				binary.BigEndian.PutUint16(pkt[20:], uint16(i))
				binary.BigEndian.PutUint16(pkt[12:], uint16(i>>16))
				f.Inbound(pkt, web)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				binary.BigEndian.PutUint16(pkt[20:], uint16(i))
				binary.BigEndian.PutUint16(pkt[12:], uint16(i>>16)) // vary the source address too
				if f.Inbound(pkt, web) != Accept {
					b.Fatal("dropped")
				}
			}
		})
	}
}

// BenchmarkFirewall_NoRule: the first packet of a flow no rule allows.
func BenchmarkFirewall_NoRule(b *testing.B) {
	f := newFirewall(b, benchRules(), rules(anyHost))
	pkt := tcp(peer4, local4, 40000, 81, syn)
	b.ReportAllocs()
	for b.Loop() {
		if f.Inbound(pkt, web) != DropNoRule {
			b.Fatal("passed")
		}
	}
}

// BenchmarkRules_Match: the rules alone, for a flow the last rule allows.
func BenchmarkRules_Match(b *testing.B) {
	f := newFirewall(b, benchRules(), rules(anyHost))
	rs := f.rules.Load()
	k := keyOf(dirIn, false, peer4.As16(), local4.As16(), protoTCP, 40000, 80)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := rs.allows(dirIn, &k, web); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkFirewall_Off: the cost when there are no rules.
func BenchmarkFirewall_Off(b *testing.B) {
	f := newFirewall(b, nil, nil)
	pkt := tcp(peer4, local4, 40000, 80, ack)
	b.ReportAllocs()
	for b.Loop() {
		f.Inbound(pkt, web)
	}
}

// BenchmarkFirewall_Sweep: one Sweep of a full default-sized table with
// nothing to expire.
func BenchmarkFirewall_Sweep(b *testing.B) {
	f := newFirewall(b, []Rule{}, rules(anyHost))
	pkt := tcp(local4, peer4, 1, 80, syn)
	for i := range DefaultMaxEntries {
		binary.BigEndian.PutUint16(pkt[20:], uint16(i))
		binary.BigEndian.PutUint16(pkt[16:], uint16(i>>16))
		f.Outbound(pkt, web)
	}
	if n := f.Stats().Flows; n < DefaultMaxEntries*9/10 {
		b.Fatalf("%d flows", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		f.Sweep(t0.Add(time.Second))
	}
}
