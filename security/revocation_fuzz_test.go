package security

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"testing"
	"time"
)

// revocationSentinels are the errors Revocations.Add and AddPEM may wrap.
var revocationSentinels = []error{ErrBadRevocationList, ErrUnknownCA, ErrBadSignature, ErrStaleRevocationList}

func wrapsRevocationSentinel(err error) bool {
	for _, s := range revocationSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzRevocations_Add_NoPanic feeds Add what a member may receive from
// the network: anything. It must not panic, every error must wrap a
// sentinel, and a list taken must be held as given, signed by the CA,
// and taken only once.
func FuzzRevocations_Add_NoPanic(f *testing.F) {
	ca, err := LoadCA(fuzzCACert, fuzzCAKey)
	if err != nil {
		f.Fatalf("%v (regenerate with: go test -run TestFuzzSeeds ./security/ -update-fuzz-seeds)", err)
	}
	bundle := mustBundle(f, ca)
	for _, der := range revocationSeeds(f, ca) {
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewRevocations(bundle)
		changed, err := r.Add(data)
		if err != nil {
			if changed || !wrapsRevocationSentinel(err) {
				t.Fatalf("Add = %v, %v: an error must wrap a sentinel and change nothing", changed, err)
			}
		} else {
			lists := r.Lists()
			if !changed || len(lists) != 1 || string(lists[0].Raw) != string(data) {
				t.Fatalf("Add took the list but holds %d lists", len(lists))
			}
			if err := lists[0].CheckSignatureFrom(ca.Cert); err != nil {
				t.Fatalf("took a list that does not verify: %v", err)
			}
			if again, err := r.Add(data); again || err != nil {
				t.Fatalf("the same list again: %v, %v", again, err)
			}
			for _, e := range lists[0].RevokedCertificateEntries {
				if !r.Revoked(&x509.Certificate{RawIssuer: ca.Cert.RawSubject, SerialNumber: e.SerialNumber}) {
					t.Fatalf("serial %x is listed but not revoked", e.SerialNumber)
				}
			}
		}
		if _, err := NewRevocations(bundle).AddPEM(data); err != nil && !wrapsRevocationSentinel(err) {
			t.Fatalf("AddPEM error wraps no sentinel: %v", err)
		}
	})
}

// revocationSeeds returns DER lists for FuzzRevocations_Add_NoPanic: good
// lists of ca (empty, with entries and reasons, a successor), a list of
// another CA, and lists with shapes that are refused.
func revocationSeeds(tb testing.TB, ca *CA) [][]byte {
	entry := func(serial int64, reason int) x509.RevocationListEntry {
		return x509.RevocationListEntry{SerialNumber: big.NewInt(serial), RevocationTime: t0, ReasonCode: reason}
	}
	first, err := ca.Revoke(nil, nil, t0, t0.Add(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	second, err := ca.Revoke(first, []x509.RevocationListEntry{entry(1, 0), entry(0x7fffffff, 1), entry(1<<62, 9)}, t0, t0.Add(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	seeds := [][]byte{first.Raw, second.Raw}
	other, err := NewCA("other-ca", t0, t0.Add(caLife), KeyKindEd25519)
	if err != nil {
		tb.Fatal(err)
	}
	foreign, err := other.Revoke(nil, []x509.RevocationListEntry{entry(2, 1)}, t0, t0.Add(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	seeds = append(seeds, foreign.Raw)
	delta := signCRL(tb, ca.Cert, ca, &x509.RevocationList{Number: big.NewInt(3), ThisUpdate: t0, NextUpdate: t0.Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: oidDeltaCRLIndicator, Critical: true, Value: []byte{2, 1, 2}}}})
	seeds = append(seeds, delta)
	return append(seeds, pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: second.Raw}))
}

// TestFuzzSeeds_Revocations checks that the stored seeds of
// FuzzRevocations_Add_NoPanic are current: the good ones are taken.
func TestFuzzSeeds_Revocations(t *testing.T) {
	ca, err := LoadCA(fuzzCACert, fuzzCAKey)
	if err != nil {
		t.Fatalf("%v (regenerate with -update-fuzz-seeds)", err)
	}
	bundle := mustBundle(t, ca)
	var taken int
	for name, data := range readSeedDir(t, filepath.Join("testdata", "fuzz", "FuzzRevocations_Add_NoPanic")) {
		if _, err := NewRevocations(bundle).Add(data); err == nil {
			taken++
		} else if !wrapsRevocationSentinel(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if taken < 2 {
		t.Errorf("%d seeds are taken, want at least 2 (regenerate with -update-fuzz-seeds)", taken)
	}
}
