package security

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// oidMemberExtension identifies the member extension. It is a placeholder
// under the RFC 5612 documentation enterprise number; see "The extension's
// OID" in the package documentation for why it is not a 2.25 UUID arc and
// what must replace it before the first release.
var oidMemberExtension = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1, 1}

// memberExtVersion is the version of the member extension this package
// writes and reads.
const memberExtVersion = 1

// Limits on member specs, so certificates stay small enough to travel in a
// handshake.
const (
	MaxNameLen = 64  // member, group and CA names (the X.509 bound on a CN)
	MaxIPs     = 16  // virtual IPs per member
	MaxGroups  = 64  // groups per member
	MaxSubnets = 256 // routable subnets per member
)

// MemberSpec is what a CA binds to a member's key: its name, virtual IP
// addresses, groups and routable subnets.
type MemberSpec struct {
	// Name is the member's name, also the certificate's Subject CN: 1 to 64
	// letters, digits, '.', '-' or '_', starting with a letter or digit.
	Name string
	// IPs are the member's virtual IP addresses with the length of their
	// network, like 10.20.0.5/16: each a host address of its prefix (a
	// fixed IP), or the network address itself, like 10.20.0.0/16, which
	// grants a pool: the member leases any free host address of that
	// network from the group (see IsPool).
	IPs []netip.Prefix
	// Groups are the groups the member belongs to; same syntax as Name.
	Groups []string
	// Subnets are whole networks the member may route for (router mode),
	// like 192.168.10.0/24; they must be masked (no host bits).
	Subnets []netip.Prefix
}

// Member is a verified member certificate, decoded.
type Member struct {
	MemberSpec
	// Address is the member's overlay address, the hash of its public key.
	Address Address
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore, NotAfter time.Time
	// CAName is the name (Subject CN) of the CA that issued the certificate.
	CAName string
	// CANotAfter is when that CA's certificate expires; zero unless the
	// member was verified against a trust bundle. See ValidUntil.
	CANotAfter time.Time
	// Cert is the certificate itself.
	Cert *x509.Certificate
}

// IsPool reports whether p, one of a member's IPs, grants a pool rather
// than a fixed IP: its address is the network address of a prefix with at
// least two host bits (10.20.0.0/16; a /31 or /32 has no network address
// and is always a fixed IP).
func IsPool(p netip.Prefix) bool {
	return p.IsValid() && p.Addr().BitLen()-p.Bits() >= 2 && p.Addr() == p.Masked().Addr()
}

// FixedIPs returns the member's fixed virtual IPs: its IPs but pools.
func (s *MemberSpec) FixedIPs() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s.IPs {
		if !IsPool(p) {
			out = append(out, p)
		}
	}
	return out
}

// Pools returns the pools the member may lease an address from.
func (s *MemberSpec) Pools() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s.IPs {
		if IsPool(p) {
			out = append(out, p)
		}
	}
	return out
}

// HasFixedIP reports whether ip is one of the member's fixed virtual IPs.
func (s *MemberSpec) HasFixedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.IPs {
		if p.Addr() == ip && !IsPool(p) {
			return true
		}
	}
	return false
}

