package security

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz and the fuzz CA in testdata")

// The fuzz CA is stored in testdata so that the stored seeds of
// FuzzVerifyMember verify fully and reach the extension and address checks.
const (
	fuzzCACert = "testdata/fuzz-ca.crt"
	fuzzCAKey  = "testdata/fuzz-ca.key"
)

// fuzzNow lies inside the validity of the fuzz CA and its seed members.
var fuzzNow = t0.Add(24 * time.Hour)

// sentinels lists every sentinel error VerifyMember and ParseMember may
// wrap; any error they return must wrap one of them.
var sentinels = []error{
	ErrUnknownCA, ErrBadSignature, ErrExpired, ErrNotYetValid, ErrAddressMismatch,
	ErrNoMemberExtension, ErrBadMemberExtension, ErrBadCertificate,
}

func wrapsSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

var prefixComparer = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func extSeedSpecs() []MemberSpec {
	p := netip.MustParsePrefix
	return []MemberSpec{
		aliceSpec(),
		{Name: "relay-1"},
		{Name: "router.eu-west_1", IPs: []netip.Prefix{p("10.0.0.1/31"), p("fd00::1/128")}, Subnets: []netip.Prefix{p("0.0.0.0/0"), p("2001:db8::/32")}},
		{Name: "g", Groups: []string{"a", "b", "c", "d"}},
	}
}

func FuzzMemberExtension_Unmarshal_NoPanic(f *testing.F) {
	for i, spec := range extSeedSpecs() {
		der, err := marshalMemberExt(Address{byte(i), 19: 0xff}, spec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x00})

	f.Fuzz(func(t *testing.T, data []byte) {
		addr, spec, err := unmarshalMemberExt(data)
		if err != nil {
			return
		}
		// Whatever decodes is valid, re-encodes, and decodes to the same.
		if err := spec.Validate(); err != nil {
			t.Fatalf("decoded an invalid spec: %v", err)
		}
		der, err := marshalMemberExt(addr, spec)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		addr2, spec2, err := unmarshalMemberExt(der)
		if err != nil {
			t.Fatalf("decode of the re-encoding %x: %v", der, err)
		}
		if addr2 != addr {
			t.Fatalf("address %s became %s", addr, addr2)
		}
		if diff := cmp.Diff(spec, spec2, prefixComparer); diff != "" {
			t.Fatalf("spec changed through re-encoding (-first +second):\n%s", diff)
		}
		// The encoding is canonical: encoding again gives the same bytes.
		if der2, _ := marshalMemberExt(addr2, spec2); !bytes.Equal(der, der2) {
			t.Fatalf("encoding is not stable: %x then %x", der, der2)
		}
	})
}

func FuzzVerifyMember_NoPanic(f *testing.F) {
	ca, err := LoadCA(fuzzCACert, fuzzCAKey)
	if err != nil {
		f.Fatalf("%v (regenerate with: go test -run TestFuzzSeeds ./security/ -update-fuzz-seeds)", err)
	}
	bundle := mustBundle(f, ca)
	for _, der := range verifySeeds(f, ca) {
		f.Add(der)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := bundle.VerifyMember([][]byte{data}, fuzzNow)
		if err != nil {
			if m != nil {
				t.Fatalf("VerifyMember returned a member and an error: %v", err)
			}
			if !wrapsSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
		} else {
			if want, _ := AddressOf(m.Cert.PublicKey); m.Address != want {
				t.Fatalf("verified member has address %s, its key hashes to %s", m.Address, want)
			}
			if m.CAName != ca.Cert.Subject.CommonName {
				t.Fatalf("verified member's CA is %q", m.CAName)
			}
		}
		// ParseMember sees certificates whose signatures do not verify.
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return
		}
		if _, err := ParseMember(c); err != nil && !wrapsSentinel(err) {
			t.Fatalf("ParseMember error wraps no sentinel: %v", err)
		}
	})
}

