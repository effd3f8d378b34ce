package node

import (
	"context"
	"crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/security"
)

// Reload, as SIGHUP runs it: a CA rotation closes the link to a peer of
// the CA that left the bundle and presents the new certificate; a
// certificate for another key is refused and changes nothing.
func TestReload_CARotation(t *testing.T) {
	cfgA, ca1, _, dir := testIdentity(t)
	now := time.Now()
	ca2, err := security.NewCA("group-ca-2", now.Add(-time.Hour), now.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	writeBundle := func(name string, cas ...*x509.Certificate) string {
		var pem []byte
		for i, c := range cas {
			f := p(name + string(rune('0'+i)))
			if err := security.WriteCertificate(f, c, true); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(f)
			pem = append(pem, b...)
		}
		if err := os.WriteFile(p(name), pem, 0o644); err != nil {
			t.Fatal(err)
		}
		return p(name)
	}
	// bob: a member of the first CA.
	bobKey, _ := security.GenerateKey("")
	bobCert, err := ca1.Issue(bobKey.Public(), security.MemberSpec{Name: "bob"}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfgB := cfgA
	cfgB.Identity.Cert, cfgB.Identity.Key = p("bob.crt"), p("bob.key")
	if err := security.WriteCertificate(cfgB.Identity.Cert, bobCert, false); err != nil {
		t.Fatal(err)
	}
	if err := security.WritePrivateKey(cfgB.Identity.Key, bobKey, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.VPN.Enabled, c.Control.Socket = false, ""
		c.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	}
	cfgA.Identity.CA = writeBundle("both.pem", ca1.Cert, ca2.Cert)
	a, err := Start(context.Background(), cfgA, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cfgB.Overlay.Bootstrap = []netip.AddrPort{a.linker.LocalAddr()}
	b, err := Start(context.Background(), cfgB, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitFor(t, "a link between a and b", func() bool { return len(a.Endpoint().Links()) == 1 })

	// A certificate for another key is refused.
	otherKey, _ := security.GenerateKey("")
	other, _ := ca1.Issue(otherKey.Public(), security.MemberSpec{Name: "alice"}, now.Add(-time.Hour), now.Add(time.Hour))
	bad := cfgA
	bad.Identity.Cert, bad.Identity.Key = p("other.crt"), p("other.key")
	security.WriteCertificate(bad.Identity.Cert, other, false)
	security.WritePrivateKey(bad.Identity.Key, otherKey, false)
	if err := a.Reload(bad); err == nil || !strings.Contains(err.Error(), "a new key makes a new member") {
		t.Fatalf("reload with another key: %v", err)
	}
	if len(a.Endpoint().Links()) != 1 {
		t.Fatal("a refused reload closed links")
	}

	// The rotation: alice's key certified by the second CA, which alone
	// is trusted now.
	aliceKey, err := security.ReadPrivateKey(cfgA.Identity.Key)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := ca2.Issue(aliceKey.Public(), security.MemberSpec{Name: "alice"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	next := cfgA
	next.Identity.Cert, next.Identity.CA = p("alice2.crt"), writeBundle("second.pem", ca2.Cert)
	if err := security.WriteCertificate(next.Identity.Cert, renewed, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := a.Endpoint().Identity().Member.CAName; got != "group-ca-2" {
		t.Fatalf("presents a certificate of %q after the reload", got)
	}
	waitFor(t, "the link to bob (first CA) closed", func() bool { return len(a.Endpoint().Links()) == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20s", what)
		}
	}
}