// PoolOf returns the pool of the member that ip may be leased from: a
// host address of one of its pools, neither the network address nor (for
// IPv4) the broadcast address.
func (s *MemberSpec) PoolOf(ip netip.Addr) (netip.Prefix, bool) {
	ip = ip.Unmap()
	for _, p := range s.IPs {
		if IsPool(p) && p.Contains(ip) && ip != p.Addr() && !(ip.Is4() && ip == lastAddr(p)) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// AllowsSource reports whether the member may send IP packets from ip: one
// of its own fixed virtual IPs, or an address inside one of its subnets.
// A leased address is not in the certificate: the VPN checks it against
// the member's lease record.
func (m *Member) AllowsSource(ip netip.Addr) bool {
	ip = ip.Unmap()
	if m.HasFixedIP(ip) {
		return true
	}
	for _, s := range m.Subnets {
		if s.Contains(ip) {
			return true
		}
	}
	return false
}

// InGroup reports whether the member belongs to group g.
func (m *Member) InGroup(g string) bool {
	return slices.Contains(m.Groups, g)
}

// Validate checks a spec strictly and reports every problem it finds, each
// with what to change.
func (s MemberSpec) Validate() error {
	var errs []error
	if err := validateName("member name", s.Name); err != nil {
		errs = append(errs, err)
	}
	if len(s.IPs) > MaxIPs {
		errs = append(errs, fmt.Errorf("%d virtual IPs, at most %d are allowed", len(s.IPs), MaxIPs))
	}
	for i, p := range s.IPs {
		if err := validateHostPrefix(p); err != nil {
			errs = append(errs, err)
		}
		for _, q := range s.IPs[:i] {
			if q.Addr() == p.Addr() {
				errs = append(errs, fmt.Errorf("virtual IP %s is listed twice", p.Addr()))
				break
			}
		}
	}
	if len(s.Groups) > MaxGroups {
		errs = append(errs, fmt.Errorf("%d groups, at most %d are allowed", len(s.Groups), MaxGroups))
	}
	for i, g := range s.Groups {
		if err := validateName("group name", g); err != nil {
			errs = append(errs, err)
		}
		if slices.Contains(s.Groups[:i], g) {
			errs = append(errs, fmt.Errorf("group %q is listed twice", g))
		}
	}
	if len(s.Subnets) > MaxSubnets {
		errs = append(errs, fmt.Errorf("%d subnets, at most %d are allowed", len(s.Subnets), MaxSubnets))
	}
	for i, p := range s.Subnets {
		if err := validateSubnet(p); err != nil {
			errs = append(errs, err)
		}
		if slices.Contains(s.Subnets[:i], p) {
			errs = append(errs, fmt.Errorf("subnet %s is listed twice", p))
		}
	}
	return errors.Join(errs...)
}

// validateName checks a member, group or CA name.
func validateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s %q is %d bytes long, at most %d are allowed", what, name, len(name), MaxNameLen)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.' || r == '-' || r == '_':
			if i == 0 {
				return fmt.Errorf("%s %q must start with a letter or a digit", what, name)
			}
		default:
			return fmt.Errorf("%s %q has %q at byte %d; use only letters, digits, '.', '-' and '_'", what, name, r, i)
		}
	}
	return nil
}

func validateHostPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("virtual IP %s is not a valid address/length", p)
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return fmt.Errorf("virtual IP %s is an IPv4-mapped IPv6 address; write it as IPv4, like %s/%d", p, a.Unmap(), max(p.Bits()-96, 0))
	case a.Zone() != "":
		return fmt.Errorf("virtual IP %s has a zone; remove it", p)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return fmt.Errorf("virtual IP %s is an unspecified, loopback or multicast address; use a unicast address", p)
	}
	host := a.BitLen() - p.Bits()
	if host < 2 {
		return nil // /31, /32, /127 and /128 have no network or broadcast address
	}
	if a == p.Masked().Addr() {
		return nil // a pool (IsPool)
	}
	if a.Is4() && a == lastAddr(p) {
		return fmt.Errorf("virtual IP %s is the broadcast address of its prefix; use a host address, like %s/%d", p, a.Prev(), p.Bits())
	}
	return nil
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func validateSubnet(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("subnet %s is not a valid prefix", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("subnet %s is an IPv4-mapped IPv6 prefix; write it as IPv4", p)
	}
	if m := p.Masked(); m != p {
		return fmt.Errorf("subnet %s has host bits set; did you mean %s?", p, m)
	}
	return nil
}

// The member extension in encoding/asn1 form; see the package
// documentation for the ASN.1 definition. Strings are RawValues so that they
// are always written, and only accepted, as UTF8String.
type extMember struct {
	Version int
	Address []byte
	Name    asn1.RawValue
	IPs     []extPrefix
	Groups  []asn1.RawValue
	Subnets []extPrefix
}

type extPrefix struct {
	Addr []byte
	Bits int
}

func utf8Value(s string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(s)}
}

func prefixesToExt(ps []netip.Prefix) []extPrefix {
	out := make([]extPrefix, len(ps))
	for i, p := range ps {
		out[i] = extPrefix{Addr: p.Addr().AsSlice(), Bits: p.Bits()}
	}
	return out
}

// marshalMemberExt encodes the member extension. spec must be valid.
func marshalMemberExt(addr Address, spec MemberSpec) ([]byte, error) {
	e := extMember{
		Version: memberExtVersion,
		Address: addr[:],
		Name:    utf8Value(spec.Name),
		IPs:     prefixesToExt(spec.IPs),
		Subnets: prefixesToExt(spec.Subnets),
		Groups:  make([]asn1.RawValue, len(spec.Groups)),
	}
	for i, g := range spec.Groups {
		e.Groups[i] = utf8Value(g)
	}
	return asn1.Marshal(e)
}

