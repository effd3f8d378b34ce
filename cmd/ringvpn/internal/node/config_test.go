package node

import (
	"context"
	"crypto/x509"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/config"
	"github.com/ringvpn/ringvpn/security"
)

func loadYAML(t *testing.T, body string) (Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ringvpn.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	err := config.Load(path, "RINGVPN", &cfg)
	return cfg, err
}

func TestConfig_IdentityRevocationKeys(t *testing.T) {
	cfg, err := loadYAML(t, "identity:\n  crl: group.crl\n  crl_reload: 30s\n  expiry_warning: 0s\n")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Identity.CRL, []string{"group.crl"}) || cfg.Identity.CRLReload != 30*time.Second || cfg.Identity.ExpiryWarning != 0 {
		t.Errorf("identity = %+v", cfg.Identity)
	}
	t.Setenv("RINGVPN_IDENTITY_CRL", "a.crl,b.crl")
	if cfg, err = loadYAML(t, ""); err != nil || !slices.Equal(cfg.Identity.CRL, []string{"a.crl", "b.crl"}) {
		t.Errorf("from the environment: %v, %v", cfg.Identity.CRL, err)
	}
}

func TestConfig_IdentityRevocationErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"reload too often", "identity:\n  crl_reload: 500ms\n", "identity.crl_reload: 500ms must be 0 (never) or in [1s,24h]"},
		{"reload without unit", "identity:\n  crl_reload: 60\n", `identity.crl_reload: 60 is not a duration; write it with a unit, like "60s"`},
		{"negative warning", "identity:\n  expiry_warning: -1h\n", "identity.expiry_warning: -1h0m0s not in [0,8784h]"},
		{"empty path", "identity:\n  crl: [a.crl, \"\"]\n", "identity.crl[1]: empty path"},
		{"misspelt key", "identity:\n  crls: [a.crl]\n", `unknown key "identity.crls" (did you mean "identity.crl"?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := loadYAML(t, tc.yaml); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want %q", err, tc.want)
			}
		})
	}
}

// testIdentity writes a CA, a member alice and the given files into a
// directory and returns a configuration that uses them.
func testIdentity(t *testing.T) (cfg Config, ca *security.CA, alice *x509.Certificate, dir string) {
	t.Helper()
	dir = t.TempDir()
	now := time.Now()
	ca, err := security.NewCA("group-ca", now.Add(-time.Hour), now.Add(24*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := security.GenerateKey("")
	alice, err = ca.Issue(key.Public(), security.MemberSpec{Name: "alice"}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg = Default()
	cfg.Identity.Cert, cfg.Identity.Key, cfg.Identity.CA = filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key"), filepath.Join(dir, "ca.crt")
	for _, err := range []error{
		security.WriteCertificate(cfg.Identity.CA, ca.Cert, false),
		security.WriteCertificate(cfg.Identity.Cert, alice, false),
		security.WritePrivateKey(cfg.Identity.Key, key, false),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return cfg, ca, alice, dir
}

// A bad revocation list stops the node before it opens anything, with an
// error naming the key and the file.
func TestOpen_RevocationListErrors(t *testing.T) {
	cfg, ca, alice, dir := testIdentity(t)
	now := time.Now()
	other, err := security.NewCA("other-ca", now.Add(-time.Hour), now.Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Revoke(nil, []x509.RevocationListEntry{{SerialNumber: alice.SerialNumber, RevocationTime: now}}, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	own, err := ca.Revoke(nil, []x509.RevocationListEntry{{SerialNumber: alice.SerialNumber, RevocationTime: now, ReasonCode: 4}}, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := security.WriteRevocationList(p("foreign.crl"), foreign); err != nil {
		t.Fatal(err)
	}
	if err := security.WriteRevocationList(p("own.crl"), own); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("garbage.crl"), []byte("not a list"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, file, want string }{
		{"foreign CA", p("foreign.crl"), "identity.crl: " + p("foreign.crl") +
			`: revocation list number 1 of CA "other-ca" is not signed by any CA in the trust bundle (trusted: "group-ca")`},
		{"missing", p("missing.crl"), "identity.crl: read revocation list: open " + p("missing.crl") + ": no such file or directory"},
		{"garbage", p("garbage.crl"), "identity.crl: " + p("garbage.crl") + ": no revocation list found"},
		{"this member revoked", p("own.crl"), `identity: certificate of "alice" (serial ` + alice.SerialNumber.Text(16) +
			`) was revoked by CA "group-ca" at`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cfg
			cfg.Identity.CRL = []string{tc.file}
			n, err := open(cfg, zap.NewNop())
			if err == nil {
				n.Close()
				t.Fatal("open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("open = %v\nwant %q", err, tc.want)
			}
		})
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A running node applies a newer list written to its crl file, and its
// Revocations hold it for publishing.
func TestStart_ReloadsRevocationList(t *testing.T) {
	cfg, ca, alice, dir := testIdentity(t)
	now := time.Now()
	first, err := ca.Revoke(nil, nil, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "group.crl")
	if err := security.WriteRevocationList(path, first); err != nil {
		t.Fatal(err)
	}
	cfg.Identity.CRL = []string{path}
	cfg.Identity.CRLReload = time.Second
	cfg.VPN.Enabled = false
	cfg.Control.Socket = ""
	cfg.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	n, err := Start(context.Background(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if lists := n.Revocations().Lists(); len(lists) != 1 || lists[0].Number.Int64() != 1 {
		t.Fatalf("held at start: %v", lists)
	}
	if n.Endpoint().Revocations() != n.Revocations() {
		t.Fatal("the endpoint does not apply the node's revocations")
	}
	bob := &x509.Certificate{RawIssuer: alice.RawIssuer, SerialNumber: big.NewInt(42)}
	second, err := ca.Revoke(first, []x509.RevocationListEntry{{SerialNumber: bob.SerialNumber, RevocationTime: now}}, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := security.WriteRevocationList(path, second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !n.Revocations().Revoked(bob); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the newer list in the file was not applied")
		}
	}
}

func TestConfig_RevocationKeys(t *testing.T) {
	cfg, err := loadYAML(t, "revocation:\n  check_interval: 30s\n  record_ttl: 2h\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Revocation.CheckInterval != 30*time.Second || cfg.Revocation.RecordTTL != 2*time.Hour {
		t.Errorf("revocation = %+v", cfg.Revocation)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"check too often", "revocation:\n  check_interval: 100ms\n", "revocation.check_interval: 100ms not in [1s,24h]"},
		{"ttl above the DHT's", "revocation:\n  record_ttl: 48h\n", "revocation.record_ttl: 48h0m0s is longer than dht.max_ttl (24h0m0s)"},
		{"DHT values too small", "dht:\n  max_value_size: 512\n", "dht.max_value_size: 512 is below 999, the largest value of a revocation list record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := loadYAML(t, tc.yaml); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want %q", err, tc.want)
			}
		})
	}
}
