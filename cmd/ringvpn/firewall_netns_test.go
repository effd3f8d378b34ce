package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/config"
	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/netnstest"
	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
)

// TestFirewall_Namespaces_WebPort80: the acceptance test of the group
// firewall (issue 6): a rule letting group web reach port 80 only, with
// an allowed and a denied flow, both verified with real TCP connections
// through the members' TAP devices. m1 listens on ports 80 and 22 and
// lets in ping from every member and port 80 from group web; m2 is in
// group web, m3 in group db. m2 connects to port 80 and moves bytes both
// ways; m2's connection to port 22 and m3's to port 80 never reach a
// listener, and m1's status counts the dropped packets.
func TestFirewall_Namespaces_WebPort80(t *testing.T) {
	l := newVPNLab(t, 3)
	caKey := filepath.Join(l.dir, "ca.key")
	if err := security.WritePrivateKey(caKey, l.ca.Key, false); err != nil {
		t.Fatal(err)
	}
	groups := []string{"servers", "web", "db"}
	const rules = `firewall: {inbound: [{port: any, proto: icmp, host: any}, {port: 80, proto: tcp, group: web}]}`
	for i, g := range groups {
		m := l.add(i, l.ca, l.caPath, "")
		// The certificate again, with its group, as an operator makes it.
		ok(t, "cert", "issue", "--ca-cert", l.caPath, "--ca-key", caKey, "--name", m.name,
			"--ip", netip.PrefixFrom(m.vip, 24).String(), "--group", g, "--validity", "24h",
			"--cert", filepath.Join(l.dir, m.name+".crt"), "--key", filepath.Join(l.dir, m.name+".key"), "--force")
		if i == 0 {
			b, err := os.ReadFile(m.conf)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.Replace(string(b), "vpn: {", "vpn: {"+rules+", ", 1))
			if err := os.WriteFile(m.conf, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		m.start(t, l.bin)
	}
	server, web, db := l.members[0], l.members[1], l.members[2]

	// Listeners on the server, on every address of its namespace.
	var (
		mu       sync.Mutex
		accepted = map[int][]string{} // port -> remote addresses
		wg       sync.WaitGroup
		lns      []net.Listener
	)
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	})
	listen := func(port int, serve func(net.Conn)) {
		var ln net.Listener
		if err := server.host.Do(func() (err error) {
			ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				accepted[port] = append(accepted[port], c.RemoteAddr().String())
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					c.SetDeadline(time.Now().Add(30 * time.Second))
					serve(c)
				}()
			}
		}()
	}
	echo := func(c net.Conn) { io.Copy(c, c) }
	listen(80, echo)
	listen(22, echo)
	acceptedFrom := func(port int) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), accepted[port]...)
	}

	t.Run("every member pings every other", func(t *testing.T) {
		// ICMP is allowed in: the VPN works before any TCP is tried, so
		// what fails below fails by the rules.
		allPairs(t, l.members, 30*time.Second)
	})
	if t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	serverStatus := func(t *testing.T) vpn.Status {
		t.Helper()
		s, err := server.status(ctx)
		if err != nil || s.VPN == nil {
			t.Fatalf("status of %s: %v (vpn %v)", server.name, err, s.VPN)
		}
		return *s.VPN
	}
	if fw := serverStatus(t).Firewall; !fw.Enabled || fw.InboundRules != 2 || fw.OutboundRules != -1 {
		t.Fatalf("server firewall: %+v, want on with 2 inbound rules and no outbound list", fw)
	}

	t.Run("group web reaches port 80", func(t *testing.T) {
		data := make([]byte, 256<<10)
		rand.Read(data)
		var c net.Conn
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; {
			if c, err = dialFrom(web.host, netip.AddrPortFrom(server.vip, 80), 3*time.Second); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s -> %s:80: %v", web.name, server.vip, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		sent := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			sent <- err
		}()
		got := make([]byte, len(data))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading the echo: %v", err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("writing: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("the echo differs from what was sent")
		}
		t.Logf("%s -> %s:80: %d KB each way", web.name, server.name, len(data)>>10)
		if from := acceptedFrom(80); len(from) == 0 || !strings.HasPrefix(from[len(from)-1], web.vip.String()+":") {
			t.Errorf("port 80 accepted %v, want %s", from, web.vip)
		}
	})

	denied := []struct {
		name string
		from *vpnMember
		port int
	}{
		{"group web does not reach port 22", web, 22},
		{"a member not in group web does not reach port 80", db, 80},
	}
	for _, d := range denied {
		t.Run(d.name, func(t *testing.T) {
			before := serverStatus(t).Firewall.Inbound.NoRule
			c, err := dialFrom(d.from.host, netip.AddrPortFrom(server.vip, uint16(d.port)), 3*time.Second)
			if err == nil {
				c.Close()
				t.Fatalf("%s connected to %s:%d", d.from.name, server.vip, d.port)
			}
			// Dropped without an answer: the SYNs go unanswered until the
			// dial gives up (a refusal would mean they got through).
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%s -> %s:%d failed with %v, want a timeout", d.from.name, server.vip, d.port, err)
			}
			for _, a := range acceptedFrom(d.port) {
				if strings.HasPrefix(a, d.from.vip.String()+":") {
					t.Errorf("port %d accepted a connection from %s", d.port, a)
				}
			}
			if after := serverStatus(t).Firewall.Inbound.NoRule; after <= before {
				t.Errorf("server counted %d -> %d inbound drops (no_rule), want more", before, after)
			}
		})
	}

	t.Run("status shows the drops", func(t *testing.T) {
		fw := serverStatus(t).Firewall
		if fw.Inbound.NoRule < 2 || fw.NewFlows == 0 {
			t.Errorf("server firewall: %+v, want at least 2 inbound drops and a flow", fw)
		}
		out, err := exec.Command(l.bin, "status", "--socket", server.socket).CombinedOutput()
		if err != nil {
			t.Fatalf("ringvpn status: %v\n%s", err, out)
		}
		t.Logf("ringvpn status of %s:\n%s", server.name, out)
		if want := "firewall: on (inbound 2 rules, outbound all pass)"; !strings.Contains(string(out), want) {
			t.Errorf("status does not say %q", want)
		}
		if !strings.Contains(string(out), "; dropped in ") {
			t.Errorf("status does not show the firewall's drops")
		}
		out, err = exec.Command(l.bin, "status", "--socket", web.socket).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "firewall: off") {
			t.Errorf("status of %s, which has no rules: %v\n%s", web.name, err, out)
		}
	})
}

