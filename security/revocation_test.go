package security

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// revoke signs ca's next list after prev, adding the serials of certs.
func revoke(t testing.TB, ca *CA, prev *x509.RevocationList, reason int, certs ...*x509.Certificate) *x509.RevocationList {
	t.Helper()
	var add []x509.RevocationListEntry
	for _, c := range certs {
		add = append(add, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now, ReasonCode: reason})
	}
	crl, err := ca.Revoke(prev, add, now, now.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// signCRL signs tmpl with ca's key as issuer cert (which may differ from
// ca.Cert), for lists Revoke does not make.
func signCRL(t testing.TB, issuer *x509.Certificate, ca *CA, tmpl *x509.RevocationList) []byte {
	t.Helper()
	if tmpl.Number == nil {
		tmpl.Number = big.NewInt(1)
	}
	if tmpl.ThisUpdate.IsZero() {
		tmpl.ThisUpdate, tmpl.NextUpdate = now, now.Add(time.Hour)
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustAdd(t *testing.T, r *Revocations, der []byte) {
	t.Helper()
	changed, err := r.Add(der)
	if err != nil || !changed {
		t.Fatalf("Add = %v, %v; want true, nil", changed, err)
	}
}

func TestRevocations_Add(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	_, alice := issueTestMember(t, ca, aliceSpec(), "")
	bob := issueTestMemberCert(t, ca)
	carol := issueTestMemberCert(t, ca)
	r := NewRevocations(mustBundle(t, ca))

	if r.Revoked(alice) || r.Check(alice) != nil || len(r.Lists()) != 0 {
		t.Fatal("an empty set revokes")
	}
	first := revoke(t, ca, nil, 1, alice)
	mustAdd(t, r, first.Raw)
	if !r.Revoked(alice) || r.Revoked(bob) {
		t.Fatalf("after list 1: alice revoked %v, bob revoked %v; want true, false", r.Revoked(alice), r.Revoked(bob))
	}
	// The same list again changes nothing and is no error.
	if changed, err := r.Add(first.Raw); changed || err != nil {
		t.Fatalf("same list again: %v, %v; want false, nil", changed, err)
	}

	second := revoke(t, ca, first, 0, bob)
	third := revoke(t, ca, second, 0, carol)
	mustAdd(t, r, third.Raw)
	// An older list is ignored: replaying it can't undo a revocation.
	changed, err := r.Add(second.Raw)
	if changed || !errors.Is(err, ErrStaleRevocationList) ||
		!strings.Contains(err.Error(), `revocation list number 2 of CA "group-ca" is older than the one held (number 2 < 3); ignored`) {
		t.Fatalf("older list: %v, %v", changed, err)
	}
	changed, err = r.Add(first.Raw)
	if changed || !errors.Is(err, ErrStaleRevocationList) || !strings.Contains(err.Error(), "(number 1 < 3)") {
		t.Fatalf("oldest list: %v, %v", changed, err)
	}
	for _, c := range []*x509.Certificate{alice, bob, carol} {
		if !r.Revoked(c) {
			t.Errorf("serial %x not revoked after list 3", c.SerialNumber)
		}
	}
	if got := r.Lists(); len(got) != 1 || got[0].Number.Int64() != 3 {
		t.Fatalf("Lists = %v, want list 3 only", got)
	}
	if msg := r.Check(alice); !errors.Is(msg, ErrRevoked) || !strings.Contains(msg.Error(),
		`certificate of "alice" (serial `+alice.SerialNumber.Text(16)+`) was revoked by CA "group-ca" at 2026-01-02T00:00:00Z (key-compromise; revocation list number 3)`) {
		t.Errorf("Check = %v", msg)
	}
}

func TestRevocations_AddRefusesBadLists(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	other := newTestCA(t, "other-ca", "")
	impostor := newTestCA(t, "group-ca", "")
	alice := issueTestMemberCert(t, ca)
	good := revoke(t, ca, nil, 0, alice)

	// The trusted CA's certificate without cRLSign (crafted: the same name
	// and key), and a list signed by its key.
	noCRLSign := *ca.Cert
	noCRLSign.KeyUsage = x509.KeyUsageCertSign
	restricted, err := NewTrustBundle(&noCRLSign)
	if err != nil {
		t.Fatal(err)
	}

	tampered := append([]byte(nil), good.Raw...)
	tampered[len(tampered)-3] ^= 1
	deltaExt := pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: []byte{2, 1, 1}}
	unknownCritical := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 9}, Critical: true, Value: []byte{5, 0}}

	for _, tc := range []struct {
		name   string
		bundle *TrustBundle
		der    []byte
		want   error
		msg    string
	}{
		{"garbage", nil, []byte("not a list"), ErrBadRevocationList, "cannot parse revocation list"},
		{"empty", nil, nil, ErrBadRevocationList, "cannot parse revocation list"},
		{"trailing data", nil, append(append([]byte(nil), good.Raw...), 0, 0), ErrBadRevocationList, "followed by 2 bytes of trailing data"},
		{"foreign CA", nil, revoke(t, other, nil, 0, alice).Raw, ErrUnknownCA,
			`revocation list number 1 of CA "other-ca" is not signed by any CA in the trust bundle (trusted: "group-ca")`},
		{"impostor of the same name", nil, revoke(t, impostor, nil, 0, alice).Raw, ErrBadSignature,
			`names CA "group-ca" as its issuer, but its signature does not verify with that CA's key`},
		{"tampered", nil, tampered, ErrBadSignature, "does not verify"},
		{"CA may not sign lists", restricted, good.Raw, ErrBadSignature, `CA "group-ca" may not sign revocation lists (no cRLSign key usage)`},
		{"delta list", nil, signCRL(t, ca.Cert, ca, &x509.RevocationList{ExtraExtensions: []pkix.Extension{deltaExt}}), ErrBadRevocationList,
			"is a delta list; ringvpn takes only complete lists"},
		{"unknown critical extension", nil, signCRL(t, ca.Cert, ca, &x509.RevocationList{ExtraExtensions: []pkix.Extension{unknownCritical}}), ErrBadRevocationList,
			"has a critical extension 1.3.6.1.4.1.32473.9"},
		{"entry with a critical extension", nil, signCRL(t, ca.Cert, ca, &x509.RevocationList{RevokedCertificateEntries: []x509.RevocationListEntry{{
			SerialNumber: big.NewInt(7), RevocationTime: now, ExtraExtensions: []pkix.Extension{unknownCritical}}}}), ErrBadRevocationList,
			"has an entry (serial 7) with a critical extension"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.bundle
			if b == nil {
				b = mustBundle(t, ca)
			}
			r := NewRevocations(b)
			changed, err := r.Add(tc.der)
			if changed || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Add = %v, %v; want false and %v saying %q", changed, err, tc.want, tc.msg)
			}
			if len(r.Lists()) != 0 || r.Revoked(alice) {
				t.Fatal("a refused list was taken")
			}
		})
	}
}

