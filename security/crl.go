package security

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"
)

// pemCRL is the PEM block type of revocation lists (RFC 7468).
const pemCRL = "X509 CRL"

// reasonNames are the RFC 5280 CRLReason codes, by the names ringvpn uses
// (code 7 is unassigned).
var reasonNames = [...]string{
	0: "unspecified", 1: "key-compromise", 2: "ca-compromise", 3: "affiliation-changed",
	4: "superseded", 5: "cessation-of-operation", 6: "certificate-hold",
	8: "remove-from-crl", 9: "privilege-withdrawn", 10: "aa-compromise",
}

// RevocationReasons are the reasons a CA may give for revoking a member
// certificate with [CA.Revoke]: the RFC 5280 codes that mean a permanent
// revocation of a leaf certificate.
var RevocationReasons = []string{
	"unspecified", "key-compromise", "affiliation-changed", "superseded",
	"cessation-of-operation", "privilege-withdrawn",
}

// ReasonName names an RFC 5280 CRLReason code, like "key-compromise".
func ReasonName(code int) string {
	if knownReason(code) {
		return reasonNames[code]
	}
	return fmt.Sprintf("reason %d", code)
}

func knownReason(code int) bool {
	return code >= 0 && code < len(reasonNames) && reasonNames[code] != ""
}

// ParseReason returns the RFC 5280 code of one of RevocationReasons.
func ParseReason(name string) (int, error) {
	if slices.Contains(RevocationReasons, name) {
		return slices.Index(reasonNames[:], name), nil
	}
	return 0, fmt.Errorf("unknown revocation reason %q; use one of %s", name, strings.Join(RevocationReasons, ", "))
}

// Revoke returns a new revocation list signed by ca: the entries of prev
// (nil for the CA's first list) followed by those of add, numbered one
// more than prev (1 for a first list), issued at thisUpdate, and due to be
// replaced by nextUpdate. A serial number that prev already lists keeps its
// first entry. prev must be a list of ca. Entries need a serial number and
// a revocation time; their reason is an RFC 5280 code (0: unspecified).
func (ca *CA) Revoke(prev *x509.RevocationList, add []x509.RevocationListEntry, thisUpdate, nextUpdate time.Time) (*x509.RevocationList, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("revoke: CA has no certificate or no key")
	}
	label := caLabel(ca.Cert)
	if !publicKeysEqual(ca.Key.Public(), ca.Cert.PublicKey) {
		return nil, errorf(ErrKeyMismatch, "revoke: the CA's private key does not belong to %s", label)
	}
	if len(ca.Cert.SubjectKeyId) == 0 {
		return nil, fmt.Errorf("revoke: %s has no subject key identifier, which revocation lists need; make a new CA with `ringvpn ca init`", label)
	}
	thisUpdate, nextUpdate = thisUpdate.UTC().Truncate(time.Second), nextUpdate.UTC().Truncate(time.Second)
	if !nextUpdate.After(thisUpdate) {
		return nil, fmt.Errorf("revoke: next update (%s) is not after this update (%s)", fmtTime(nextUpdate), fmtTime(thisUpdate))
	}
	number := big.NewInt(1)
	var entries []x509.RevocationListEntry
	seen := map[string]bool{}
	keep := func(e x509.RevocationListEntry) error {
		if e.SerialNumber == nil || e.SerialNumber.Sign() <= 0 {
			return fmt.Errorf("revoke: serial number %v is not a positive number", e.SerialNumber)
		}
		if e.RevocationTime.IsZero() {
			return fmt.Errorf("revoke: serial %x has no revocation time", e.SerialNumber)
		}
		if !knownReason(e.ReasonCode) {
			return fmt.Errorf("revoke: serial %x: %d is not an RFC 5280 reason code", e.SerialNumber, e.ReasonCode)
		}
		k := string(e.SerialNumber.Bytes())
		if seen[k] {
			return nil
		}
		seen[k] = true
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   e.SerialNumber,
			RevocationTime: e.RevocationTime.UTC().Truncate(time.Second),
			ReasonCode:     e.ReasonCode,
		})
		return nil
	}
	if prev != nil {
		if err := prev.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, errorf(ErrBadSignature, "revoke: %s is not signed by %s: %w", crlLabel(prev), label, err)
		}
		if prev.Number == nil {
			return nil, errorf(ErrBadRevocationList, "revoke: %s has no CRL number", crlLabel(prev))
		}
		number.Add(prev.Number, number)
		for _, e := range prev.RevokedCertificateEntries {
			if err := keep(e); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range add {
		if err := keep(e); err != nil {
			return nil, err
		}
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("revoke: sign revocation list of %s: %w", label, err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("revoke: parse new revocation list: %w", err)
	}
	return crl, nil
}

// DecodeRevocationListsPEM returns the DER form of every "X509 CRL" PEM
// block of data. Data with no PEM block at all is taken as one DER list.
func DecodeRevocationListsPEM(data []byte) ([][]byte, error) {
	var ders [][]byte
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemCRL:
			ders = append(ders, block.Bytes)
		case pemCertificate:
			return nil, errorf(ErrBadRevocationList, "PEM block %d is a certificate, not a revocation list", n)
		case pemPrivateKey, pemECKey:
			return nil, errorf(ErrBadRevocationList, "PEM block %d is a private key, not a revocation list", n)
		default:
			return nil, errorf(ErrBadRevocationList, "PEM block %d is a %q, want %q", n, block.Type, pemCRL)
		}
	}
	if len(ders) == 0 {
		if len(data) > 0 && data[0] == 0x30 { // an ASN.1 SEQUENCE: DER
			return [][]byte{data}, nil
		}
		return nil, errorf(ErrBadRevocationList, "no revocation list found (want PEM %q blocks, as `ringvpn ca revoke` writes)", pemCRL)
	}
	return ders, nil
}

// ReadRevocationLists reads a file of one or more revocation lists (PEM
// "X509 CRL" blocks, or one DER list) and returns them parsed, without
// checking who signed them.
func ReadRevocationLists(path string) ([]*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read revocation list: %w", err)
	}
	ders, err := DecodeRevocationListsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("read revocation list %s: %w", path, err)
	}
	crls := make([]*x509.RevocationList, len(ders))
	for i, der := range ders {
		if crls[i], err = parseRevocationList(der); err != nil {
			if len(ders) > 1 {
				return nil, fmt.Errorf("read revocation list %s: PEM block %d: %w", path, i+1, err)
			}
			return nil, fmt.Errorf("read revocation list %s: %w", path, err)
		}
	}
	return crls, nil
}

// WriteRevocationList writes crl to path as a PEM file with mode 0644,
// replacing the file atomically if it exists (a node reloading it reads
// either the old list or the new one, never a mix).
func WriteRevocationList(path string, crl *x509.RevocationList) error {
	return writePEM(path, &pem.Block{Type: pemCRL, Bytes: crl.Raw}, 0o644, true)
}
