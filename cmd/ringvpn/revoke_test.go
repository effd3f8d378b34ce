package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringvpn/ringvpn/security"
)

func TestRun_CARevokeRoundTrip(t *testing.T) {
	dir := group(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	caFlags := []string{"--ca-cert", p("ca.crt"), "--ca-key", p("ca.key")}
	ok(t, append([]string{"cert", "issue", "--name", "bob", "--ip", "10.20.0.6/16", "--cert", p("bob.crt"), "--key", p("bob.key")}, caFlags...)...)
	alice, err := security.ReadCertificate(p("alice.crt"))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := security.ReadCertificate(p("bob.crt"))
	if err != nil {
		t.Fatal(err)
	}
	revoke := append([]string{"ca", "revoke", "--crl", p("group.crl")}, caFlags...)

	out := ok(t, append(revoke, "--cert", p("alice.crt"), "--reason", "key-compromise")...)
	for _, want := range []string{
		`revoked "alice" (serial ` + alice.SerialNumber.Text(16) + `) (key-compromise)`,
		"revocation list " + p("group.crl") + `: number 1 of CA "group-ca", 1 revoked, next update `,
		"a new list: if members already hold a list of this CA, extend that one instead",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first revoke output lacks %q:\n%s", want, out)
		}
	}

	// verify --crl refuses alice, naming the revocation, and passes bob.
	verify := []string{"cert", "verify", "--ca", p("ca.crt"), "--crl", p("group.crl")}
	fails(t, p("alice.crt")+`: certificate of "alice" (serial `+alice.SerialNumber.Text(16)+`) was revoked by CA "group-ca" at `,
		append(verify, p("alice.crt"))...)
	fails(t, "(key-compromise; revocation list number 1)", append(verify, p("alice.crt"))...)
	ok(t, append(verify, p("bob.crt"))...)

	// Extending: by serial (as cert show prints it, here with colons), and
	// alice again, who keeps her first entry.
	var colons []string
	for i, h := 0, bob.SerialNumber.Text(16); i < len(h); i += 2 {
		colons = append(colons, h[i:min(i+2, len(h))])
	}
	out = ok(t, append(revoke, "--serial", strings.Join(colons, ":"), "--cert", p("alice.crt"))...)
	for _, want := range []string{
		"revoked serial " + bob.SerialNumber.Text(16) + " (unspecified)",
		`"alice" (serial ` + alice.SerialNumber.Text(16) + `) was already revoked at `,
		`: number 2 of CA "group-ca", 2 revoked`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("second revoke output lacks %q:\n%s", want, out)
		}
	}
	fails(t, `certificate of "bob"`, append(verify, p("bob.crt"))...)
	// Signing again without revoking anyone: a new number, same entries.
	if out := ok(t, append(revoke, "--next-update", "2160h")...); !strings.Contains(out, "number 3 of CA \"group-ca\", 2 revoked") {
		t.Errorf("re-sign output:\n%s", out)
	}

	var shown []crlJSON
	if err := json.Unmarshal([]byte(ok(t, "ca", "crl", "show", "--json", p("group.crl"))), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown) != 1 || shown[0].Issuer != "group-ca" || shown[0].Number != "3" || len(shown[0].Revoked) != 2 {
		t.Fatalf("crl show --json: %+v", shown)
	}
	if e := shown[0].Revoked[0]; e.Serial != alice.SerialNumber.Text(16) || e.Reason != "key-compromise" {
		t.Errorf("first entry %+v, want alice for key-compromise", e)
	}
	if d := shown[0].NextUpdate.Sub(shown[0].ThisUpdate); d.Hours() != 2160 {
		t.Errorf("next update %s after this update, want 2160h", d)
	}
	text := ok(t, "ca", "crl", "show", p("group.crl"))
	for _, want := range []string{"CA:          group-ca", "number:      3", "revoked:     2", bob.SerialNumber.Text(16) + "  ", " days)"} {
		if !strings.Contains(text, want) {
			t.Errorf("crl show lacks %q:\n%s", want, text)
		}
	}

	// What a member does with the file: the same answers.
	bundle, err := security.ParseTrustBundle(mustRead(t, p("ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	revs := security.NewRevocations(bundle)
	if _, err := revs.AddPEM(mustRead(t, p("group.crl"))); err != nil {
		t.Fatal(err)
	}
	if !revs.Revoked(alice) || !revs.Revoked(bob) {
		t.Error("a member does not see alice and bob revoked")
	}
}

func TestRun_CARevokeErrors(t *testing.T) {
	dir := group(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	caFlags := []string{"--ca-cert", p("ca.crt"), "--ca-key", p("ca.key")}
	ok(t, "ca", "init", "--name", "other-ca", "--cert", p("other.crt"), "--key", p("other.key"))
	ok(t, "cert", "issue", "--ca-cert", p("other.crt"), "--ca-key", p("other.key"), "--name", "carol", "--ip", "10.30.0.5/16",
		"--cert", p("carol.crt"), "--key", p("carol.key"))
	ok(t, "ca", "revoke", "--ca-cert", p("other.crt"), "--ca-key", p("other.key"), "--crl", p("other.crl"), "--cert", p("carol.crt"))
	revoke := func(args ...string) []string { return append(append([]string{"ca", "revoke"}, caFlags...), args...) }

	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no crl flag", revoke("--cert", p("alice.crt")), "--crl is required", true},
		{"nothing to revoke", revoke("--crl", p("new.crl")),
			"name a certificate to revoke with --cert FILE or --serial HEX (" + p("new.crl") + " does not exist yet)", true},
		{"bad serial", revoke("--crl", p("new.crl"), "--serial", "xyz"),
			`--serial "xyz": want a certificate's serial number in hex, as ` + "`ringvpn cert show`" + ` prints it`, true},
		{"bad reason", revoke("--crl", p("new.crl"), "--serial", "1f", "--reason", "because"),
			`invalid argument "because" for "--reason" flag: use unspecified, key-compromise`, true},
		{"next update", revoke("--crl", p("new.crl"), "--serial", "1f", "--next-update", "0s"), "--next-update 0s: must be positive", true},
		{"member of another CA", revoke("--crl", p("new.crl"), "--cert", p("carol.crt")),
			`--cert ` + p("carol.crt") + `: the certificate of "carol" was not issued by CA "group-ca" (issuer "other-ca")`, false},
		{"a CA certificate", revoke("--crl", p("new.crl"), "--cert", p("ca.crt")), `"group-ca" is a CA certificate, not a member's`, false},
		{"another CA's list", revoke("--crl", p("other.crl"), "--cert", p("alice.crt")),
			`--crl ` + p("other.crl") + `: revoke: revocation list number 1 of CA "other-ca" is not signed by CA "group-ca"`, false},
		{"not a list", revoke("--crl", p("alice.crt"), "--serial", "1f"), "PEM block 1 is a certificate, not a revocation list", false},
		{"show a certificate", []string{"ca", "crl", "show", p("alice.crt")}, "is a certificate, not a revocation list", false},
		{"show without file", []string{"ca", "crl", "show"}, "want one revocation list file, got 0 arguments", true},
		{"verify with a foreign list", []string{"cert", "verify", "--ca", p("ca.crt"), "--crl", p("other.crl"), p("alice.crt")},
			"--crl " + p("other.crl") + `: revocation list number 1 of CA "other-ca" is not signed by any CA in the trust bundle (trusted: "group-ca")`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fails(t, tt.want, tt.args...)
			if got := strings.Contains(r.stderr, "Usage:"); got != tt.usage {
				t.Errorf("usage printed: %v, want %v\n%s", got, tt.usage, r.stderr)
			}
		})
	}
	// A trust bundle of both CAs takes both lists.
	ok(t, "ca", "revoke", "--crl", p("group.crl"), "--cert", p("alice.crt"), "--ca-cert", p("ca.crt"), "--ca-key", p("ca.key"))
	fails(t, `certificate of "carol"`, "cert", "verify", "--ca", p("ca.crt"), "--ca", p("other.crt"), "--crl", p("group.crl"), "--crl", p("other.crl"), p("carol.crt"))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