// Two lists with the same number (two operators revoking at once) are
// ordered the same way everywhere, whatever order they arrive in.
func TestRevocations_SameNumberConverges(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	base := revoke(t, ca, nil, 0, issueTestMemberCert(t, ca))
	a := revoke(t, ca, base, 0, issueTestMemberCert(t, ca))
	b := revoke(t, ca, base, 0, issueTestMemberCert(t, ca))
	held := func(first, second *x509.RevocationList) []byte {
		r := NewRevocations(mustBundle(t, ca))
		mustAdd(t, r, first.Raw)
		_, err := r.Add(second.Raw)
		if err != nil && !errors.Is(err, ErrStaleRevocationList) {
			t.Fatal(err)
		}
		return r.Lists()[0].Raw
	}
	if x, y := held(a, b), held(b, a); string(x) != string(y) {
		t.Fatal("members that saw the two lists in different orders hold different lists")
	}
}

func TestRevocations_SeveralCAs(t *testing.T) {
	oldCA, newCA := newTestCA(t, "group-ca-2025", ""), newTestCA(t, "group-ca-2026", KeyKindEd25519)
	oldMember, newMember := issueTestMemberCert(t, oldCA), issueTestMemberCert(t, newCA)
	r := NewRevocations(mustBundle(t, oldCA, newCA))
	var calls int
	stop := r.OnChange(func() { calls++ })

	mustAdd(t, r, revoke(t, oldCA, nil, 0, oldMember).Raw)
	// A list of the new CA naming the old member's serial does not revoke
	// it: serials count per issuer.
	mustAdd(t, r, revoke(t, newCA, nil, 0, oldMember).Raw)
	if !r.Revoked(oldMember) || r.Revoked(newMember) || len(r.Lists()) != 2 {
		t.Fatalf("old member revoked %v, new member revoked %v, %d lists", r.Revoked(oldMember), r.Revoked(newMember), len(r.Lists()))
	}
	if calls != 2 {
		t.Fatalf("OnChange called %d times, want 2", calls)
	}
	// The rotation ends: the old CA's list goes with it.
	r.SetTrustBundle(mustBundle(t, newCA))
	if r.Revoked(oldMember) || len(r.Lists()) != 1 || calls != 3 {
		t.Fatalf("after dropping the old CA: revoked %v, %d lists, %d calls", r.Revoked(oldMember), len(r.Lists()), calls)
	}
	// The new CA's list is still held and compared.
	stop()
	held := r.Lists()[0]
	mustAdd(t, r, revoke(t, newCA, held, 0, newMember).Raw)
	if !r.Revoked(newMember) || calls != 3 {
		t.Fatalf("after stop: revoked %v, %d calls", r.Revoked(newMember), calls)
	}
	if _, err := r.Add(held.Raw); !errors.Is(err, ErrStaleRevocationList) {
		t.Fatalf("the new CA's list 1 after its list 2: %v", err)
	}
}

