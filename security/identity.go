package security

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Key kinds, as accepted by GenerateKey and the --key-type flags.
const (
	KeyKindECDSAP256 = "ecdsa-p256" // the default
	KeyKindEd25519   = "ed25519"
)

// GenerateKey returns a new private key of the given kind: KeyKindECDSAP256
// (also for ""), or KeyKindEd25519.
func GenerateKey(kind string) (crypto.Signer, error) {
	switch kind {
	case "", KeyKindECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyKindEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	default:
		return nil, fmt.Errorf("unknown key type %q; use %q or %q", kind, KeyKindECDSAP256, KeyKindEd25519)
	}
}

// KeyKindOf returns the kind of a public key, or an error if ringvpn does not
// use keys of its type.
func KeyKindOf(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return KeyKindECDSAP256, nil
		}
		return "", fmt.Errorf("unsupported ECDSA curve %s; ringvpn uses P-256 or Ed25519 keys", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return KeyKindEd25519, nil
	default:
		return "", fmt.Errorf("unsupported key type %T; ringvpn uses ECDSA P-256 or Ed25519 keys", pub)
	}
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// Identity is a node's own identity: its private key and its verified
// member certificate.
type Identity struct {
	Key    crypto.Signer
	Cert   *x509.Certificate
	Member *Member
}

// NewIdentity pairs a private key with a member certificate, after checking
// that the key belongs to the certificate and that the certificate verifies
// against bundle at time now.
func NewIdentity(key crypto.Signer, cert *x509.Certificate, bundle *TrustBundle, now time.Time) (*Identity, error) {
	if key == nil || cert == nil {
		return nil, errors.New("identity needs a private key and a certificate")
	}
	if bundle == nil {
		return nil, errors.New("identity needs a trust bundle to verify its certificate")
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errorf(ErrKeyMismatch, "private key does not belong to %s", certLabel(cert))
	}
	m, err := bundle.verify(cert, now)
	if err != nil {
		return nil, err
	}
	return &Identity{Key: key, Cert: cert, Member: m}, nil
}

// LoadIdentity reads a member certificate and its private key (PEM files)
// and returns them as an Identity, checked as NewIdentity does.
func LoadIdentity(certPath, keyPath string, bundle *TrustBundle, now time.Time) (*Identity, error) {
	cert, err := ReadCertificate(certPath)
	if err != nil {
		return nil, err
	}
	key, err := ReadPrivateKey(keyPath)
	if err != nil {
		return nil, err
	}
	id, err := NewIdentity(key, cert, bundle, now)
	if err != nil {
		if errors.Is(err, ErrKeyMismatch) {
			return nil, errorf(ErrKeyMismatch, "private key %s does not belong to %s (%s)", keyPath, certLabel(cert), certPath)
		}
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	return id, nil
}

// TLSCertificate returns the identity as a tls.Certificate, the form
// pion/dtls takes in its Config.Certificates.
func (id *Identity) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{id.Cert.Raw},
		PrivateKey:  id.Key,
		Leaf:        id.Cert,
	}
}
