package main

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringvpn/ringvpn/security"
)

// TestPool_Namespaces_LeasesAndNames: the acceptance test of address
// pools and names (issue 6). Six members whose certificates grant the
// pool 10.88.0.0/24 and no fixed IP start at once; each leases an address
// through the DHT; the addresses are distinct and inside the pool; every
// member pings every other over the leased addresses; and from one
// member, its own DNS responder (on its leased address, port 53) resolves
// another member's name to that member's leased address, says NXDOMAIN
// for a name nobody has and REFUSED for another zone.
func TestPool_Namespaces_LeasesAndNames(t *testing.T) {
	const n = 6
	pool := netip.MustParsePrefix("10.88.0.0/29") // six addresses for six members: conflicts are certain
	l := newVPNLab(t, n)
	for i := range n {
		m := l.add(i, l.ca, l.caPath, "")
		// The certificate again, granting the pool instead of a fixed IP.
		keyPath := filepath.Join(l.dir, m.name+".key")
		key, err := security.ReadPrivateKey(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		cert, err := l.ca.Issue(key.Public(), security.MemberSpec{Name: m.name, IPs: []netip.Prefix{pool}}, now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := security.WriteCertificate(filepath.Join(l.dir, m.name+".crt"), cert, true); err != nil {
			t.Fatal(err)
		}
		m.vip = netip.Addr{}
	}
	for _, m := range l.members { // at once
		m.start(t, l.bin)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Run("leases are unique", func(t *testing.T) {
		seen := map[netip.Addr]string{}
		for _, m := range l.members {
			deadline := time.Now().Add(60 * time.Second)
			for {
				s, err := m.status(ctx)
				if err == nil && s.VPN != nil && len(s.VPN.Leased) > 0 {
					p := s.VPN.Leased[0]
					if p.Bits() != pool.Bits() || !pool.Contains(p.Addr()) || p.Addr() == pool.Addr() || p.Addr() == netip.MustParseAddr("10.88.0.7") {
						t.Fatalf("%s leased %s, want a host address of %s", m.name, p, pool)
					}
					if !slices.Contains(s.VPN.IPs, p) {
						t.Errorf("%s: status IPs %v lack the lease %s", m.name, s.VPN.IPs, p)
					}
					m.vip = p.Addr()
					t.Logf("%s leased %s (conflicts %d)", m.name, p, s.VPN.LeaseConflicts)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s holds no lease after 60s (status error %v)", m.name, err)
				}
				time.Sleep(250 * time.Millisecond)
			}
			if other, dup := seen[m.vip]; dup {
				t.Fatalf("%s and %s both leased %s", other, m.name, m.vip)
			}
			seen[m.vip] = m.name
		}
		// The device has the address: the kernel routes the pool to it.
		for _, m := range l.members {
			out, err := m.host.Run(ctx, "ip", "-brief", "addr", "show", "dev", "rv0")
			if err != nil || !strings.Contains(string(out), netip.PrefixFrom(m.vip, pool.Bits()).String()) {
				t.Errorf("%s: rv0 addresses %q (%v), want %s", m.name, out, err, netip.PrefixFrom(m.vip, pool.Bits()))
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("every member pings every other over leased addresses", func(t *testing.T) {
		allPairs(t, l.members, 60*time.Second)
	})

	t.Run("names resolve", func(t *testing.T) {
		asker, target := l.members[1], l.members[3]
		server := netip.AddrPortFrom(asker.vip, 53).String()
		query := func(name string, qtype uint16) (*dns.Msg, error) {
			var resp *dns.Msg
			err := asker.host.Do(func() error {
				c := &dns.Client{Net: "udp", Timeout: 4 * time.Second}
				m := new(dns.Msg)
				m.SetQuestion(name, qtype)
				var err error
				resp, _, err = c.Exchange(m, server)
				return err
			})
			return resp, err
		}
		var (
			resp *dns.Msg
			err  error
		)
		// The name record may still be on its way: ask until it is there.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			resp, err = query(target.name+".ringvpn.", dns.TypeA)
			if (err == nil && resp.Rcode == dns.RcodeSuccess && len(resp.Answer) > 0) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("query %s.ringvpn. at %s: %v", target.name, server, err)
		}
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
			t.Fatalf("%s.ringvpn. A: %s", target.name, resp)
		}
		a, ok := resp.Answer[0].(*dns.A)
		if !ok || !a.A.Equal(net.IP(target.vip.AsSlice())) {
			t.Fatalf("%s.ringvpn. A: %s, want %s", target.name, resp.Answer[0], target.vip)
		}
		if !resp.Authoritative || resp.RecursionAvailable {
			t.Errorf("answer flags aa=%v ra=%v, want aa and no ra", resp.Authoritative, resp.RecursionAvailable)
		}
		t.Logf("%s asked %s: %s", asker.name, server, a)

		// Names are not case-sensitive.
		if resp, err := query("M4.RingVPN.", dns.TypeA); err != nil || len(resp.Answer) != 1 {
			t.Errorf("M4.RingVPN. A: %v %v", resp, err)
		}
		if resp, err := query("nobody.ringvpn.", dns.TypeA); err != nil || resp.Rcode != dns.RcodeNameError {
			t.Errorf("nobody.ringvpn.: %v %v, want NXDOMAIN", resp, err)
		}
		if resp, err := query("example.com.", dns.TypeA); err != nil || resp.Rcode != dns.RcodeRefused {
			t.Errorf("example.com.: %v %v, want REFUSED", resp, err)
		}
		// Over TCP too.
		if err := asker.host.Do(func() error {
			c := &dns.Client{Net: "tcp", Timeout: 4 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion(target.name+".ringvpn.", dns.TypeA)
			resp, _, err := c.Exchange(m, server)
			if err == nil && len(resp.Answer) != 1 {
				t.Errorf("over TCP: %s", resp)
			}
			return err
		}); err != nil {
			t.Errorf("over TCP: %v", err)
		}
	})
}
