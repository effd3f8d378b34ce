package vpn_test

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
)

// TestConfig_Validate_Firewall: the firewall section is checked with the
// rest, and its errors name its keys in full.
func TestConfig_Validate_Firewall(t *testing.T) {
	cfg := vpn.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.Firewall.Enabled() {
		t.Errorf("the firewall is on by default: %+v", cfg.Firewall)
	}
	cfg.QueueLen = 0
	cfg.Firewall.Inbound = []firewall.Rule{{Port: "80", Proto: "tcp", Group: "web"}, {Port: "http", Proto: "tcp", Group: "web"}}
	cfg.Firewall.Conntrack.MaxEntries = 1
	err := cfg.Validate()
	var got []string
	if err != nil {
		got = strings.Split(err.Error(), "\n")
	}
	want := []string{
		"vpn.queue_len: 0 not in [1,4096]",
		`vpn.firewall.inbound[1].port: "http" is not a port or range; use 80, 1000-2000 or any`,
		"vpn.firewall.conntrack.max_entries: 1 not in [64,4194304]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Validate:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestVPN_Firewall: member 0 serves UDP port 4001 to the members of group
// web and starts nothing itself; member 1, in group web, lets nobody
// start anything with it and may start anything; member 2, in group db,
// has no firewall.
func TestVPN_Firewall(t *testing.T) {
	cfg := vpn.Default()
	cfg.NegativeTTL = 100 * time.Millisecond
	cfg.ResolveTimeout = 2 * time.Second
	serve := func(groups ...string) firewall.Config {
		c := firewall.Default()
		for _, g := range groups {
			c.Inbound = append(c.Inbound, firewall.Rule{Port: "4001", Proto: "udp", Group: g})
		}
		c.Outbound = []firewall.Rule{}
		return c
	}
	ms := newVPNClusterWith(t, 3, func(i int, c *vpn.Config, spec *security.MemberSpec) {
		switch i {
		case 0:
			c.Firewall = serve("web")
		case 1:
			spec.Groups = []string{"web"}
			c.Firewall.Inbound = []firewall.Rule{}
			c.Firewall.Outbound = []firewall.Rule{{Port: "any", Proto: "any", Host: "any"}}
		case 2:
			spec.Groups = []string{"db"}
		}
	}, cfg)
	server, web, other := ms[0], ms[1], ms[2]
	fw := func(m *member) firewall.Stats { return m.vpn.Status().Firewall }
	udp := func(from, to *member, sport, dport uint16, payload string) []byte {
		return udpFramePorts(gateway, from.dev.MAC(), netip.AddrPortFrom(from.ip, sport), netip.AddrPortFrom(to.ip, dport), []byte(payload))
	}

	t.Run("an allowed flow and its replies pass", func(t *testing.T) {
		deliverFrame(t, web, server, udp(web, server, 4000, 4001, "request"), []byte("request"), 15*time.Second)
		// Neither the server's outbound rules nor web's inbound ones
		// allow this; the flow does.
		deliverFrame(t, server, web, udp(server, web, 4001, 4000, "reply"), []byte("reply"), 5*time.Second)
		s, w := fw(server), fw(web)
		if !s.Enabled || s.Flows != 1 || s.Inbound.Total()+s.Outbound.Total() != 0 {
			t.Errorf("server firewall: %+v, want one flow and no drops", s)
		}
		if w.Flows != 1 || w.Inbound.Total()+w.Outbound.Total() != 0 {
			t.Errorf("web firewall: %+v, want one flow and no drops", w)
		}
		if o := fw(other); o.Enabled {
			t.Errorf("firewall of a member without rules: %+v", o)
		}
	})

	t.Run("a flow no rule allows is dropped and counted", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			from   *member
			dport  uint16
			packet string
		}{
			{"a member not in group web", other, 4001, "from db"},
			{"another port", web, 4002, "to another port"},
		} {
			before := fw(server).Inbound.NoRule
			f := udp(c.from, server, 4000, c.dport, c.packet)
			injectUntil(t, c.from, f, 15*time.Second, func() bool { return fw(server).Inbound.NoRule > before },
				func() string { return c.name + ": no inbound drop counted" })
			noFrame(t, server, c.packet, 500*time.Millisecond)
		}
		if ps, ok := peerStatus(server.vpn, other.Node.Address()); ok && ps.PacketsIn != 0 {
			t.Errorf("the dropped packets from %s counted as traffic: %+v", other.ip, ps)
		}
	})

	t.Run("outbound denied is dropped before it is sent", func(t *testing.T) {
		// The server never heard other (its packets were dropped): the
		// packet waits for the lookup of other's address, and is checked
		// once other's certificate is known.
		st := server.vpn.Status()
		f := udp(server, other, 5000, 5001, "unasked")
		injectUntil(t, server, f, 15*time.Second, func() bool { return fw(server).Outbound.NoRule > st.Firewall.Outbound.NoRule },
			func() string { return "no outbound drop counted" })
		noFrame(t, other, "unasked", 500*time.Millisecond)
		if got := server.vpn.Status().FramesOut; got != st.FramesOut {
			t.Errorf("the server sent %d frames", got-st.FramesOut)
		}
		if ps, ok := peerStatus(server.vpn, other.Node.Address()); ok && ps.PacketsOut != 0 {
			t.Errorf("packets to %s counted as sent: %+v", other.ip, ps)
		}
	})

	t.Run("broadcasts go by the rules", func(t *testing.T) {
		bcast := netip.MustParseAddr("10.66.0.255")
		frameTo := func(from *member, payload string) []byte {
			return udpFramePorts(broadcastMAC, from.dev.MAC(), netip.AddrPortFrom(from.ip, 4000), netip.AddrPortFrom(bcast, 4001), []byte(payload))
		}
		// Web's broadcast to port 4001: the server takes it in.
		if err := web.dev.Inject(frameTo(web, "web broadcast")); err != nil {
			t.Fatal(err)
		}
		if !gotFrame(server, "web broadcast", 5*time.Second) {
			t.Errorf("the server did not get web's broadcast: %+v", fw(server))
		}
		// Other's: the server drops it (and so does web, which takes
		// nothing in).
		before := fw(server).Inbound.NoRule
		if err := other.dev.Inject(frameTo(other, "db broadcast")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 5*time.Second, func() bool { return fw(server).Inbound.NoRule > before },
			func() string { return "other's broadcast: no inbound drop counted" })
		noFrame(t, server, "db broadcast", 300*time.Millisecond)
		// The server's own: dropped before it is sent.
		st := server.vpn.Status()
		if err := server.dev.Inject(frameTo(server, "server broadcast")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 5*time.Second, func() bool { return fw(server).Outbound.NoRule > st.Firewall.Outbound.NoRule },
			func() string { return "the server's broadcast: no outbound drop counted" })
		if got := server.vpn.Status().BroadcastsOut; got != st.BroadcastsOut {
			t.Errorf("the server sent %d broadcasts", got-st.BroadcastsOut)
		}
	})

	t.Run("a reload changes the rules", func(t *testing.T) {
		bad := serve("web")
		bad.Inbound[0].Proto = "gre"
		err := server.vpn.ReloadFirewall(bad)
		if err == nil || !strings.Contains(err.Error(), `vpn.firewall.inbound[0].proto: "gre" is not a protocol`) {
			t.Errorf("ReloadFirewall(bad) = %v", err)
		}
		if err := server.vpn.ReloadFirewall(serve("web", "db")); err != nil {
			t.Fatal(err)
		}
		deliverFrame(t, other, server, udp(other, server, 4000, 4001, "db allowed"), []byte("db allowed"), 10*time.Second)
		if s := fw(server); s.Generation != 2 || s.InboundRules != 2 {
			t.Errorf("after the reload: %+v", s)
		}
	})
}

// injectUntil injects f into m's device until ok, or fails with what().
func injectUntil(t *testing.T, m *member, f []byte, within time.Duration, ok func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v; counters %+v", what(), within, m.vpn.Status().Counters)
		}
		if err := m.dev.Inject(bytes.Clone(f)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitUntil waits for ok, or fails with what().
func waitUntil(t *testing.T, within time.Duration, ok func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v", what(), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gotFrame reports whether a frame ending with payload reaches m's device
// within d.
func gotFrame(m *member, payload string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		f, err := m.dev.Take(ctx)
		if err != nil {
			return false
		}
		if bytes.HasSuffix(f, []byte(payload)) {
			return true
		}
	}
}

// noFrame fails if a frame ending with payload reaches m's device within d.
func noFrame(t *testing.T, m *member, payload string, d time.Duration) {
	t.Helper()
	if gotFrame(m, payload, d) {
		t.Errorf("%s's device got %q", m.ip, payload)
	}
}
