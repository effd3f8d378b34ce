package security

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// TrustBundle is the set of group CAs a node trusts. It holds several CAs
// while a group rotates its CA. A TrustBundle is immutable and safe for
// concurrent use.
type TrustBundle struct {
	cas []*x509.Certificate // immutable after NewTrustBundle
}

// NewTrustBundle returns a bundle of the given CA certificates. Each must be
// a CA certificate allowed to sign certificates; exact duplicates are
// dropped.
func NewTrustBundle(cas ...*x509.Certificate) (*TrustBundle, error) {
	if len(cas) == 0 {
		return nil, errors.New("trust bundle has no CA certificate")
	}
	b := &TrustBundle{}
	for _, c := range cas {
		if c == nil {
			return nil, errors.New("trust bundle: nil certificate")
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("trust bundle: %s is not a CA certificate (is it a member certificate?)", certLabel(c))
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("trust bundle: %s may not sign certificates (no certSign key usage)", caLabel(c))
		}
		if slices.ContainsFunc(b.cas, func(d *x509.Certificate) bool { return d.Equal(c) }) {
			continue
		}
		b.cas = append(b.cas, c)
	}
	return b, nil
}

// ParseTrustBundle parses one or more PEM "CERTIFICATE" blocks into a
// bundle.
func ParseTrustBundle(pemBytes []byte) (*TrustBundle, error) {
	certs, err := parseCertificatesPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	return NewTrustBundle(certs...)
}

// CAs returns the bundle's CA certificates. The slice is a copy; the
// certificates must not be modified.
func (b *TrustBundle) CAs() []*x509.Certificate {
	return slices.Clone(b.cas)
}

// CertPool returns the bundle's CAs as a new x509.CertPool.
func (b *TrustBundle) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range b.cas {
		p.AddCert(c)
	}
	return p
}

// VerifyMember verifies a peer's certificate chain at time now and returns
// the member it certifies. chain[0] is the DER leaf, as pion/dtls passes it
// to Config.VerifyPeerCertificate; further certificates are ignored (member
// certificates are signed directly by a CA in the bundle).
//
// It checks, in order: the issuing CA is in the bundle and its signature
// verifies; the CA and then the leaf are valid at now; the leaf is shaped
// like a member certificate; its member extension decodes; and the overlay
// address it claims is the hash of its key. Errors wrap ErrBadCertificate,
// ErrUnknownCA, ErrBadSignature, ErrNotYetValid, ErrExpired,
// ErrNoMemberExtension, ErrBadMemberExtension or ErrAddressMismatch.
func (b *TrustBundle) VerifyMember(chain [][]byte, now time.Time) (*Member, error) {
	if len(chain) == 0 || len(chain[0]) == 0 {
		return nil, errorf(ErrBadCertificate, "no certificate presented")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, errorf(ErrBadCertificate, "cannot parse certificate: %w", err)
	}
	return b.verify(leaf, now)
}

func (b *TrustBundle) verify(leaf *x509.Certificate, now time.Time) (*Member, error) {
	label := certLabel(leaf)

	ca, err := b.issuerOf(leaf)
	if err != nil {
		return nil, err
	}
	if now.Before(ca.NotBefore) {
		return nil, errorf(ErrNotYetValid, "%s that issued %s is not valid before %s (now %s)",
			caLabel(ca), label, fmtTime(ca.NotBefore), fmtTime(now))
	}
	if now.After(ca.NotAfter) {
		return nil, errorf(ErrExpired, "%s that issued %s expired at %s (now %s)",
			caLabel(ca), label, fmtTime(ca.NotAfter), fmtTime(now))
	}
	if now.Before(leaf.NotBefore) {
		return nil, errorf(ErrNotYetValid, "%s is not valid before %s (now %s)", label, fmtTime(leaf.NotBefore), fmtTime(now))
	}
	if now.After(leaf.NotAfter) {
		return nil, errorf(ErrExpired, "%s expired at %s (now %s)", label, fmtTime(leaf.NotAfter), fmtTime(now))
	}

	if leaf.IsCA {
		return nil, errorf(ErrBadCertificate, "%s is a CA certificate, not a member certificate", label)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, errorf(ErrBadCertificate, "%s may not be used for signatures (no digitalSignature key usage)", label)
	}
	if !hasBothAuthUsages(leaf) {
		return nil, errorf(ErrBadCertificate, "%s is not valid for both client and server authentication", label)
	}
	for _, id := range leaf.UnhandledCriticalExtensions {
		if !id.Equal(oidMemberExtension) {
			return nil, errorf(ErrBadCertificate, "%s has an unknown critical extension %s", label, id)
		}
	}

	m, err := ParseMember(leaf)
	if err != nil {
		return nil, err
	}
	m.CAName = ca.Subject.CommonName
	m.CANotAfter = ca.NotAfter
	return m, nil
}

// issuerOf finds the CA in the bundle that signed leaf.
func (b *TrustBundle) issuerOf(leaf *x509.Certificate) (*x509.Certificate, error) {
	var named []*x509.Certificate
	for _, ca := range b.cas {
		if !bytes.Equal(leaf.RawIssuer, ca.RawSubject) {
			continue
		}
		if leaf.CheckSignatureFrom(ca) == nil {
			return ca, nil
		}
		named = append(named, ca)
	}
	label := certLabel(leaf)
	if len(named) > 0 {
		return nil, errorf(ErrBadSignature, "%s names %s as its issuer, but its signature does not verify with that CA's key (tampered with, or issued by another CA of the same name)",
			label, caLabel(named[0]))
	}
	return nil, errorf(ErrUnknownCA, "%s is signed by %q, which is not in the trust bundle (trusted: %s)",
		label, leaf.Issuer.CommonName, quotedNames(b.cas))
}

func hasBothAuthUsages(c *x509.Certificate) bool {
	var client, server bool
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageAny:
			return true
		case x509.ExtKeyUsageClientAuth:
			client = true
		case x509.ExtKeyUsageServerAuth:
			server = true
		}
	}
	return client && server
}
