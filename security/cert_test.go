package security

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// t0 is the start of every test CA's validity; tests pick "now" relative to
// it, so they do not depend on the clock.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	caLife     = 365 * 24 * time.Hour
	memberLife = 30 * 24 * time.Hour
)

// newTestCA returns a CA named name, valid from t0 for a year.
func newTestCA(t testing.TB, name, kind string) *CA {
	t.Helper()
	ca, err := NewCA(name, t0, t0.Add(caLife), kind)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func aliceSpec() MemberSpec {
	return MemberSpec{
		Name:    "alice",
		IPs:     []netip.Prefix{netip.MustParsePrefix("10.20.0.5/16"), netip.MustParsePrefix("fd00:20::5/64")},
		Groups:  []string{"web", "db-admins"},
		Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24")},
	}
}

// issueTestMember issues spec from ca with a new key of kind, valid from
// t0 for memberLife.
func issueTestMember(t testing.TB, ca *CA, spec MemberSpec, kind string) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	key, err := GenerateKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(key.Public(), spec, t0, t0.Add(memberLife))
	if err != nil {
		t.Fatalf("Issue(%q): %v", spec.Name, err)
	}
	return key, cert
}

func TestMemberSpec_Validate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		mutate  func(*MemberSpec)
		wantErr string // substring; "" means valid
	}{
		{"valid", func(*MemberSpec) {}, ""},
		{"no IPs, groups or subnets", func(s *MemberSpec) { s.IPs, s.Groups, s.Subnets = nil, nil, nil }, ""},
		{"IPv4 /32 and /31", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("10.0.0.0/31"), p("10.1.0.0/32")} }, ""},
		{"IPv6 /128", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("fd00::/128")} }, ""},
		{"default route subnet", func(s *MemberSpec) { s.Subnets = []netip.Prefix{p("0.0.0.0/0"), p("::/0")} }, ""},
		{"name with dot dash underscore", func(s *MemberSpec) { s.Name = "web-1.eu_west" }, ""},
		{"64-byte name", func(s *MemberSpec) { s.Name = strings.Repeat("a", 64) }, ""},
		{"pool", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("10.20.0.0/16")} }, ""},
		{"IPv6 pool", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("fd00::/64")} }, ""},
		{"pool and fixed IP", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("10.20.0.0/16"), p("10.30.0.5/16")} }, ""},

		{"empty name", func(s *MemberSpec) { s.Name = "" }, "member name is empty"},
		{"long name", func(s *MemberSpec) { s.Name = strings.Repeat("a", 65) }, "is 65 bytes long, at most 64"},
		{"space in name", func(s *MemberSpec) { s.Name = "al ice" }, `member name "al ice" has ' ' at byte 2; use only letters, digits`},
		{"leading dash", func(s *MemberSpec) { s.Name = "-alice" }, "must start with a letter or a digit"},
		{"non-ASCII name", func(s *MemberSpec) { s.Name = "alicé" }, "has 'é'"},
		{"broadcast address", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("10.20.255.255/16")} },
			"is the broadcast address of its prefix; use a host address, like 10.20.255.254/16"},
		{"duplicate IP", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("10.0.0.1/8"), p("10.0.0.1/16")} }, "virtual IP 10.0.0.1 is listed twice"},
		{"loopback IP", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("127.0.0.1/8")} }, "loopback"},
		{"multicast IP", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("224.0.0.1/4")} }, "multicast"},
		{"4in6 IP", func(s *MemberSpec) { s.IPs = []netip.Prefix{p("::ffff:10.0.0.1/112")} }, "write it as IPv4, like 10.0.0.1/16"},
		{"invalid IP prefix", func(s *MemberSpec) { s.IPs = []netip.Prefix{{}} }, "not a valid address/length"},
		{"too many IPs", func(s *MemberSpec) {
			s.IPs = nil
			for i := range MaxIPs + 1 {
				s.IPs = append(s.IPs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8))
			}
		}, "17 virtual IPs, at most 16"},
		{"empty group", func(s *MemberSpec) { s.Groups = []string{""} }, "group name is empty"},
		{"duplicate group", func(s *MemberSpec) { s.Groups = []string{"web", "db", "web"} }, `group "web" is listed twice`},
		{"group with comma", func(s *MemberSpec) { s.Groups = []string{"web,db"} }, `group name "web,db" has ','`},
		{"subnet with host bits", func(s *MemberSpec) { s.Subnets = []netip.Prefix{p("192.168.10.5/24")} },
			"subnet 192.168.10.5/24 has host bits set; did you mean 192.168.10.0/24?"},
		{"duplicate subnet", func(s *MemberSpec) { s.Subnets = []netip.Prefix{p("10.9.0.0/16"), p("10.9.0.0/16")} }, "subnet 10.9.0.0/16 is listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := aliceSpec()
			tt.mutate(&s)
			err := s.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMemberSpec_Validate_ReportsEveryProblem(t *testing.T) {
	s := MemberSpec{Name: "", Groups: []string{"a", "a"}, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}
	err := s.Validate()
	for _, want := range []string{"member name is empty", `group "a" is listed twice`, "host bits set"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

func TestMemberExt_RoundTrip(t *testing.T) {
	specs := map[string]MemberSpec{
		"full":    aliceSpec(),
		"minimal": {Name: "relay-1"},
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			addr := Address{1, 2, 3, 19: 20}
			der, err := marshalMemberExt(addr, spec)
			if err != nil {
				t.Fatal(err)
			}
			gotAddr, gotSpec, err := unmarshalMemberExt(der)
			if err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if gotAddr != addr {
				t.Errorf("address = %s, want %s", gotAddr, addr)
			}
			if diff := cmp.Diff(spec, gotSpec, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMemberExt_Encoding pins the wire format against a hand-written DER
// value, so an accidental change (a field type, the order) is caught.
func TestMemberExt_Encoding(t *testing.T) {
	spec := MemberSpec{
		Name:    "a",
		IPs:     []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")},
		Groups:  []string{"g_1"},
		Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
	}
	var addr Address
	for i := range addr {
		addr[i] = byte(i)
	}
	der, err := marshalMemberExt(addr, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x30, 0x3d, // SEQUENCE
		0x02, 0x01, 0x01, // version 1
		0x04, 0x14, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, // address
		0x0c, 0x01, 'a', // name UTF8String
		0x30, 0x0b, 0x30, 0x09, 0x04, 0x04, 10, 0, 0, 1, 0x02, 0x01, 8, // ips
		0x30, 0x05, 0x0c, 0x03, 'g', '_', '1', // groups: UTF8String, even though "g_1" is no PrintableString
		0x30, 0x0b, 0x30, 0x09, 0x04, 0x04, 192, 168, 0, 0, 0x02, 0x01, 16, // subnets
	}
	if diff := cmp.Diff(want, der); diff != "" {
		t.Errorf("encoding (-want +got):\n%s", diff)
	}
}

func TestMemberExt_Unmarshal_Rejects(t *testing.T) {
	good := func() extMember {
		return extMember{
			Version: 1,
			Address: make([]byte, 20),
			Name:    utf8Value("alice"),
			IPs:     []extPrefix{{Addr: []byte{10, 0, 0, 5}, Bits: 16}},
			Groups:  []asn1.RawValue{utf8Value("web")},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*extMember)
		wantErr string
	}{
		{"version 2", func(e *extMember) { e.Version = 2 }, "version 2, this ringvpn understands only version 1"},
		{"short address", func(e *extMember) { e.Address = e.Address[:19] }, "overlay address is 19 bytes, want 20"},
		{"PrintableString name", func(e *extMember) { e.Name.Tag = asn1.TagPrintableString }, "name: want a UTF8String"},
		{"invalid UTF-8 group", func(e *extMember) { e.Groups[0].Bytes = []byte{0xff} }, "groups: invalid UTF-8"},
		{"5-byte IP", func(e *extMember) { e.IPs[0].Addr = []byte{1, 2, 3, 4, 5} }, "address of 5 bytes, want 4 or 16"},
		{"33 bits", func(e *extMember) { e.IPs[0].Bits = 33 }, "network length 33 out of range"},
		{"negative bits", func(e *extMember) { e.IPs[0].Bits = -1 }, "network length -1 out of range"},
		{"invalid spec", func(e *extMember) { e.Name = utf8Value("bad name") }, `member name "bad name"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := good()
			tt.mutate(&e)
			der, err := asn1.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = unmarshalMemberExt(der)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("unmarshal = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("trailing data", func(t *testing.T) {
		der, _ := asn1.Marshal(good())
		if _, _, err := unmarshalMemberExt(append(der, 0)); err == nil {
			t.Fatal("unmarshal accepted trailing data")
		}
	})
	t.Run("appended element is ignored", func(t *testing.T) {
		type extV1Plus struct {
			Version int
			Address []byte
			Name    asn1.RawValue
			IPs     []extPrefix
			Groups  []asn1.RawValue
			Subnets []extPrefix
			Extra   int
		}
		g := good()
		der, err := asn1.Marshal(extV1Plus{g.Version, g.Address, g.Name, g.IPs, g.Groups, g.Subnets, 7})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := unmarshalMemberExt(der); err != nil {
			t.Fatalf("unmarshal of a version-1 value with an extra trailing element: %v", err)
		}
	})
}

func TestNewCA(t *testing.T) {
	for _, kind := range []string{KeyKindECDSAP256, KeyKindEd25519, ""} {
		t.Run("kind="+kind, func(t *testing.T) {
			ca := newTestCA(t, "group-ca", kind)
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("IsCA=%v BasicConstraintsValid=%v MaxPathLen=%d MaxPathLenZero=%v, want a CA with MaxPathLen 0",
					c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
			}
			if c.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("KeyUsage = %v, want CertSign", c.KeyUsage)
			}
			if c.Subject.CommonName != "group-ca" || c.Issuer.CommonName != "group-ca" {
				t.Errorf("subject %q issuer %q, want group-ca", c.Subject.CommonName, c.Issuer.CommonName)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
			if !c.NotBefore.Equal(t0) || !c.NotAfter.Equal(t0.Add(caLife)) {
				t.Errorf("validity %s..%s, want %s..%s", c.NotBefore, c.NotAfter, t0, t0.Add(caLife))
			}
			wantKind := kind
			if wantKind == "" {
				wantKind = KeyKindECDSAP256
			}
			if got, _ := KeyKindOf(c.PublicKey); got != wantKind {
				t.Errorf("key kind %q, want %q", got, wantKind)
			}
		})
	}
}

func TestNewCA_Errors(t *testing.T) {
	tests := []struct {
		name, caName, kind string
		notAfter           time.Time
		wantErr            string
	}{
		{"bad name", "group ca", "", t0.Add(time.Hour), `CA name "group ca" has ' '`},
		{"ends before it starts", "ca", "", t0.Add(-time.Hour), "validity ends (2025-12-31T23:00:00Z) before it starts (2026-01-01T00:00:00Z)"},
		{"unknown key kind", "ca", "rsa", t0.Add(time.Hour), `unknown key type "rsa"; use "ecdsa-p256" or "ed25519"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCA(tt.caName, t0, tt.notAfter, tt.kind)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewCA = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCA_Issue(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	key, cert := issueTestMember(t, ca, aliceSpec(), "")

	if cert.Subject.CommonName != "alice" || cert.IsCA {
		t.Errorf("CN %q IsCA %v, want alice, not a CA", cert.Subject.CommonName, cert.IsCA)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want DigitalSignature only", cert.KeyUsage)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, cert.ExtKeyUsage); diff != "" {
		t.Errorf("ExtKeyUsage (-want +got):\n%s", diff)
	}
	if len(cert.DNSNames)+len(cert.URIs)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("certificate has subject alternative names")
	}
	var n int
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidMemberExtension) {
			n++
			if e.Critical {
				t.Errorf("member extension is critical")
			}
		}
	}
	if n != 1 {
		t.Errorf("%d member extensions, want 1", n)
	}
	if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %x is not a positive 128-bit number", cert.SerialNumber)
	}
	_, cert2 := issueTestMember(t, ca, aliceSpec(), "")
	if cert.SerialNumber.Cmp(cert2.SerialNumber) == 0 {
		t.Errorf("two certificates share serial %x", cert.SerialNumber)
	}

	m, err := ParseMember(cert)
	if err != nil {
		t.Fatal(err)
	}
	wantAddr, _ := AddressOf(key.Public())
	if m.Address != wantAddr || m.CAName != "group-ca" || m.Name != "alice" {
		t.Errorf("member %s %q from %q, want %s alice from group-ca", m.Address, m.Name, m.CAName, wantAddr)
	}
}

func TestCA_Issue_Errors(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	other := newTestCA(t, "other-ca", "")
	key, _ := GenerateKey("")
	tests := []struct {
		name      string
		ca        *CA
		spec      MemberSpec
		from, to  time.Time
		wantErr   string
		wantIsErr error
	}{
		{"starts before the CA", ca, aliceSpec(), t0.Add(-time.Second), t0.Add(time.Hour),
			`member "alice": validity starts 2025-12-31T23:59:59Z, before CA "group-ca" becomes valid (2026-01-01T00:00:00Z); start it later`, nil},
		{"ends after the CA", ca, aliceSpec(), t0, t0.Add(caLife + time.Hour),
			`member "alice": validity ends 2027-01-01T01:00:00Z, after CA "group-ca" expires (2027-01-01T00:00:00Z); shorten it, or renew the CA`, nil},
		{"ends before it starts", ca, aliceSpec(), t0.Add(time.Hour), t0, "validity ends (2026-01-01T00:00:00Z) before it starts", nil},
		{"invalid spec", ca, MemberSpec{Name: "alice", Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}, t0, t0.Add(time.Hour),
			"host bits set", nil},
		{"CA key does not match", &CA{Cert: ca.Cert, Key: other.Key}, aliceSpec(), t0, t0.Add(time.Hour),
			"private key does not belong", ErrKeyMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ca.Issue(key.Public(), tt.spec, tt.from, tt.to)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIsErr != nil && !errors.Is(err, tt.wantIsErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantIsErr)
			}
		})
	}
	t.Run("unsupported key", func(t *testing.T) {
		_, err := ca.Issue(struct{}{}, aliceSpec(), t0, t0.Add(time.Hour))
		if err == nil || !strings.Contains(err.Error(), "unsupported key type") {
			t.Fatalf("Issue = %v, want unsupported key type", err)
		}
	})
	t.Run("member certificate as CA", func(t *testing.T) {
		mkey, mcert := issueTestMember(t, ca, aliceSpec(), "")
		_, err := (&CA{Cert: mcert, Key: mkey}).Issue(key.Public(), aliceSpec(), t0, t0.Add(time.Hour))
		if err == nil || !strings.Contains(err.Error(), "is not a CA certificate") {
			t.Fatalf("Issue = %v, want 'is not a CA certificate'", err)
		}
	})
}

func TestMember_AllowsSource(t *testing.T) {
	m := &Member{MemberSpec: aliceSpec()}
	tests := map[string]bool{
		"10.20.0.5":        true,  // own IP
		"10.20.0.6":        false, // same network, not own IP
		"::ffff:10.20.0.5": true,  // mapped form of own IP
		"fd00:20::5":       true,
		"fd00:20::6":       false,
		"192.168.10.77":    true, // inside a routable subnet
		"192.168.11.1":     false,
	}
	for ip, want := range tests {
		if got := m.AllowsSource(netip.MustParseAddr(ip)); got != want {
			t.Errorf("AllowsSource(%s) = %v, want %v", ip, got, want)
		}
	}
	if !m.InGroup("web") || m.InGroup("ops") {
		t.Errorf("InGroup(web)=%v InGroup(ops)=%v, want true false", m.InGroup("web"), m.InGroup("ops"))
	}
}

func TestMemberSpec_Pools(t *testing.T) {
	p := netip.MustParsePrefix
	s := MemberSpec{Name: "bob", IPs: []netip.Prefix{p("10.20.0.0/16"), p("10.30.0.5/16"), p("10.40.0.0/32"), p("fd00::/64")}}
	if got, want := s.Pools(), []netip.Prefix{p("10.20.0.0/16"), p("fd00::/64")}; !slices.Equal(got, want) {
		t.Errorf("Pools() = %v, want %v", got, want)
	}
	if got, want := s.FixedIPs(), []netip.Prefix{p("10.30.0.5/16"), p("10.40.0.0/32")}; !slices.Equal(got, want) {
		t.Errorf("FixedIPs() = %v, want %v", got, want)
	}
	tests := map[string]bool{
		"10.20.0.7":     true,
		"10.20.255.254": true,
		"10.20.0.0":     false, // network address
		"10.20.255.255": false, // broadcast
		"10.21.0.1":     false,
		"10.30.0.5":     false, // fixed, not pooled
		"fd00::1":       true,
		"fd00::":        false, // subnet-router anycast
	}
	for ip, want := range tests {
		if _, got := s.PoolOf(netip.MustParseAddr(ip)); got != want {
			t.Errorf("PoolOf(%s) = %v, want %v", ip, got, want)
		}
	}
	m := &Member{MemberSpec: s}
	for ip, want := range map[string]bool{"10.20.0.0": false, "10.20.0.7": false, "10.30.0.5": true, "10.40.0.0": true} {
		if got := m.AllowsSource(netip.MustParseAddr(ip)); got != want {
			t.Errorf("AllowsSource(%s) = %v, want %v (leases are checked by the VPN)", ip, got, want)
		}
	}
}

func TestRandomSerial(t *testing.T) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for range 100 {
		n, err := randomSerial()
		if err != nil {
			t.Fatal(err)
		}
		if n.Sign() <= 0 || n.Cmp(limit) >= 0 {
			t.Fatalf("serial %x out of (0, 2^128)", n)
		}
	}
}