// verifySeeds returns DER certificates for FuzzVerifyMember: valid members
// of ca of both key kinds, ca itself, a certificate without the member
// extension, and a member of another CA.
func verifySeeds(tb testing.TB, ca *CA) [][]byte {
	var seeds [][]byte
	for i, spec := range extSeedSpecs() {
		kind := KeyKindECDSAP256
		if i%2 == 1 {
			kind = KeyKindEd25519
		}
		key, err := GenerateKey(kind)
		if err != nil {
			tb.Fatal(err)
		}
		c, err := ca.Issue(key.Public(), spec, t0, t0.Add(memberLife))
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, c.Raw)
	}
	key, _ := GenerateKey("")
	lying, err := ca.issue(key.Public(), aliceSpec(), t0, t0.Add(memberLife), &Address{1})
	if err != nil {
		tb.Fatal(err)
	}
	seeds = append(seeds, lying.Raw, ca.Cert.Raw)
	other, err := NewCA("other-ca", t0, t0.Add(caLife), KeyKindEd25519)
	if err != nil {
		tb.Fatal(err)
	}
	_, c := issueTestMember(tb, other, aliceSpec(), "")
	seeds = append(seeds, c.Raw)
	tmpl := &x509.Certificate{SerialNumber: randomSerialOrOne(), Subject: pkix.Name{CommonName: "plain"}, NotBefore: t0, NotAfter: t0.Add(memberLife)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return append(seeds, der)
}

func randomSerialOrOne() *big.Int {
	n, err := randomSerial()
	if err != nil {
		return big.NewInt(1)
	}
	return n
}

// TestFuzzSeeds checks that the stored fuzz CA and seeds are current (the
// valid seeds still verify), and rewrites them with -update-fuzz-seeds.
func TestFuzzSeeds(t *testing.T) {
	if *updateFuzzSeeds {
		writeFuzzSeeds(t)
	}
	ca, err := LoadCA(fuzzCACert, fuzzCAKey)
	if err != nil {
		t.Fatalf("%v (regenerate with -update-fuzz-seeds)", err)
	}
	bundle := mustBundle(t, ca)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyMember_NoPanic")
	seeds := readSeedDir(t, dir)
	var valid int
	for name, data := range seeds {
		if _, err := bundle.VerifyMember([][]byte{data}, fuzzNow); err == nil {
			valid++
		} else if !wrapsSentinel(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if valid < len(extSeedSpecs()) {
		t.Errorf("%d of the %d seeds in %s verify, want at least %d (regenerate with -update-fuzz-seeds)", valid, len(seeds), dir, len(extSeedSpecs()))
	}
	extDir := filepath.Join("testdata", "fuzz", "FuzzMemberExtension_Unmarshal_NoPanic")
	var decoded int
	for _, data := range readSeedDir(t, extDir) {
		if _, _, err := unmarshalMemberExt(data); err == nil {
			decoded++
		}
	}
	if decoded < len(extSeedSpecs()) {
		t.Errorf("%d seeds in %s decode, want at least %d (regenerate with -update-fuzz-seeds)", decoded, extDir, len(extSeedSpecs()))
	}
}

func writeFuzzSeeds(t *testing.T) {
	ca, err := NewCA("fuzz-ca", t0, t0.Add(10*caLife), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteCertificate(fuzzCACert, ca.Cert, true); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(fuzzCAKey, ca.Key, true); err != nil {
		t.Fatal(err)
	}
	var ext [][]byte
	for i, spec := range extSeedSpecs() {
		der, err := marshalMemberExt(Address{byte(i), 19: 0xff}, spec)
		if err != nil {
			t.Fatal(err)
		}
		ext = append(ext, der)
	}
	ext = append(ext, []byte{0x30, 0x00})
	writeSeedDir(t, filepath.Join("testdata", "fuzz", "FuzzMemberExtension_Unmarshal_NoPanic"), ext)
	writeSeedDir(t, filepath.Join("testdata", "fuzz", "FuzzVerifyMember_NoPanic"), verifySeeds(t, ca))
	writeSeedDir(t, filepath.Join("testdata", "fuzz", "FuzzRevocations_Add_NoPanic"), revocationSeeds(t, ca))
}

func writeSeedDir(t *testing.T, dir string, seeds [][]byte) {
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, data := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readSeedDir reads a corpus directory of single-[]byte entries.
func readSeedDir(t *testing.T, dir string) map[string][]byte {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("%v (regenerate with -update-fuzz-seeds)", err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		body, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSpace(strings.TrimPrefix(string(body), "go test fuzz v1\n"))
		q, ok := strings.CutPrefix(line, "[]byte(")
		q, ok2 := strings.CutSuffix(q, ")")
		s, err := strconv.Unquote(q)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s/%s: not a []byte corpus entry", dir, e.Name())
		}
		out[e.Name()] = []byte(s)
	}
	return out
}