// unmarshalMemberExt decodes and validates a member extension value. Its
// errors do not wrap a sentinel; callers add ErrBadMemberExtension.
func unmarshalMemberExt(der []byte) (Address, MemberSpec, error) {
	var (
		e    extMember
		addr Address
		spec MemberSpec
	)
	rest, err := asn1.Unmarshal(der, &e)
	if err != nil {
		return addr, spec, err
	}
	if len(rest) != 0 {
		return addr, spec, fmt.Errorf("%d bytes of trailing data", len(rest))
	}
	if e.Version != memberExtVersion {
		return addr, spec, fmt.Errorf("version %d, this ringvpn understands only version %d (is ringvpn out of date?)", e.Version, memberExtVersion)
	}
	if len(e.Address) != AddressLen {
		return addr, spec, fmt.Errorf("overlay address is %d bytes, want %d", len(e.Address), AddressLen)
	}
	copy(addr[:], e.Address)
	if spec.Name, err = utf8FromValue(e.Name); err != nil {
		return addr, spec, fmt.Errorf("name: %w", err)
	}
	if spec.IPs, err = prefixesFromExt(e.IPs); err != nil {
		return addr, spec, fmt.Errorf("virtual IPs: %w", err)
	}
	if spec.Subnets, err = prefixesFromExt(e.Subnets); err != nil {
		return addr, spec, fmt.Errorf("subnets: %w", err)
	}
	for _, v := range e.Groups {
		g, err := utf8FromValue(v)
		if err != nil {
			return addr, spec, fmt.Errorf("groups: %w", err)
		}
		spec.Groups = append(spec.Groups, g)
	}
	if err := spec.Validate(); err != nil {
		return addr, spec, err
	}
	return addr, spec, nil
}

func utf8FromValue(v asn1.RawValue) (string, error) {
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagUTF8String || v.IsCompound {
		return "", fmt.Errorf("want a UTF8String, got class %d tag %d", v.Class, v.Tag)
	}
	if !utf8.Valid(v.Bytes) {
		return "", errors.New("invalid UTF-8")
	}
	return string(v.Bytes), nil
}

func prefixesFromExt(es []extPrefix) ([]netip.Prefix, error) {
	if len(es) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(es))
	for i, e := range es {
		a, ok := netip.AddrFromSlice(e.Addr)
		if !ok {
			return nil, fmt.Errorf("address of %d bytes, want 4 or 16", len(e.Addr))
		}
		if e.Bits < 0 || e.Bits > a.BitLen() {
			return nil, fmt.Errorf("network length %d out of range for %s", e.Bits, a)
		}
		out[i] = netip.PrefixFrom(a, e.Bits)
	}
	return out, nil
}

// ParseMember decodes the member extension of cert and checks that the
// address it claims is the hash of cert's key. It does NOT check who signed
// cert or when it is valid: use [TrustBundle.VerifyMember] for anything that
// trusts the result. CAName is the issuer's name as cert states it.
func ParseMember(cert *x509.Certificate) (*Member, error) {
	label := certLabel(cert)
	var ext *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(oidMemberExtension) {
			if ext != nil {
				return nil, errorf(ErrBadMemberExtension, "%s has two ringvpn member extensions", label)
			}
			ext = &cert.Extensions[i]
		}
	}
	if ext == nil {
		return nil, errorf(ErrNoMemberExtension, "%s has no ringvpn member extension (it was not issued by ringvpn)", label)
	}
	addr, spec, err := unmarshalMemberExt(ext.Value)
	if err != nil {
		return nil, errorf(ErrBadMemberExtension, "%s has a malformed ringvpn member extension: %w", label, err)
	}
	if spec.Name != cert.Subject.CommonName {
		return nil, errorf(ErrBadMemberExtension, "%s has a member extension for %q", label, spec.Name)
	}
	if _, err := KeyKindOf(cert.PublicKey); err != nil {
		return nil, errorf(ErrBadCertificate, "%s: %w", label, err)
	}
	keyAddr, err := AddressOf(cert.PublicKey)
	if err != nil {
		return nil, errorf(ErrBadCertificate, "%s: %w", label, err)
	}
	if keyAddr != addr {
		return nil, errorf(ErrAddressMismatch, "%s claims overlay address %s but its key hashes to %s", label, addr, keyAddr)
	}
	return &Member{
		MemberSpec: spec,
		Address:    addr,
		NotBefore:  cert.NotBefore,
		NotAfter:   cert.NotAfter,
		CAName:     cert.Issuer.CommonName,
		Cert:       cert,
	}, nil
}