// dialFrom connects to dst over TCP from inside h's namespace.
func dialFrom(h *netnstest.Host, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), timeout)
		return err
	})
	return c, err
}

// TestFirewallConfig_Loads: the vpn.firewall section loads through the
// configuration loader as the firewall package expects: no list or a
// list with no value is absent (everything passes that way), [] is an
// empty list; the commented example of configs/ringvpn.yaml loads and is
// valid once uncommented; and mistakes are reported with their full key.
func TestFirewallConfig_Loads(t *testing.T) {
	load := func(t *testing.T, yaml string) (firewall.Config, error) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "ringvpn.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := node.Default()
		err := config.Load(path, "", &cfg)
		return cfg.VPN.Firewall, err
	}
	for _, tt := range []struct {
		name, yaml string
		in, out    bool // the list is present
	}{
		{"no section", "vpn: {enabled: true}\n", false, false},
		{"conntrack only", "vpn:\n  firewall:\n    conntrack:\n      udp_timeout: 1m\n", false, false},
		{"a key with no value", "vpn:\n  firewall:\n    inbound:\n", false, false},
		{"an empty list", "vpn:\n  firewall:\n    inbound: []\n", true, false},
		{"both", "vpn:\n  firewall:\n    inbound: []\n    outbound:\n      - {port: any, proto: any, host: any}\n", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fw, err := load(t, tt.yaml)
			if err != nil {
				t.Fatal(err)
			}
			if (fw.Inbound != nil) != tt.in || (fw.Outbound != nil) != tt.out || fw.Enabled() != (tt.in || tt.out) {
				t.Errorf("inbound %#v, outbound %#v", fw.Inbound, fw.Outbound)
			}
		})
	}

	t.Run("the example in configs/ringvpn.yaml", func(t *testing.T) {
		b, err := os.ReadFile("../../configs/ringvpn.yaml")
		if err != nil {
			t.Fatal(err)
		}
		// Uncomment the inbound list, as a user would.
		var out []string
		in := false
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case line == "    # inbound:":
				in = true
			case in && !strings.HasPrefix(line, "    #   "):
				in = false
			}
			if in {
				line = "    " + strings.TrimPrefix(line, "    # ")
			}
			out = append(out, line)
		}
		fw, err := load(t, strings.Join(out, "\n"))
		if err != nil {
			t.Fatal(err)
		}
		want := []firewall.Rule{{Port: "any", Proto: "icmp", Host: "any"}, {Port: "80", Proto: "tcp", Group: "web"}}
		if diff := cmp.Diff(want, fw.Inbound); diff != "" || fw.Outbound != nil {
			t.Errorf("inbound (-want +got):\n%s\noutbound %#v", diff, fw.Outbound)
		}
	})

	t.Run("mistakes name their key", func(t *testing.T) {
		_, err := load(t, "vpn:\n  firewall:\n    inbound:\n      - {port: 80-, proto: tcp, group: web}\n    conntrack: {max_entries: 1}\n")
		for _, want := range []string{
			`vpn.firewall.inbound[0].port: "80-" is not a port or range; use 80, 1000-2000 or any`,
			"vpn.firewall.conntrack.max_entries: 1 not in [64,4194304]",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load: %v\nwant an error with %q", err, want)
			}
		}
		_, err = load(t, "vpn:\n  firewall:\n    inbound:\n      - {port: 80, proto: tcp, group: web, code: 3}\n")
		if err == nil || !strings.Contains(err.Error(), "code") {
			t.Errorf("Load: %v, want an error naming the unknown key code", err)
		}
	})
}

// TestPrintVPNStatus_Firewall: `ringvpn status` sums up the firewall in
// one line.
func TestPrintVPNStatus_Firewall(t *testing.T) {
	for _, tt := range []struct {
		name string
		fw   firewall.Stats
		want string
	}{
		{"off", firewall.Stats{InboundRules: -1, OutboundRules: -1},
			"firewall: off (no vpn.firewall rules), everything passes\n"},
		{"on", firewall.Stats{Enabled: true, InboundRules: 1, OutboundRules: -1, Flows: 3,
			Inbound: firewall.Drops{NoRule: 5, Fragment: 1}, Outbound: firewall.Drops{BadPacket: 2}},
			"firewall: on (inbound 1 rule, outbound all pass), 3 flows; dropped in 6 / out 2\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			printVPNStatus(&app{stdout: &out}, &vpn.Status{Device: "rv0", MTU: 1296, Firewall: tt.fw})
			lines := strings.SplitAfter(out.String(), "\n")
			if len(lines) < 3 || lines[2] != tt.want {
				t.Errorf("status:\n%s\nwant its third line %q", out.String(), tt.want)
			}
		})
	}
}