// TestRevocations_Held: Held pairs each list with the CA that signed it,
// and TrustBundle is the bundle set last.
func TestRevocations_Held(t *testing.T) {
	a, b := newTestCA(t, "group-ca", ""), newTestCA(t, "group-ca", KeyKindEd25519) // one name, two keys
	bundle := mustBundle(t, a, b)
	r := NewRevocations(bundle)
	if r.TrustBundle() != bundle || len(r.Held()) != 0 {
		t.Fatalf("new: bundle %p, %d held", r.TrustBundle(), len(r.Held()))
	}
	mustAdd(t, r, revoke(t, b, nil, 0).Raw)
	mustAdd(t, r, revoke(t, a, nil, 0).Raw)
	held := r.Held()
	if len(held) != 2 || !held[0].CA.Equal(b.Cert) || !held[1].CA.Equal(a.Cert) || held[0].List != r.Lists()[0] {
		t.Fatalf("held %+v", held)
	}
	other := mustBundle(t, a)
	r.SetTrustBundle(other)
	if r.TrustBundle() != other || len(r.Held()) != 1 || !r.Held()[0].CA.Equal(a.Cert) {
		t.Fatalf("after SetTrustBundle: %+v", r.Held())
	}
	var nilRevs *Revocations
	if nilRevs.Held() != nil {
		t.Fatal("a nil Revocations holds lists")
	}
}