// certLabel names a certificate in error messages.
func certLabel(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("certificate of %q", c.Subject.CommonName)
	}
	if c.SerialNumber != nil {
		return fmt.Sprintf("certificate with serial %x", c.SerialNumber)
	}
	return "certificate"
}

// caLabel names a CA certificate in error messages.
func caLabel(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("CA %q", c.Subject.CommonName)
	}
	return fmt.Sprintf("CA with serial %x", c.SerialNumber)
}

// CA is a group certificate authority: its self-signed certificate and its
// private key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a CA with a new key of the given kind ("" for the default,
// ECDSA P-256) and a self-signed certificate named name, valid from
// notBefore to notAfter. The certificate may sign member certificates and
// revocation lists, and no intermediate CAs (MaxPathLen 0).
func NewCA(name string, notBefore, notAfter time.Time, keyKind string) (*CA, error) {
	if err := validateName("CA name", name); err != nil {
		return nil, err
	}
	notBefore, notAfter = notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("CA %q: validity ends (%s) before it starts (%s)", name, fmtTime(notAfter), fmtTime(notBefore))
	}
	key, err := GenerateKey(keyKind)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and its private key (PEM files) and checks
// that they belong together.
func LoadCA(certPath, keyPath string) (*CA, error) {
	cert, err := ReadCertificate(certPath)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("%s: %s is not a CA certificate", certPath, certLabel(cert))
	}
	key, err := ReadPrivateKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errorf(ErrKeyMismatch, "private key %s does not belong to %s (%s)", keyPath, caLabel(cert), certPath)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue signs a member certificate for the public key pub (ECDSA P-256 or
// Ed25519) and the given spec, valid from notBefore to notAfter, which must
// lie inside the CA's own validity. The overlay address is computed from
// pub.
func (ca *CA) Issue(pub crypto.PublicKey, spec MemberSpec, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	return ca.issue(pub, spec, notBefore, notAfter, nil)
}

// issue is Issue with a test hook: a non-nil claim replaces the overlay
// address written into the extension.
func (ca *CA) issue(pub crypto.PublicKey, spec MemberSpec, notBefore, notAfter time.Time, claim *Address) (*x509.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issue: CA has no certificate or no key")
	}
	if !ca.Cert.IsCA {
		return nil, fmt.Errorf("issue: %s is not a CA certificate", certLabel(ca.Cert))
	}
	if !publicKeysEqual(ca.Key.Public(), ca.Cert.PublicKey) {
		return nil, errorf(ErrKeyMismatch, "issue: the CA's private key does not belong to %s", caLabel(ca.Cert))
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("member %q: %w", spec.Name, err)
	}
	if _, err := KeyKindOf(pub); err != nil {
		return nil, fmt.Errorf("member %q: %w", spec.Name, err)
	}
	addr, err := AddressOf(pub)
	if err != nil {
		return nil, err
	}
	if claim != nil {
		addr = *claim
	}

	notBefore, notAfter = notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("member %q: validity ends (%s) before it starts (%s)", spec.Name, fmtTime(notAfter), fmtTime(notBefore))
	}
	caName := caLabel(ca.Cert)
	if notBefore.Before(ca.Cert.NotBefore) {
		return nil, fmt.Errorf("member %q: validity starts %s, before %s becomes valid (%s); start it later",
			spec.Name, fmtTime(notBefore), caName, fmtTime(ca.Cert.NotBefore))
	}
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("member %q: validity ends %s, after %s expires (%s); shorten it, or renew the CA",
			spec.Name, fmtTime(notAfter), caName, fmtTime(ca.Cert.NotAfter))
	}

	extValue, err := marshalMemberExt(addr, spec)
	if err != nil {
		return nil, fmt.Errorf("member %q: encode member extension: %w", spec.Name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.Name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidMemberExtension, Critical: false, Value: extValue}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("member %q: create certificate: %w", spec.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("member %q: parse new certificate: %w", spec.Name, err)
	}
	return cert, nil
}

// randomSerial returns a random positive serial number of at most 128 bits.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// fmtTime formats a time for messages: RFC 3339 in UTC.
func fmtTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// quotedNames returns the CN of each certificate, quoted, comma-separated.
func quotedNames(certs []*x509.Certificate) string {
	names := make([]string, len(certs))
	for i, c := range certs {
		names[i] = fmt.Sprintf("%q", c.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}
