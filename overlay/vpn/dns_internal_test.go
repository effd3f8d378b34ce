package vpn

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// startDNS serves s on a loopback UDP port and returns its address.
func startDNS(t *testing.T, s *dnsServer) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: s}
	s.mu.Lock()
	s.servers[netip.MustParseAddr("127.0.0.1")] = []*dns.Server{srv}
	s.mu.Unlock()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	s.serve(srv)
	<-started
	t.Cleanup(s.close)
	return pc.LocalAddr().String()
}

func TestDNSServer_Answers(t *testing.T) {
	names := map[string][]netip.Addr{
		"alice":      {netip.MustParseAddr("10.20.0.5"), netip.MustParseAddr("fd00::5")},
		"web-1.eu_1": {netip.MustParseAddr("10.20.0.9")},
	}
	lookup := func(_ context.Context, name string) ([]netip.Addr, error) {
		if ips, ok := names[name]; ok {
			return ips, nil
		}
		return nil, dht.ErrNotFound
	}
	cfg := Default().DNS
	cfg.Domain = "Corp.Example"
	addr := startDNS(t, newDNSServer(lookup, cfg, zaptest.NewLogger(t)))
	c := &dns.Client{Timeout: 2 * time.Second}
	ask := func(t *testing.T, name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		resp, _, err := c.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return resp
	}
	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string // answers, as text after the name
	}{
		{"A", "alice.corp.example.", dns.TypeA, dns.RcodeSuccess, []string{"10.20.0.5"}},
		{"AAAA", "alice.corp.example.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00::5"}},
		{"ANY", "alice.corp.example.", dns.TypeANY, dns.RcodeSuccess, []string{"10.20.0.5", "fd00::5"}},
		{"case-insensitive", "ALICE.Corp.Example.", dns.TypeA, dns.RcodeSuccess, []string{"10.20.0.5"}},
		{"dotted name", "web-1.eu_1.corp.example.", dns.TypeA, dns.RcodeSuccess, []string{"10.20.0.9"}},
		{"no such type", "web-1.eu_1.corp.example.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"unknown name", "bob.corp.example.", dns.TypeA, dns.RcodeNameError, nil},
		{"apex", "corp.example.", dns.TypeA, dns.RcodeSuccess, nil},
		{"other zone", "example.com.", dns.TypeA, dns.RcodeRefused, nil},
		{"parent zone", "example.", dns.TypeA, dns.RcodeRefused, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ask(t, tt.qname, tt.qtype)
			if resp.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s: %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode], resp)
			}
			if resp.RecursionAvailable {
				t.Error("recursion available")
			}
			var got []string
			for _, rr := range resp.Answer {
				switch r := rr.(type) {
				case *dns.A:
					got = append(got, r.A.String())
				case *dns.AAAA:
					got = append(got, r.AAAA.String())
				}
				if rr.Header().Name != tt.qname {
					t.Errorf("answer for %q, want %q", rr.Header().Name, tt.qname)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("answers %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("malformed queries leave it serving", func(t *testing.T) {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, junk := range [][]byte{{}, {0}, []byte("not a dns message at all"), make([]byte, 12), {0, 1, 0x80, 0, 0, 5, 0, 0, 0, 0, 0, 0, 3}} {
			conn.Write(junk)
		}
		if resp := ask(t, "alice.corp.example.", dns.TypeA); len(resp.Answer) != 1 {
			t.Fatalf("after junk: %s", resp)
		}
	})

	t.Run("other opcodes are not implemented", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("alice.corp.example.", dns.TypeA)
		m.Opcode = dns.OpcodeStatus
		resp, _, err := c.Exchange(m, addr)
		if err != nil || resp.Rcode != dns.RcodeNotImplemented {
			t.Fatalf("status opcode: %v %v, want NOTIMP", resp, err)
		}
	})
}

func TestDNSServer_BoundsLookups(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	lookup := func(ctx context.Context, _ string) ([]netip.Addr, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, errors.New("gave up")
	}
	cfg := Default().DNS
	cfg.MaxInFlight = 1
	addr := startDNS(t, newDNSServer(lookup, cfg, zaptest.NewLogger(t)))
	c := &dns.Client{Timeout: 5 * time.Second}
	done := make(chan *dns.Msg, 1)
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("slow.ringvpn.", dns.TypeA)
		resp, _, _ := c.Exchange(m, addr)
		done <- resp
	}()
	<-entered
	m := new(dns.Msg)
	m.SetQuestion("second.ringvpn.", dns.TypeA)
	resp, _, err := c.Exchange(m, addr)
	if err != nil || resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("a query beyond max_in_flight: %v %v, want SERVFAIL at once", resp, err)
	}
	close(release)
	if resp := <-done; resp == nil || resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("the failed lookup: %v, want SERVFAIL", resp)
	}
}