func TestRevocations_Stale(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	alice := issueTestMemberCert(t, ca)
	r := NewRevocations(mustBundle(t, ca))
	crl, err := ca.Revoke(nil, []x509.RevocationListEntry{{SerialNumber: alice.SerialNumber, RevocationTime: t0}}, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Past its next update, a list is still taken and stays in force.
	mustAdd(t, r, crl.Raw)
	if !r.Revoked(alice) {
		t.Fatal("a stale list was not applied")
	}
	if got := r.Stale(t0.Add(2 * time.Hour)); len(got) != 1 {
		t.Fatalf("Stale = %d lists, want 1", len(got))
	}
	if got := r.Stale(t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("Stale at nextUpdate = %d lists, want 0", len(got))
	}
}

func TestRevocations_AddPEM(t *testing.T) {
	caA, caB := newTestCA(t, "ca-a", ""), newTestCA(t, "ca-b", "")
	a, b := issueTestMemberCert(t, caA), issueTestMemberCert(t, caB)
	listA, listB := revoke(t, caA, nil, 0, a), revoke(t, caB, nil, 0, b)
	data := append(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: listA.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: listB.Raw})...)

	// Only ca-a is trusted: its list is taken, the other is named.
	r := NewRevocations(mustBundle(t, caA))
	changed, err := r.AddPEM(data)
	if !changed || !r.Revoked(a) || !errors.Is(err, ErrUnknownCA) || !strings.Contains(err.Error(), `PEM block 2: revocation list number 1 of CA "ca-b" is not signed`) {
		t.Fatalf("AddPEM = %v, %v", changed, err)
	}
	r = NewRevocations(mustBundle(t, caA, caB))
	if changed, err := r.AddPEM(data); !changed || err != nil || !r.Revoked(b) {
		t.Fatalf("AddPEM with both CAs = %v, %v", changed, err)
	}
	// DER works too.
	r = NewRevocations(mustBundle(t, caA))
	if changed, err := r.AddPEM(listA.Raw); !changed || err != nil {
		t.Fatalf("AddPEM(DER) = %v, %v", changed, err)
	}
	for _, tc := range []struct{ name, data, want string }{
		{"certificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw})), "PEM block 1 is a certificate, not a revocation list"},
		{"key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), "is a private key, not a revocation list"},
		{"text", "hello", `no revocation list found (want PEM "X509 CRL" blocks`},
	} {
		if _, err := r.AddPEM([]byte(tc.data)); !errors.Is(err, ErrBadRevocationList) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestCA_Revoke(t *testing.T) {
	ca := newTestCA(t, "group-ca", KeyKindEd25519)
	alice, bob := issueTestMemberCert(t, ca), issueTestMemberCert(t, ca)
	first := revoke(t, ca, nil, 1, alice)
	if first.Number.Int64() != 1 || len(first.RevokedCertificateEntries) != 1 || first.RevokedCertificateEntries[0].ReasonCode != 1 {
		t.Fatalf("first list: number %v, %d entries", first.Number, len(first.RevokedCertificateEntries))
	}
	if err := first.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	// The next list keeps alice's entry (and its reason) and adds bob;
	// revoking alice again does not duplicate her.
	second := revoke(t, ca, first, 4, alice, bob)
	entries := second.RevokedCertificateEntries
	if second.Number.Int64() != 2 || len(entries) != 2 {
		t.Fatalf("second list: number %v, %d entries", second.Number, len(entries))
	}
	if entries[0].SerialNumber.Cmp(alice.SerialNumber) != 0 || entries[0].ReasonCode != 1 ||
		entries[1].SerialNumber.Cmp(bob.SerialNumber) != 0 || entries[1].ReasonCode != 4 {
		t.Fatalf("entries %+v", entries)
	}
	// A list of another CA can't be extended.
	other := newTestCA(t, "other-ca", "")
	if _, err := other.Revoke(second, nil, now, now.Add(time.Hour)); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), `is not signed by CA "other-ca"`) {
		t.Fatalf("extending another CA's list: %v", err)
	}
	for _, tc := range []struct {
		name string
		add  []x509.RevocationListEntry
		next time.Time
		want string
	}{
		{"no time", []x509.RevocationListEntry{{SerialNumber: big.NewInt(1)}}, now.Add(time.Hour), "has no revocation time"},
		{"no serial", []x509.RevocationListEntry{{RevocationTime: now}}, now.Add(time.Hour), "is not a positive number"},
		{"bad reason", []x509.RevocationListEntry{{SerialNumber: big.NewInt(1), RevocationTime: now, ReasonCode: 7}}, now.Add(time.Hour), "7 is not an RFC 5280 reason code"},
		{"next before this", nil, now, "is not after this update"},
	} {
		if _, err := ca.Revoke(nil, tc.add, now, tc.next); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseReason(t *testing.T) {
	for _, name := range RevocationReasons {
		code, err := ParseReason(name)
		if err != nil || ReasonName(code) != name {
			t.Errorf("ParseReason(%q) = %d, %v", name, code, err)
		}
	}
	if _, err := ParseReason("certificate-hold"); err == nil || !strings.Contains(err.Error(), "use one of unspecified, key-compromise") {
		t.Errorf("certificate-hold: %v", err)
	}
	if ReasonName(7) != "reason 7" || ReasonName(-1) != "reason -1" {
		t.Error("unknown codes are not shown as numbers")
	}
}

func TestRevocationListFiles(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	crl := revoke(t, ca, nil, 0, issueTestMemberCert(t, ca))
	path := filepath.Join(t.TempDir(), "group.crl")
	if err := WriteRevocationList(path, crl); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRevocationLists(path)
	if err != nil || len(got) != 1 || string(got[0].Raw) != string(crl.Raw) {
		t.Fatalf("ReadRevocationLists = %v, %v", got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if _, err := ReadRevocationLists(filepath.Join(t.TempDir(), "none.crl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// Revoked and Check run in every handshake while lists change.
func TestRevocations_ConcurrentUse(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	certs := make([]*x509.Certificate, 8)
	for i := range certs {
		certs[i] = issueTestMemberCert(t, ca)
	}
	lists := []*x509.RevocationList{revoke(t, ca, nil, 0, certs[0])}
	for i := 1; i < len(certs); i++ {
		lists = append(lists, revoke(t, ca, lists[i-1], 0, certs[i]))
	}
	r := NewRevocations(mustBundle(t, ca))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range lists {
				r.Add(lists[(i+j)%len(lists)].Raw)
			}
		})
		wg.Go(func() {
			for range 200 {
				for _, c := range certs {
					r.Check(c)
				}
				_ = r.Lists()
			}
		})
	}
	wg.Wait()
	for _, c := range certs {
		if !r.Revoked(c) {
			t.Fatalf("serial %x not revoked once the newest list arrived", c.SerialNumber)
		}
	}
}

func TestRevocations_Revoked_NoAllocs(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	alice, bob := issueTestMemberCert(t, ca), issueTestMemberCert(t, ca)
	r := NewRevocations(mustBundle(t, ca))
	mustAdd(t, r, revoke(t, ca, nil, 0, alice).Raw)
	if n := testing.AllocsPerRun(100, func() {
		if !r.Revoked(alice) || r.Revoked(bob) || r.Check(bob) != nil {
			t.Fatal("wrong answer")
		}
	}); n != 0 {
		t.Fatalf("Revoked allocates %v times", n)
	}
}

func TestSerialKey(t *testing.T) {
	var buf [serialKeyBuf]byte
	keys := map[string]string{}
	huge := new(big.Int).Lsh(big.NewInt(1), 8*serialKeyBuf+3)
	for _, n := range []*big.Int{big.NewInt(1), big.NewInt(256), big.NewInt(0), big.NewInt(-1), big.NewInt(-256), huge} {
		k := string(serialKey(n, &buf))
		if prev, dup := keys[k]; dup {
			t.Errorf("serials %s and %s share a key", prev, n)
		}
		keys[k] = n.String()
	}
}
