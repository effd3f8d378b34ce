package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
)

// TestCRLPublish_RunningMembers: four ring-only members run in this
// process on loopback. A list from `ringvpn ca revoke`, handed to one of
// them with `ringvpn crl publish`, reaches the others, which cut the
// revoked member off; `ringvpn status` shows it; publishing it again
// spreads it again; an older list and a file without a list are refused.
func TestCRLPublish_RunningMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four members")
	}
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	caFlags := []string{"--ca-cert", p("ca.crt"), "--ca-key", p("ca.key")}
	ok(t, "ca", "init", "--name", "group-ca", "--cert", p("ca.crt"), "--key", p("ca.key"))
	const n = 4
	nodes := make([]*node.Node, n)
	sockets := make([]string, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var boot []netip.AddrPort
	for i := range n {
		name := fmt.Sprintf("node%d", i)
		ok(t, append([]string{"cert", "issue", "--name", name, "--ip", fmt.Sprintf("10.77.0.%d/24", i+1), "--cert", p(name + ".crt"), "--key", p(name + ".key")}, caFlags...)...)
		cfg := node.Default()
		cfg.Identity.Cert, cfg.Identity.Key, cfg.Identity.CA = p(name+".crt"), p(name+".key"), p("ca.crt")
		cfg.Listen = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
		sockets[i] = p(name + ".sock")
		cfg.Control.Socket = sockets[i]
		cfg.VPN.Enabled = false
		cfg.Overlay.Bootstrap = boot
		cfg.Overlay.MaintainInterval, cfg.Overlay.PingInterval, cfg.Overlay.DeadAfter = 200*time.Millisecond, 500*time.Millisecond, 2*time.Second
		cfg.Security.KeepaliveInterval, cfg.Security.DeadAfter = time.Second, 4*time.Second
		log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Named(name)
		nd, err := node.Start(ctx, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Close() })
		if err := nd.ServeControl(ctx); err != nil {
			t.Fatal(err)
		}
		nodes[i] = nd
		boot = []netip.AddrPort{cfg.Listen}
	}
	wait := func(what string, cond func() (bool, string)) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			ok, why := cond()
			if ok {
				return time.Since(start)
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%s: %s", what, why)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("the ring forms", func() (bool, string) {
		for _, nd := range nodes {
			if !nd.Ring().InRing() {
				return false, nd.Status().Name + " is not in the ring"
			}
		}
		return true, ""
	})

	ok(t, append([]string{"ca", "revoke", "--crl", p("group.crl"), "--cert", p("node3.crt")}, caFlags...)...)
	first, err := os.ReadFile(p("group.crl"))
	if err != nil {
		t.Fatal(err)
	}
	out := ok(t, "crl", "publish", "--socket", sockets[1], p("group.crl"))
	if !strings.Contains(out, `revocation list number 1 of CA "group-ca" (1 revoked): taken; spreading it to the group`) {
		t.Errorf("crl publish says:\n%s", out)
	}
	revoked := nodes[3].Status().Address
	took := wait("the others cut node3 off", func() (bool, string) {
		for _, nd := range nodes[:3] {
			st := nd.Status()
			if len(st.Revocations.Lists) != 1 || st.Revocations.Lists[0].Entries != 1 {
				return false, fmt.Sprintf("%s holds %+v", st.Name, st.Revocations.Lists)
			}
			for _, l := range st.Links {
				if l.Address == revoked {
					return false, st.Name + " still links to node3"
				}
			}
		}
		if ls := nodes[3].Status().Links; len(ls) > 0 {
			return false, fmt.Sprintf("node3 has %d links", len(ls))
		}
		return true, ""
	})
	t.Logf("node3 cut off %v after `crl publish`", took.Round(time.Millisecond))
	if st := ok(t, "status", "--socket", sockets[2]); !strings.Contains(st, `revocation lists: 1 held; from members: taken 1`) ||
		!strings.Contains(st, `CA "group-ca": number 1, 1 revoked`) {
		t.Errorf("status of node2:\n%s", st)
	}
	out = ok(t, "crl", "publish", "--socket", sockets[0], p("group.crl"))
	if !strings.Contains(out, "held already; spreading it again") {
		t.Errorf("crl publish again says:\n%s", out)
	}

	// A newer list (one more serial), then the first one again: refused.
	ok(t, append([]string{"ca", "revoke", "--crl", p("group.crl"), "--serial", "abcdef"}, caFlags...)...)
	ok(t, "crl", "publish", "--socket", sockets[0], p("group.crl"))
	if err := os.WriteFile(p("old.crl"), first, 0o644); err != nil {
		t.Fatal(err)
	}
	r := fails(t, "1 of 1 revocation lists refused", "crl", "publish", "--socket", sockets[0], p("old.crl"))
	if !strings.Contains(r.stdout, "refused: ") || !strings.Contains(r.stdout, "older than the one held") {
		t.Errorf("publishing an older list says:\n%s", r.stdout)
	}
	if err := os.WriteFile(p("junk.crl"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	fails(t, "no revocation list found", "crl", "publish", "--socket", sockets[0], p("junk.crl"))
	fails(t, "no ringvpn answers on", "crl", "publish", "--socket", p("nobody.sock"), p("group.crl"))
	wait("the newer list reaches every member", func() (bool, string) {
		for _, nd := range nodes[:3] {
			if ls := nd.Status().Revocations.Lists; len(ls) != 1 || ls[0].Number != "2" {
				return false, fmt.Sprintf("%+v", ls)
			}
		}
		return true, ""
	})
}
