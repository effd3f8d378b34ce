package dht

import (
	"crypto/x509"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

// Verifier checks signed records, at the node that stores them and at the
// node that reads them. Implementations must be safe for concurrent use.
type Verifier interface {
	// Verify checks rec, found or offered under key, at time now, and
	// returns the member that signed it. Errors wrap ErrBadRecord.
	Verify(key overlay.Address, rec *SignedRecord, now time.Time) (*security.Member, error)
}

// VerifyWith returns a Verifier that trusts the group CAs of bundle, which
// must not be nil. A
// record passes if: its key is KeyOf(namespace, name); it has not expired;
// its certificate verifies against bundle (security.TrustBundle.
// VerifyMember); its signature verifies with that certificate's key; and,
// for a claim (namespace "node", or one of claims), its Name starts with
// the signer's own address (see ClaimName).
func VerifyWith(bundle *security.TrustBundle, claims ...string) Verifier {
	v := &recordVerifier{bundle: bundle, claims: map[string]bool{NamespaceNode: true}}
	for _, ns := range claims {
		v.claims[ns] = true
	}
	return v
}

// recordVerifier is VerifyWith's Verifier; without a bundle (a DHT
// created with a nil Verifier, for simulations) it checks everything but
// who issued the certificate.
type recordVerifier struct {
	bundle *security.TrustBundle // nil: the chain is not checked
	claims map[string]bool       // immutable
}

func (v *recordVerifier) Verify(key overlay.Address, rec *SignedRecord, now time.Time) (*security.Member, error) {
	bad := one(ErrBadRecord)
	if err := rec.check(); err != nil {
		return nil, errorf(bad, "%w", err)
	}
	label := rec.label()
	if want := rec.Key(); want != key {
		return nil, errorf(bad, "record %s belongs at key %s, not at %s", label, want, key)
	}
	if !now.Before(rec.Expires) {
		return nil, errorf(bad, "record %s expired at %s", label, rec.Expires.UTC().Format(time.RFC3339))
	}
	m, err := v.signer(rec, now)
	if err != nil {
		return nil, errorf(bad, "record %s: signer's certificate: %w", label, err)
	}
	if !checkSignature(m.Cert.PublicKey, rec.signedBytes(), rec.Sig) {
		return nil, errorf(bad, "record %s: signature does not verify with the key of %q (%s): tampered with, or signed by another key", label, m.Name, m.Address)
	}
	if v.claims[rec.Namespace] {
		self := m.Address.String()
		n := rec.Name
		if len(n) < len(self) || n[:len(self)] != self || (len(n) > len(self) && n[len(self)] != '/') {
			return nil, errorf(bad, "record %s is a claim about another node: signed by %q (%s); only a node may sign claims about itself, named by its address", label, m.Name, m.Address)
		}
	}
	return m, nil
}

// signer returns the member whose certificate signs rec.
func (v *recordVerifier) signer(rec *SignedRecord, now time.Time) (*security.Member, error) {
	if v.bundle != nil {
		return v.bundle.VerifyMember(rec.Cert, now)
	}
	leaf, err := x509.ParseCertificate(rec.Cert[0])
	if err != nil {
		return nil, err
	}
	return security.ParseMember(leaf)
}
