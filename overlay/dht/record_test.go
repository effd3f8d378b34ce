package dht_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// group is a test CA with its bundle.
type group struct {
	ca     *security.CA
	bundle *security.TrustBundle
}

func newGroup(t testing.TB, name string) *group {
	t.Helper()
	now := time.Now()
	ca, err := security.NewCA(name, now.Add(-time.Hour), now.Add(24*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := security.NewTrustBundle(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return &group{ca: ca, bundle: b}
}

// member issues an identity of the given key kind.
func (g *group) member(t testing.TB, name, kind string) *security.Identity {
	t.Helper()
	now := time.Now()
	key, err := security.GenerateKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := g.ca.Issue(key.Public(), security.MemberSpec{Name: name}, now.Add(-time.Hour), now.Add(12*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id, err := security.NewIdentity(key, cert, g.bundle, now)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sign(t testing.TB, id *security.Identity, ns, name, value string, expires time.Time) *dht.SignedRecord {
	t.Helper()
	r, err := dht.Sign(id, ns, name, []byte(value), expires)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSign_VerifyRoundTrip(t *testing.T) {
	g := newGroup(t, "group-ca")
	v := dht.VerifyWith(g.bundle)
	for _, kind := range []string{security.KeyKindECDSAP256, security.KeyKindEd25519} {
		t.Run(kind, func(t *testing.T) {
			id := g.member(t, "alice", kind)
			rec := sign(t, id, dht.NamespaceNode, dht.ClaimName(id.Member.Address, "vip"), "10.20.0.5", time.Now().Add(time.Hour))
			b, err := rec.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := dht.ParseRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Namespace != rec.Namespace || got.Name != rec.Name || !bytes.Equal(got.Value, rec.Value) ||
				!got.Expires.Equal(rec.Expires) || !bytes.Equal(got.Sig, rec.Sig) || len(got.Cert) != 1 || !bytes.Equal(got.Cert[0], rec.Cert[0]) {
				t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, got)
			}
			m, err := v.Verify(dht.KeyOf(rec.Namespace, rec.Name), got, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if m.Address != id.Member.Address || m.Name != "alice" {
				t.Fatalf("signer %s (%s), want alice (%s)", m.Name, m.Address, id.Member.Address)
			}
		})
	}
}

func TestKeyOf_LengthPrefixed(t *testing.T) {
	if dht.KeyOf("ab", "c") == dht.KeyOf("a", "bc") {
		t.Fatal("KeyOf does not separate namespace and name")
	}
	if dht.KeyOf("names", "x") == dht.KeyOf("node", "x") {
		t.Fatal("KeyOf ignores the namespace")
	}
}

func TestVerify_RefusesForgeries(t *testing.T) {
	g := newGroup(t, "group-ca")
	other := newGroup(t, "other-ca")
	alice := g.member(t, "alice", "")
	bob := g.member(t, "bob", security.KeyKindEd25519)
	mallory := other.member(t, "mallory", "")
	v := dht.VerifyWith(g.bundle, "vip")
	now := time.Now()
	exp := now.Add(time.Hour)
	aliceName := dht.ClaimName(alice.Member.Address, "")

	tampered := sign(t, alice, "names", "alice", "10.0.0.1", exp)
	tampered.Value = []byte("10.0.0.66")
	swapped := sign(t, alice, "names", "alice", "v", exp)
	swapped.Cert = sign(t, bob, "names", "alice", "v", exp).Cert

	tests := []struct {
		name  string
		rec   *dht.SignedRecord
		key   func(r *dht.SignedRecord) [20]byte
		want  string
		cause error
	}{
		{name: "wrong signer of a node claim", rec: sign(t, bob, dht.NamespaceNode, aliceName, "x", exp), want: "claim about another node"},
		{name: "wrong signer of a custom claim", rec: sign(t, bob, "vip", aliceName+"/ip", "x", exp), want: "claim about another node"},
		{name: "claim named by a prefix", rec: sign(t, alice, dht.NamespaceNode, aliceName+"x", "x", exp), want: "claim about another node"},
		{name: "tampered value", rec: tampered, want: "signature does not verify"},
		{name: "certificate swapped", rec: swapped, want: "signature does not verify"},
		{name: "other CA", rec: sign(t, mallory, "names", "mallory", "x", exp), want: "not in the trust bundle", cause: security.ErrUnknownCA},
		{name: "wrong key", rec: sign(t, alice, "names", "alice", "x", exp), key: func(*dht.SignedRecord) [20]byte { return dht.KeyOf("names", "bob") }, want: "belongs at key"},
		{name: "expired", rec: sign(t, alice, "names", "alice", "x", now.Add(-time.Second)), want: "expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.rec.Key()
			if tt.key != nil {
				key = tt.key(tt.rec)
			}
			_, err := v.Verify(key, tt.rec, now)
			if !errors.Is(err, dht.ErrBadRecord) {
				t.Fatalf("Verify = %v, want ErrBadRecord", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify error %q does not say %q", err, tt.want)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Fatalf("Verify error %q does not wrap %v", err, tt.cause)
			}
		})
	}

	// The genuine articles pass.
	for _, rec := range []*dht.SignedRecord{
		sign(t, alice, dht.NamespaceNode, aliceName, "x", exp),
		sign(t, alice, "vip", aliceName+"/ip", "x", exp),
		sign(t, bob, "names", "alice", "anyone may write outside claims", exp),
	} {
		if _, err := v.Verify(rec.Key(), rec, now); err != nil {
			t.Errorf("genuine record %s/%s refused: %v", rec.Namespace, rec.Name, err)
		}
	}
}

func TestSign_RejectsBadShapes(t *testing.T) {
	g := newGroup(t, "group-ca")
	id := g.member(t, "alice", "")
	exp := time.Now().Add(time.Hour)
	for _, tt := range []struct{ name, ns, rname, value string }{
		{"empty namespace", "", "n", "v"},
		{"namespace with a slash", "a/b", "n", "v"},
		{"long namespace", strings.Repeat("a", dht.MaxNamespaceLen+1), "n", "v"},
		{"empty name", "ns", "", "v"},
		{"long name", "ns", strings.Repeat("n", dht.MaxRecordNameLen+1), "v"},
		{"long value", "ns", "n", strings.Repeat("v", dht.MaxValueLimit+1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := dht.Sign(id, tt.ns, tt.rname, []byte(tt.value), exp); err == nil {
				t.Fatal("Sign accepted it")
			}
		})
	}
}