func TestCandidate_CoversThePool(t *testing.T) {
	for _, pool := range []string{"10.0.0.0/29", "10.1.0.0/24", "fd00::/125"} {
		p := netip.MustParsePrefix(pool)
		size := poolSize(p, 1<<20)
		seen := map[netip.Addr]bool{}
		for i := range size {
			ip := candidate(p, []byte("seed"), i)
			if _, ok := (&security.MemberSpec{IPs: []netip.Prefix{p}}).PoolOf(ip); !ok {
				t.Fatalf("%s: candidate %d is %s, not a host address of the pool", pool, i, ip)
			}
			seen[ip] = true
		}
		if uint64(len(seen)) != size {
			t.Errorf("%s: %d probes visit %d addresses, want all %d", pool, size, len(seen), size)
		}
	}
	if a, b := candidate(netip.MustParsePrefix("10.1.0.0/16"), []byte("a"), 0), candidate(netip.MustParsePrefix("10.1.0.0/16"), []byte("b"), 0); a == b {
		t.Errorf("two seeds start at the same address %s", a)
	}
}

// testIdentity issues a certificate for ips under a new CA.
func testIdentity(t testing.TB, name string, ips ...string) (*security.Identity, dht.Verifier) {
	t.Helper()
	now := time.Now()
	ca, err := security.NewCA("ca", now.Add(-time.Hour), now.Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	key, err := security.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	spec := security.MemberSpec{Name: name}
	for _, s := range ips {
		spec.IPs = append(spec.IPs, netip.MustParsePrefix(s))
	}
	cert, err := ca.Issue(key.Public(), spec, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := security.NewTrustBundle(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	id, err := security.NewIdentity(key, cert, bundle, now)
	if err != nil {
		t.Fatal(err)
	}
	return id, Verifier(dht.VerifyWith(bundle))
}

func TestVerifier_Leases(t *testing.T) {
	pooled, verify := testIdentity(t, "Laptop-7", "10.67.0.0/24", "10.99.0.5/24")
	fixed, verifyFixed := testIdentity(t, "server", "10.67.0.5/24")
	sign := func(id *security.Identity, ns, name string, value []byte) *dht.SignedRecord {
		rec, err := dht.Sign(id, ns, name, value, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	self := func(id *security.Identity) []byte { return id.Member.Address[:] }
	tests := []struct {
		name   string
		verify dht.Verifier
		rec    *dht.SignedRecord
		ok     bool
	}{
		{"lease in the pool", verify, sign(pooled, NamespaceVIP, "10.67.0.7", self(pooled)), true},
		{"fixed IP", verify, sign(pooled, NamespaceVIP, "10.99.0.5", self(pooled)), true},
		{"pool's network address", verify, sign(pooled, NamespaceVIP, "10.67.0.0", self(pooled)), false},
		{"pool's broadcast address", verify, sign(pooled, NamespaceVIP, "10.67.0.255", self(pooled)), false},
		{"outside the pool", verify, sign(pooled, NamespaceVIP, "10.68.0.7", self(pooled)), false},
		{"lease by a member without a pool", verifyFixed, sign(fixed, NamespaceVIP, "10.67.0.7", self(fixed)), false},
		{"lease naming another node", verify, sign(pooled, NamespaceVIP, "10.67.0.8", self(fixed)), false},
		{"name record", verify, sign(pooled, NamespaceName, "laptop-7", appendNameValue(nil, pooled.Member.Address, []netip.Addr{netip.MustParseAddr("10.67.0.7"), netip.MustParseAddr("10.99.0.5")})), true},
		{"name record of another name", verify, sign(pooled, NamespaceName, "server", appendNameValue(nil, pooled.Member.Address, nil)), false},
		{"name record with a foreign IP", verify, sign(pooled, NamespaceName, "laptop-7", appendNameValue(nil, pooled.Member.Address, []netip.Addr{netip.MustParseAddr("10.1.1.1")})), false},
		{"name record with another address", verify, sign(pooled, NamespaceName, "laptop-7", appendNameValue(nil, fixed.Member.Address, nil)), false},
		{"name record, bad value", verify, sign(pooled, NamespaceName, "laptop-7", []byte{1, 2, 3}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.verify.Verify(tt.rec.Key(), tt.rec, time.Now())
			if (err == nil) != tt.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, dht.ErrBadRecord) {
				t.Errorf("error %v does not wrap ErrBadRecord", err)
			}
		})
	}
}

func FuzzNameValue_Parse_NoPanic(f *testing.F) {
	var addr overlay.Address
	addr[0] = 7
	f.Add(appendNameValue(nil, addr, nil))
	f.Add(appendNameValue(nil, addr, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}))
	f.Add([]byte{})
	f.Add(make([]byte, 21))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ips, err := parseNameValue(b)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		if got := appendNameValue(nil, a, ips); string(got) != string(b) {
			t.Fatalf("round trip %x -> %x", b, got)
		}
	})
}
