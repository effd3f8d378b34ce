package dht

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

// NamespaceNode is the namespace of records that claim something about a
// node (its virtual IP, its name, its endpoints). Their Name is the node's
// overlay address (see ClaimName), and only that node may sign them.
const NamespaceNode = "node"

// Limits of a SignedRecord.
const (
	MaxNamespaceLen  = 64   // bytes; letters, digits, '.', '-', '_'
	MaxRecordNameLen = 255  // bytes of UTF-8
	MaxCerts         = 2    // certificates in Cert; the first is the signer's
	MaxChainLen      = 3072 // bytes of DER, all certificates together
	MaxSigLen        = 255  // bytes
)

// sigContext separates record signatures from every other use of a
// member's key.
const sigContext = "ringvpn dht record v1\x00"

// SignedRecord is a value signed by a group member: a claim about itself
// (namespace "node") or a value in a namespace of the layers above. It is
// stored under KeyOf(Namespace, Name).
//
// Encoded (MarshalBinary, ParseRecord):
//
//	version (1) | ns len (1) | namespace | name len (1) | name
//	expires (8, Unix ns) | value len (2) | value
//	cert count (1) | count x ( cert len (2) | DER ) | sig len (1) | sig
//
// The signature covers sigContext and the fields from the namespace to the
// value, encoded as above; the certificate chain is not signed (it is the
// key's proof, checked against the group CA).
type SignedRecord struct {
	Namespace string
	Name      string
	Value     []byte
	Expires   time.Time
	// Cert is the signer's certificate chain, DER, leaf first.
	Cert [][]byte
	// Sig is an ECDSA (ASN.1, over SHA-256) or Ed25519 signature.
	Sig []byte
}

// KeyOf is the DHT key of a record: the first 160 bits of SHA-256 over
// the namespace and the name, each preceded by its length (2 bytes, big
// endian).
func KeyOf(namespace, name string) overlay.Address {
	h := sha256.New()
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(namespace)))
	h.Write(l[:])
	h.Write([]byte(namespace))
	binary.BigEndian.PutUint16(l[:], uint16(len(name)))
	h.Write(l[:])
	h.Write([]byte(name))
	var a overlay.Address
	copy(a[:], h.Sum(nil))
	return a
}

// ClaimName is the Name of a claim about node: its address in the
// 40-digit form Address.String writes, then "/" and sub if sub is not
// empty ("<address>/vip").
func ClaimName(node overlay.Address, sub string) string {
	if sub == "" {
		return node.String()
	}
	return node.String() + "/" + sub
}

// Sign returns a record of value under namespace/name, valid until
// expires, signed by id's key and carrying id's certificate.
func Sign(id *security.Identity, namespace, name string, value []byte, expires time.Time) (*SignedRecord, error) {
	if id == nil || id.Key == nil || id.Cert == nil {
		return nil, errors.New("dht: sign: identity needs a key and a certificate")
	}
	rec := &SignedRecord{
		Namespace: namespace,
		Name:      name,
		Value:     slices.Clone(value),
		Expires:   time.Unix(0, expires.UnixNano()),
		Cert:      [][]byte{slices.Clone(id.Cert.Raw)},
	}
	if err := rec.check(); err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	if expires.IsZero() {
		return nil, fmt.Errorf("dht: sign %s: no expiry", rec.label())
	}
	msg := rec.signedBytes()
	var err error
	switch id.Key.Public().(type) {
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		rec.Sig, err = id.Key.Sign(rand.Reader, d[:], crypto.SHA256)
	case ed25519.PublicKey:
		rec.Sig, err = id.Key.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("dht: sign %s: unsupported key type %T; use ECDSA P-256 or Ed25519", rec.label(), id.Key.Public())
	}
	if err != nil {
		return nil, fmt.Errorf("dht: sign %s: %w", rec.label(), err)
	}
	if len(rec.Sig) > MaxSigLen {
		return nil, fmt.Errorf("dht: sign %s: signature of %d bytes", rec.label(), len(rec.Sig))
	}
	return rec, nil
}

// Key is the record's DHT key, KeyOf(Namespace, Name).
func (r *SignedRecord) Key() overlay.Address { return KeyOf(r.Namespace, r.Name) }

// label names the record in messages.
func (r *SignedRecord) label() string {
	return fmt.Sprintf("%q", r.Namespace+"/"+r.Name)
}

