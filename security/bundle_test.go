package security

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func mustBundle(t testing.TB, cas ...*CA) *TrustBundle {
	t.Helper()
	certs := make([]*x509.Certificate, len(cas))
	for i, ca := range cas {
		certs[i] = ca.Cert
	}
	b, err := NewTrustBundle(certs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// now is a time inside every test certificate's validity.
var now = t0.Add(24 * time.Hour)

func TestVerifyMember_OK(t *testing.T) {
	kinds := []string{KeyKindECDSAP256, KeyKindEd25519}
	for _, caKind := range kinds {
		for _, memberKind := range kinds {
			t.Run("ca="+caKind+"/member="+memberKind, func(t *testing.T) {
				ca := newTestCA(t, "group-ca", caKind)
				key, cert := issueTestMember(t, ca, aliceSpec(), memberKind)
				m, err := mustBundle(t, ca).VerifyMember([][]byte{cert.Raw}, now)
				if err != nil {
					t.Fatalf("VerifyMember: %v", err)
				}
				wantAddr, _ := AddressOf(key.Public())
				spec := aliceSpec()
				switch {
				case m.Address != wantAddr:
					t.Errorf("Address = %s, want %s", m.Address, wantAddr)
				case m.Name != spec.Name || m.CAName != "group-ca" || m.Cert != nil && !m.Cert.Equal(cert):
					t.Errorf("member %q from %q, want alice from group-ca", m.Name, m.CAName)
				case len(m.IPs) != 2 || m.IPs[0] != spec.IPs[0] || m.IPs[1] != spec.IPs[1]:
					t.Errorf("IPs = %v, want %v", m.IPs, spec.IPs)
				case len(m.Groups) != 2 || m.Groups[0] != "web" || m.Groups[1] != "db-admins":
					t.Errorf("Groups = %v", m.Groups)
				case len(m.Subnets) != 1 || m.Subnets[0] != spec.Subnets[0]:
					t.Errorf("Subnets = %v", m.Subnets)
				case !m.NotBefore.Equal(t0) || !m.NotAfter.Equal(t0.Add(memberLife)):
					t.Errorf("validity %s..%s", m.NotBefore, m.NotAfter)
				}
			})
		}
	}
}

func TestVerifyMember_ValidityBoundsAreInclusive(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	_, cert := issueTestMember(t, ca, aliceSpec(), "")
	b := mustBundle(t, ca)
	for _, at := range []time.Time{cert.NotBefore, cert.NotAfter} {
		if _, err := b.VerifyMember([][]byte{cert.Raw}, at); err != nil {
			t.Errorf("VerifyMember at %s: %v", at, err)
		}
	}
}

// craft signs a certificate from template with ca's key, for shapes that
// Issue refuses to make.
func craft(t *testing.T, ca *CA, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, _ := GenerateKey("")
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(42)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyMember_Errors(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	other := newTestCA(t, "other-ca", "")
	bundle := mustBundle(t, ca)
	_, good := issueTestMember(t, ca, aliceSpec(), "")

	// A CA whose validity ends before its member's: only a crafted member
	// can outlive its CA, so shorten the CA instead.
	shortCA, err := NewCA("short-ca", t0, t0.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	shortMember := issueValid(t, shortCA, t0, t0.Add(48*time.Hour))

	// An impostor CA with the same name as the trusted one but another key.
	impostor := newTestCA(t, "group-ca", "")
	_, impostorMember := issueTestMember(t, impostor, aliceSpec(), "")

	// Address mismatch: the extension claims another address.
	key, _ := GenerateKey("")
	claim := Address{0xde, 0xad}
	lying, err := ca.issue(key.Public(), aliceSpec(), t0, t0.Add(memberLife), &claim)
	if err != nil {
		t.Fatal(err)
	}
	keyAddr, _ := AddressOf(key.Public())

	// Tampered: flip a bit in the signature.
	tampered := append([]byte(nil), good.Raw...)
	tampered[len(tampered)-3] ^= 0x01

	// Tampered: change the name inside the signed part (the CN "alice" ->
	// "alicf"); the signature no longer matches.
	renamed := append([]byte(nil), good.Raw...)
	i := strings.Index(string(renamed), "alice")
	renamed[i+4] = 'f'

	noExt := craft(t, ca, &x509.Certificate{
		Subject: pkix.Name{CommonName: "alice"}, NotBefore: t0, NotAfter: t0.Add(memberLife),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"alice.example.com"},
	})
	serverOnly := craft(t, ca, &x509.Certificate{
		Subject: pkix.Name{CommonName: "alice"}, NotBefore: t0, NotAfter: t0.Add(memberLife),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	critical := craft(t, ca, &x509.Certificate{
		Subject: pkix.Name{CommonName: "alice"}, NotBefore: t0, NotAfter: t0.Add(memberLife),
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}},
	})
	badExt := craft(t, ca, &x509.Certificate{
		Subject: pkix.Name{CommonName: "alice"}, NotBefore: t0, NotAfter: t0.Add(memberLife),
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		ExtraExtensions: []pkix.Extension{{Id: oidMemberExtension, Value: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}},
	})
	bobExt, _ := marshalMemberExt(Address{}, MemberSpec{Name: "bob"})
	otherName := craft(t, ca, &x509.Certificate{
		Subject: pkix.Name{CommonName: "alice"}, NotBefore: t0, NotAfter: t0.Add(memberLife),
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		ExtraExtensions: []pkix.Extension{{Id: oidMemberExtension, Value: bobExt}},
	})

	tests := []struct {
		name    string
		bundle  *TrustBundle
		chain   [][]byte
		at      time.Time
		wantIs  error
		wantMsg string
	}{
		{"other CA", bundle, chainOf(issueTestMemberCert(t, other)), now, ErrUnknownCA,
			`certificate of "alice" is signed by "other-ca", which is not in the trust bundle (trusted: "group-ca")`},
		{"expired", bundle, chainOf(good), t0.Add(memberLife + time.Second), ErrExpired,
			`certificate of "alice" expired at 2026-01-31T00:00:00Z (now 2026-01-31T00:00:01Z)`},
		{"not yet valid", bundle, chainOf(good), t0.Add(-time.Second), ErrNotYetValid,
			`CA "group-ca" that issued certificate of "alice" is not valid before 2026-01-01T00:00:00Z (now 2025-12-31T23:59:59Z)`},
		{"member not yet valid", bundle, chainOf(issueValid(t, ca, t0.Add(time.Hour), t0.Add(2*time.Hour))), t0.Add(time.Minute), ErrNotYetValid,
			`certificate of "alice" is not valid before 2026-01-01T01:00:00Z (now 2026-01-01T00:01:00Z)`},
		{"CA expired", mustBundle(t, shortCA), chainOf(shortMember), t0.Add(49 * time.Hour), ErrExpired,
			`CA "short-ca" that issued certificate of "alice" expired at 2026-01-03T00:00:00Z (now 2026-01-03T01:00:00Z)`},
		{"address mismatch", bundle, chainOf(lying), now, ErrAddressMismatch,
			`certificate of "alice" claims overlay address ` + claim.String() + ` but its key hashes to ` + keyAddr.String()},
		{"tampered signature", bundle, [][]byte{tampered}, now, ErrBadSignature,
			`certificate of "alice" names CA "group-ca" as its issuer, but its signature does not verify`},
		{"tampered name", bundle, [][]byte{renamed}, now, ErrBadSignature, `certificate of "alicf" names CA "group-ca"`},
		{"impostor CA of the same name", bundle, chainOf(impostorMember), now, ErrBadSignature, "issued by another CA of the same name"},
		{"no member extension", bundle, chainOf(noExt), now, ErrNoMemberExtension,
			`certificate of "alice" has no ringvpn member extension`},
		{"malformed member extension", bundle, chainOf(badExt), now, ErrBadMemberExtension,
			`certificate of "alice" has a malformed ringvpn member extension`},
		{"extension for another name", bundle, chainOf(otherName), now, ErrBadMemberExtension,
			`certificate of "alice" has a member extension for "bob"`},
		{"CA certificate as leaf", bundle, chainOf(ca.Cert), now, ErrBadCertificate,
			`certificate of "group-ca" is a CA certificate, not a member certificate`},
		{"server auth only", bundle, chainOf(serverOnly), now, ErrBadCertificate, "not valid for both client and server authentication"},
		{"unknown critical extension", bundle, chainOf(critical), now, ErrBadCertificate, "unknown critical extension 1.2.3.4"},
		{"garbage", bundle, [][]byte{[]byte("not a certificate")}, now, ErrBadCertificate, "cannot parse certificate"},
		{"empty chain", bundle, nil, now, ErrBadCertificate, "no certificate presented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.bundle.VerifyMember(tt.chain, tt.at)
			if err == nil {
				t.Fatalf("VerifyMember = %+v, want an error", m)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func chainOf(c *x509.Certificate) [][]byte { return [][]byte{c.Raw} }

func issueTestMemberCert(t *testing.T, ca *CA) *x509.Certificate {
	_, c := issueTestMember(t, ca, aliceSpec(), "")
	return c
}

// issueValid issues alice from ca with the given validity.
func issueValid(t *testing.T, ca *CA, from, to time.Time) *x509.Certificate {
	t.Helper()
	key, _ := GenerateKey("")
	c, err := ca.Issue(key.Public(), aliceSpec(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTrustBundle_Rotation(t *testing.T) {
	oldCA := newTestCA(t, "group-ca-2025", "")
	newCA := newTestCA(t, "group-ca-2026", KeyKindEd25519)
	_, oldMember := issueTestMember(t, oldCA, aliceSpec(), "")
	bob := aliceSpec()
	bob.Name = "bob"
	_, newMember := issueTestMember(t, newCA, bob, "")

	both := mustBundle(t, oldCA, newCA)
	for _, c := range []*x509.Certificate{oldMember, newMember} {
		m, err := both.VerifyMember(chainOf(c), now)
		if err != nil {
			t.Fatalf("bundle of both CAs: %v", err)
		}
		if m.CAName != c.Issuer.CommonName {
			t.Errorf("CAName = %q, want %q", m.CAName, c.Issuer.CommonName)
		}
	}
	// After the rotation, the old CA is dropped and its members refused.
	_, err := mustBundle(t, newCA).VerifyMember(chainOf(oldMember), now)
	if !errors.Is(err, ErrUnknownCA) || !strings.Contains(err.Error(), `(trusted: "group-ca-2026")`) {
		t.Errorf("new bundle on an old member: %v, want ErrUnknownCA", err)
	}
	// Two CAs of the same name (a rotation that kept the name) are told
	// apart by their signatures.
	same1, same2 := newTestCA(t, "group-ca", ""), newTestCA(t, "group-ca", "")
	b := mustBundle(t, same1, same2)
	for _, ca := range []*CA{same1, same2} {
		if _, err := b.VerifyMember(chainOf(issueTestMemberCert(t, ca)), now); err != nil {
			t.Errorf("same-name rotation: %v", err)
		}
	}
	if got := b.CAs(); len(got) != 2 {
		t.Errorf("CAs() has %d certificates, want 2", len(got))
	}
}

func TestNewTrustBundle_Errors(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	member := issueTestMemberCert(t, ca)
	if _, err := NewTrustBundle(); err == nil || !strings.Contains(err.Error(), "no CA certificate") {
		t.Errorf("empty bundle: %v", err)
	}
	if _, err := NewTrustBundle(ca.Cert, member); err == nil || !strings.Contains(err.Error(), `certificate of "alice" is not a CA certificate`) {
		t.Errorf("bundle with a member certificate: %v", err)
	}
	b, err := NewTrustBundle(ca.Cert, ca.Cert)
	if err != nil || len(b.CAs()) != 1 {
		t.Errorf("duplicate CA: %v, %d CAs; want it dropped", err, len(b.CAs()))
	}
	// CAs returns a copy.
	b.CAs()[0] = nil
	if b.CAs()[0] == nil {
		t.Errorf("CAs() exposes the bundle's slice")
	}
	opts := x509.VerifyOptions{Roots: b.CertPool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := member.Verify(opts); err != nil {
		t.Errorf("member does not verify against CertPool(): %v", err)
	}
}

func TestParseTrustBundle(t *testing.T) {
	a, b := newTestCA(t, "ca-a", ""), newTestCA(t, "ca-b", KeyKindEd25519)
	data := []byte("# ringvpn trust bundle\n")
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Cert.Raw})...)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Cert.Raw})...)
	bundle, err := ParseTrustBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := quotedNames(bundle.CAs()); got != `"ca-a", "ca-b"` {
		t.Errorf("CAs = %s", got)
	}

	keyDER, _ := x509.MarshalPKCS8PrivateKey(a.Key)
	bad := map[string][]byte{
		"empty":       nil,
		"private key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"garbage DER": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	}
	wants := map[string]string{
		"empty":       "no PEM certificate found",
		"private key": "is a private key, not a certificate",
		"garbage DER": "PEM block 1:",
	}
	for name, data := range bad {
		if _, err := ParseTrustBundle(data); err == nil || !strings.Contains(err.Error(), wants[name]) {
			t.Errorf("ParseTrustBundle(%s) = %v, want an error containing %q", name, err, wants[name])
		}
	}
}
