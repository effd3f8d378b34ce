package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ringvpn/ringvpn/security"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is what one in-process run of ringvpn did.
type result struct {
	code           int
	stdout, stderr string
}

// ringvpn runs the command line in-process.
func ringvpn(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// ok runs the command line and fails the test unless it succeeds.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := ringvpn(t, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("ringvpn %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// fails runs the command line and checks that it exits 1 with one error
// line containing want.
func fails(t *testing.T, want string, args ...string) result {
	t.Helper()
	r := ringvpn(t, args...)
	if r.code != 1 {
		t.Fatalf("ringvpn %s: exit %d, want 1\nstdout: %s", strings.Join(args, " "), r.code, r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "ringvpn: ") || strings.Count(r.stderr, "ringvpn: ") != 1 {
		t.Errorf("stderr should hold one \"ringvpn: <error>\":\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("ringvpn %s: stderr\n%s\ndoes not contain %q", strings.Join(args, " "), r.stderr, want)
	}
	return r
}

// group makes a CA and a member alice in a temporary directory and returns
// the directory.
func group(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ok(t, "ca", "init", "--name", "group-ca", "--cert", filepath.Join(dir, "ca.crt"), "--key", filepath.Join(dir, "ca.key"))
	ok(t, "cert", "issue", "--ca-cert", filepath.Join(dir, "ca.crt"), "--ca-key", filepath.Join(dir, "ca.key"),
		"--name", "alice", "--ip", "10.20.0.5/16", "--ip", "fd00:20::5/64", "--group", "web", "--group", "db",
		"--subnet", "192.168.10.0/24", "--validity", "720h",
		"--cert", filepath.Join(dir, "alice.crt"), "--key", filepath.Join(dir, "alice.key"))
	return dir
}

func TestRun_CAInitIssueShowVerify(t *testing.T) {
	dir := group(t)
	p := func(name string) string { return filepath.Join(dir, name) }

	// show --json parses and has the right fields.
	var shown certJSON
	if err := json.Unmarshal([]byte(ok(t, "cert", "show", "--json", p("alice.crt"))), &shown); err != nil {
		t.Fatal(err)
	}
	key, err := security.ReadPrivateKey(p("alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := security.AddressOf(key.Public())
	want := map[string][2]string{
		"kind":     {shown.Kind, "member"},
		"name":     {shown.Name, "alice"},
		"address":  {shown.Address, addr.String()},
		"ips":      {strings.Join(shown.IPs, " "), "10.20.0.5/16 fd00:20::5/64"},
		"groups":   {strings.Join(shown.Groups, " "), "web db"},
		"subnets":  {strings.Join(shown.Subnets, " "), "192.168.10.0/24"},
		"issuer":   {shown.Issuer, "group-ca"},
		"key_type": {shown.KeyType, "ecdsa-p256"},
	}
	for field, gw := range want {
		if gw[0] != gw[1] {
			t.Errorf("%s = %q, want %q", field, gw[0], gw[1])
		}
	}
	if life := shown.NotAfter.Sub(shown.NotBefore); life < 720*time.Hour || life > 720*time.Hour+2*clockSkew {
		t.Errorf("validity %s to %s, want 720h (plus the clock-skew allowance)", shown.NotBefore, shown.NotAfter)
	}
	if !strings.HasPrefix(shown.Fingerprint, "sha256:") || len(shown.Fingerprint) != len("sha256:")+64 {
		t.Errorf("fingerprint %q", shown.Fingerprint)
	}

	// The text form says the same.
	text := ok(t, "cert", "show", p("alice.crt"))
	for _, s := range []string{"name:        alice", "address:     " + addr.String(), "ips:         10.20.0.5/16, fd00:20::5/64", "issuer:      group-ca"} {
		if !strings.Contains(text, s) {
			t.Errorf("cert show output lacks %q:\n%s", s, text)
		}
	}

	// verify passes against the group's CA ...
	out := ok(t, "cert", "verify", "--ca", p("ca.crt"), p("alice.crt"))
	if !strings.Contains(out, `valid: "alice", overlay address `+addr.String()+`, issued by "group-ca"`) {
		t.Errorf("verify output: %s", out)
	}
	// ... and fails for another CA's bundle, naming the reason.
	ok(t, "ca", "init", "--name", "other-ca", "--cert", p("other.crt"), "--key", p("other.key"))
	fails(t, p("alice.crt")+`: certificate of "alice" is signed by "group-ca", which is not in the trust bundle (trusted: "other-ca")`,
		"cert", "verify", "--ca", p("other.crt"), p("alice.crt"))
	// A bundle of both (CA rotation) accepts it.
	ok(t, "cert", "verify", "--ca", p("other.crt"), "--ca", p("ca.crt"), p("alice.crt"))
}

func TestRun_KeyFilesAreOwnerOnly(t *testing.T) {
	dir := group(t)
	for _, name := range []string{"ca.key", "alice.key"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
}

func TestRun_OverwriteRefusedWithoutForce(t *testing.T) {
	dir := group(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	caBefore, _ := os.ReadFile(p("ca.key"))
	aliceBefore, _ := os.ReadFile(p("alice.crt"))

	initCA := []string{"ca", "init", "--name", "group-ca", "--cert", p("ca.crt"), "--key", p("ca.key")}
	fails(t, p("ca.crt")+" exists; use --force to overwrite", initCA...)
	issue := []string{"cert", "issue", "--ca-cert", p("ca.crt"), "--ca-key", p("ca.key"), "--name", "alice", "--ip", "10.20.0.5/16",
		"--cert", p("alice.crt"), "--key", p("alice.key")}
	fails(t, p("alice.crt")+" exists; use --force to overwrite", issue...)
	// Only the key exists: still refused, and nothing is written.
	os.Remove(p("alice.crt"))
	fails(t, p("alice.key")+" exists; use --force to overwrite", issue...)
	if _, err := os.Stat(p("alice.crt")); err == nil {
		t.Error("a refused issue wrote the certificate")
	}
	if after, _ := os.ReadFile(p("ca.key")); !bytes.Equal(after, caBefore) {
		t.Error("a refused ca init changed the CA key")
	}

	// With --force both are replaced.
	ok(t, append(issue, "--force")...)
	if after, _ := os.ReadFile(p("alice.crt")); bytes.Equal(after, aliceBefore) {
		t.Error("--force did not replace the certificate")
	}
	ok(t, append(initCA, "--force")...)
	if after, _ := os.ReadFile(p("ca.key")); bytes.Equal(after, caBefore) {
		t.Error("--force did not replace the CA key")
	}
	// alice's certificate is from the old CA now.
	fails(t, "issued by another CA of the same name", "cert", "verify", "--ca", p("ca.crt"), p("alice.crt"))
}

func TestRun_Ed25519(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	ok(t, "ca", "init", "--name", "ed-ca", "--key-type", "ed25519", "--cert", p("ca.crt"), "--key", p("ca.key"), "--not-after", "2099-01-01")
	ok(t, "cert", "issue", "--ca-cert", p("ca.crt"), "--ca-key", p("ca.key"), "--name", "bob", "--ip", "10.0.0.2/24",
		"--key-type", "ed25519", "--cert", p("bob.crt"), "--key", p("bob.key"))
	var shown certJSON
	if err := json.Unmarshal([]byte(ok(t, "cert", "show", "--json", p("bob.crt"))), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.KeyType != "ed25519" || len(shown.Groups) != 0 || shown.Groups == nil {
		t.Errorf("key_type %q groups %#v, want ed25519 and []", shown.KeyType, shown.Groups)
	}
	ok(t, "cert", "verify", "--ca", p("ca.crt"), p("bob.crt"))
	var ca certJSON
	if err := json.Unmarshal([]byte(ok(t, "cert", "show", "--json", p("ca.crt"))), &ca); err != nil {
		t.Fatal(err)
	}
	if ca.Kind != "ca" || ca.Name != "ed-ca" || ca.NotAfter.Year() != 2099 || ca.Address != "" || ca.IPs != nil {
		t.Errorf("CA shown as %+v", ca)
	}
}

// TestRun_VerifyExpired checks that verify names the reason for a
// certificate that expired (made with package security, as the CLI only
// issues certificates valid from now).
func TestRun_VerifyExpired(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	start := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := security.NewCA("old-ca", start, start.Add(24*365*time.Hour*20), "")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := security.GenerateKey("")
	cert, err := ca.Issue(key.Public(), security.MemberSpec{Name: "carol"}, start, start.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := security.WriteCertificate(p("ca.crt"), ca.Cert, false); err != nil {
		t.Fatal(err)
	}
	if err := security.WriteCertificate(p("carol.crt"), cert, false); err != nil {
		t.Fatal(err)
	}
	fails(t, p("carol.crt")+`: certificate of "carol" expired at 2020-01-02T00:00:00Z (now `, "cert", "verify", "--ca", p("ca.crt"), p("carol.crt"))
	if out := ok(t, "cert", "show", p("carol.crt")); !strings.Contains(out, "(expired)") {
		t.Errorf("show does not say expired:\n%s", out)
	}
}

func TestRun_UsageErrors(t *testing.T) {
	dir := group(t)
	caFlags := []string{"--ca-cert", filepath.Join(dir, "ca.crt"), "--ca-key", filepath.Join(dir, "ca.key")}
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool // the command's usage follows the error
	}{
		{"unknown flag", []string{"ca", "init", "--nme", "x"}, "unknown flag: --nme", true},
		{"unknown command", []string{"cert", "isue"}, `unknown command "isue" for "ringvpn cert" (did you mean "issue"?)`, true},
		{"unknown top-level command", []string{"frobnicate"}, `unknown command "frobnicate" for "ringvpn"`, true},
		{"missing name", []string{"ca", "init"}, "--name is required", true},
		{"missing ip", append([]string{"cert", "issue", "--name", "bob"}, caFlags...), "--ip is required", true},
		{"ip without length", append([]string{"cert", "issue", "--name", "bob", "--ip", "10.20.0.6"}, caFlags...),
			"--ip 10.20.0.6: add the network length, like 10.20.0.5/16", true},
		{"bad key type", []string{"ca", "init", "--name", "x", "--key-type", "rsa"},
			`invalid argument "rsa" for "--key-type" flag: use ecdsa-p256, ed25519`, true},
		{"bad log level", []string{"--log-level", "verbose", "version"}, `invalid argument "verbose" for "--log-level" flag`, true},
		{"both validity flags", []string{"ca", "init", "--name", "x", "--validity", "1h", "--not-after", "2030-01-01"},
			"--validity and --not-after both set", true},
		{"bad not-after", []string{"ca", "init", "--name", "x", "--not-after", "soon"}, `--not-after "soon": want a time like`, true},
		{"show without file", []string{"cert", "show"}, "want one certificate file, got 0 arguments", true},
		{"invalid member", append([]string{"cert", "issue", "--name", "bob", "--ip", "10.20.255.255/16", "--subnet", "10.1.2.3/8"}, caFlags...),
			"invalid member \"bob\":\n  virtual IP 10.20.255.255/16 is the broadcast address of its prefix; use a host address, like 10.20.255.254/16\n  subnet 10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?", false},
		{"validity beyond the CA", append([]string{"cert", "issue", "--name", "bob", "--ip", "10.20.0.6/16", "--validity", "20000h"}, caFlags...),
			`after CA "group-ca" expires`, false},
		{"not-after in the past", []string{"ca", "init", "--name", "x", "--not-after", "2001-01-01"}, "--not-after 2001-01-01T00:00:00Z is in the past", false},
		{"missing CA", []string{"cert", "issue", "--name", "bob", "--ip", "10.20.0.6/16", "--ca-cert", filepath.Join(dir, "nope.crt")},
			"nope.crt: no such file or directory", false},
		{"show a key", []string{"cert", "show", filepath.Join(dir, "alice.key")}, "is a private key, not a certificate", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fails(t, tt.want, tt.args...)
			if got := strings.Contains(r.stderr, "Usage:"); got != tt.usage {
				t.Errorf("usage printed: %v, want %v\n%s", got, tt.usage, r.stderr)
			}
		})
	}
}

func TestRun_HelpAndVersion(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"ca"}, {"cert", "issue", "--help"}} {
		if out := ok(t, args...); !strings.Contains(out, "Usage:") {
			t.Errorf("ringvpn %v: no usage in\n%s", args, out)
		}
	}
	out := ok(t, "version")
	for _, s := range []string{"ringvpn ", "go         go1.", "pion/dtls "} {
		if !strings.Contains(out, s) {
			t.Errorf("version output lacks %q:\n%s", s, out)
		}
	}
	old := version
	version = "v9.9.9-test"
	defer func() { version = old }()
	if out := ok(t, "version"); !strings.HasPrefix(out, "ringvpn    v9.9.9-test\n") {
		t.Errorf("version with -X main.version: %s", out)
	}
}

func TestRun_LogFlags(t *testing.T) {
	dir := t.TempDir()
	r := ringvpn(t, "--log-level", "debug", "--log-format", "json", "ca", "init", "--name", "x",
		"--cert", filepath.Join(dir, "c.crt"), "--key", filepath.Join(dir, "c.key"))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stderr)), &entry); err != nil || entry["msg"] != "created CA" {
		t.Errorf("debug log on stderr = %q (%v), want one JSON entry \"created CA\"", r.stderr, err)
	}
}