// check verifies the record's shape: the lengths the encoding allows.
func (r *SignedRecord) check() error {
	if err := checkNamespace(r.Namespace); err != nil {
		return err
	}
	if r.Name == "" || len(r.Name) > MaxRecordNameLen || !utf8.ValidString(r.Name) {
		return fmt.Errorf("record name %q: want 1 to %d bytes of UTF-8", r.Name, MaxRecordNameLen)
	}
	if len(r.Value) > MaxValueLimit {
		return fmt.Errorf("record %s: value of %d bytes, at most %d are allowed", r.label(), len(r.Value), MaxValueLimit)
	}
	if y := r.Expires.Year(); y < 1970 || y > 2200 {
		return fmt.Errorf("record %s: expiry %s out of range", r.label(), r.Expires.UTC().Format(time.RFC3339))
	}
	if len(r.Cert) == 0 || len(r.Cert) > MaxCerts {
		return fmt.Errorf("record %s: %d certificates, want 1 to %d", r.label(), len(r.Cert), MaxCerts)
	}
	total := 0
	for _, c := range r.Cert {
		if len(c) == 0 {
			return fmt.Errorf("record %s: empty certificate", r.label())
		}
		total += len(c)
	}
	if total > MaxChainLen {
		return fmt.Errorf("record %s: certificate chain of %d bytes, at most %d are allowed", r.label(), total, MaxChainLen)
	}
	if len(r.Sig) > MaxSigLen {
		return fmt.Errorf("record %s: signature of %d bytes, at most %d are allowed", r.label(), len(r.Sig), MaxSigLen)
	}
	return nil
}

func checkNamespace(ns string) error {
	if ns == "" || len(ns) > MaxNamespaceLen {
		return fmt.Errorf("namespace %q: want 1 to %d bytes", ns, MaxNamespaceLen)
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '-' || c == '_') && i > 0:
		default:
			return fmt.Errorf("namespace %q: use letters, digits, '.', '-' and '_', starting with a letter or digit", ns)
		}
	}
	return nil
}

// appendSigned appends the signed part of the record: namespace to value.
func (r *SignedRecord) appendSigned(b []byte) []byte {
	b = append(b, byte(len(r.Namespace)))
	b = append(b, r.Namespace...)
	b = append(b, byte(len(r.Name)))
	b = append(b, r.Name...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Expires.UnixNano()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Value)))
	return append(b, r.Value...)
}

// signedBytes is what the signature covers.
func (r *SignedRecord) signedBytes() []byte {
	b := make([]byte, 0, len(sigContext)+4+len(r.Namespace)+len(r.Name)+8+len(r.Value))
	b = append(b, sigContext...)
	return r.appendSigned(b)
}

// MarshalBinary encodes the record (see SignedRecord for the layout).
func (r *SignedRecord) MarshalBinary() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("dht: encode record: %w", err)
	}
	b := make([]byte, 0, 16+len(r.Namespace)+len(r.Name)+len(r.Value)+MaxSigLen+len(r.Cert)*2048)
	b = append(b, WireVersion)
	b = r.appendSigned(b)
	b = append(b, byte(len(r.Cert)))
	for _, c := range r.Cert {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		b = append(b, c...)
	}
	b = append(b, byte(len(r.Sig)))
	return append(b, r.Sig...), nil
}

// UnmarshalBinary decodes a record; see ParseRecord.
func (r *SignedRecord) UnmarshalBinary(b []byte) error {
	p, err := ParseRecord(b)
	if err != nil {
		return err
	}
	*r = *p
	return nil
}

// ParseRecord decodes an encoded record and checks its shape (not its
// signature: see Verifier). The result shares no memory with b.
func ParseRecord(b []byte) (*SignedRecord, error) {
	rd := reader{b: b}
	if rd.u8() != WireVersion {
		return nil, fmt.Errorf("%w: record of an unknown version", ErrMalformed)
	}
	r := &SignedRecord{}
	r.Namespace = string(rd.take(int(rd.u8())))
	r.Name = string(rd.take(int(rd.u8())))
	r.Expires = time.Unix(0, int64(rd.u64()))
	r.Value = slices.Clone(rd.take(int(rd.u16())))
	n := int(rd.u8())
	if n > MaxCerts {
		rd.fail()
	}
	for range n {
		c := rd.take(int(rd.u16()))
		if rd.err != nil {
			break
		}
		r.Cert = append(r.Cert, slices.Clone(c))
	}
	r.Sig = slices.Clone(rd.take(int(rd.u8())))
	if err := rd.done(); err != nil {
		return nil, fmt.Errorf("%w: truncated or overlong record", ErrMalformed)
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, nil
}

// checkSignature verifies sig over msg with pub.
func checkSignature(pub crypto.PublicKey, msg, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(k, d[:], sig)
	case ed25519.PublicKey:
		return len(k) == ed25519.PublicKeySize && ed25519.Verify(k, msg, sig)
	default:
		return false
	}
}
