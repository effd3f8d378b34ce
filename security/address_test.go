package security

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"go/build"
	"strings"
	"testing"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAddressOf_KnownAnswer checks AddressOf against addresses computed
// outside Go (SHA-256 over a hand-assembled SubjectPublicKeyInfo) for two
// published keys.
func TestAddressOf_KnownAnswer(t *testing.T) {
	// RFC 8032 section 7.1, test 1.
	edPub := ed25519.PublicKey(mustHex(t, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
	// RFC 6979 appendix A.2.5 (P-256).
	p256, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), mustHex(t, "04"+
		"60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"+
		"7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  any
		want string
	}{
		{"ed25519 RFC 8032", edPub, "06e3fd8fda29bb60ab59557de61edb0aecdb2311"},
		{"p256 RFC 6979", p256, "5a7a78cca4a0f420d9bc62bb669c3c2759e39f72"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AddressOf(tt.pub)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tt.want {
				t.Errorf("AddressOf = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestAddressOf_Properties(t *testing.T) {
	seen := map[Address]bool{}
	for _, kind := range []string{KeyKindECDSAP256, KeyKindEd25519} {
		for range 20 {
			key, err := GenerateKey(kind)
			if err != nil {
				t.Fatal(err)
			}
			a, err := AddressOf(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			// Deterministic.
			if b, _ := AddressOf(key.Public()); a != b {
				t.Fatalf("AddressOf not deterministic: %s then %s", a, b)
			}
			// The prefix of SHA-256 over the SPKI.
			spki, _ := x509.MarshalPKIXPublicKey(key.Public())
			sum := sha256.Sum256(spki)
			if string(a[:]) != string(sum[:20]) {
				t.Fatalf("AddressOf = %s, want the first 20 bytes of %x", a, sum)
			}
			// Distinct keys, distinct addresses.
			if seen[a] {
				t.Fatalf("address %s seen twice", a)
			}
			seen[a] = true
		}
	}
}

func TestAddressOf_Errors(t *testing.T) {
	key, _ := GenerateKey(KeyKindEd25519)
	for name, pub := range map[string]any{"private key": key, "nil": nil, "string": "key"} {
		if _, err := AddressOf(pub); err == nil {
			t.Errorf("AddressOf(%s) succeeded, want an error", name)
		}
	}
}

func TestParseAddress(t *testing.T) {
	const s = "0123456789abcdef0123456789abcdef01234567"
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != s {
		t.Errorf("String() = %s, want %s", a, s)
	}
	if b, err := ParseAddress(strings.ToUpper(s)); err != nil || b != a {
		t.Errorf("ParseAddress(upper case) = %s, %v; want %s", b, err, a)
	}
	bad := map[string]string{
		"":          "want 40 hex digits, got 0 characters",
		s[:39]:      "got 39 characters",
		s + "0":     "got 41 characters",
		"0x" + s:    "got 42 characters",
		"g" + s[1:]: "invalid byte",
	}
	for in, want := range bad {
		if _, err := ParseAddress(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseAddress(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestAddress_Text(t *testing.T) {
	a := Address{0xab, 19: 0x01}
	text, err := a.MarshalText()
	if err != nil || string(text) != a.String() {
		t.Fatalf("MarshalText = %q, %v; want %q", text, err, a)
	}
	var b Address
	if err := b.UnmarshalText(text); err != nil || b != a {
		t.Fatalf("UnmarshalText = %s, %v; want %s", b, err, a)
	}
	if err := b.UnmarshalText(nil); err != nil || !b.IsZero() {
		t.Fatalf("UnmarshalText(empty) = %s, %v; want the zero address", b, err)
	}
	if err := b.UnmarshalText([]byte("zz")); err == nil {
		t.Fatal("UnmarshalText(zz) succeeded")
	}

	// Through encoding/json, as a value and as a map key.
	in := struct {
		A Address
		M map[Address]int
	}{a, map[Address]int{a: 1}}
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"A":"ab00000000000000000000000000000000000001","M":{"ab00000000000000000000000000000000000001":1}}`
	if string(js) != want {
		t.Errorf("json = %s, want %s", js, want)
	}
	out := in
	out.A, out.M = Address{}, nil
	if err := json.Unmarshal(js, &out); err != nil || out.A != a || out.M[a] != 1 {
		t.Errorf("json round trip = %+v, %v", out, err)
	}
}

func TestAddress_Compare(t *testing.T) {
	lo, hi := Address{19: 1}, Address{0: 1}
	if lo.Compare(hi) != -1 || hi.Compare(lo) != 1 || lo.Compare(lo) != 0 {
		t.Errorf("Compare is not big-endian unsigned order")
	}
	if !(Address{}).IsZero() || lo.IsZero() {
		t.Errorf("IsZero wrong")
	}
}

// TestImports_Leaf checks that package security imports nothing else of
// ringvpn (DESIGN.md: transport, security and tap are leaves).
func TestImports_Leaf(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, "github.com/ringvpn/ringvpn/") && !strings.HasPrefix(imp, "github.com/ringvpn/ringvpn/security/") {
			t.Errorf("package security imports %s; it must stay a leaf", imp)
		}
	}
}
