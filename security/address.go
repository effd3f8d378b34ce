package security

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// AddressLen is the length of an overlay address in bytes (160 bits).
const AddressLen = 20

// Address is a node's overlay address: the first 160 bits of SHA-256 over
// the DER SubjectPublicKeyInfo of the node's public key. It is a comparable
// value type, usable as a map key. The zero Address is not the address of
// any key one could hope to find.
type Address [AddressLen]byte

// AddressOf returns the overlay address of a public key (*ecdsa.PublicKey,
// ed25519.PublicKey, or any key x509.MarshalPKIXPublicKey accepts).
func AddressOf(pub crypto.PublicKey) (Address, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Address{}, fmt.Errorf("overlay address of %T key: %w", pub, err)
	}
	sum := sha256.Sum256(der)
	var a Address
	copy(a[:], sum[:AddressLen])
	return a, nil
}

// ParseAddress parses the 40-digit hexadecimal form of an address (as
// written by String; upper case digits are accepted too).
func ParseAddress(s string) (Address, error) {
	var a Address
	if len(s) != 2*AddressLen {
		return a, fmt.Errorf("overlay address %q: want %d hex digits, got %d characters", s, 2*AddressLen, len(s))
	}
	if _, err := hex.Decode(a[:], []byte(s)); err != nil {
		return Address{}, fmt.Errorf("overlay address %q: %w", s, err)
	}
	return a, nil
}

// String returns the address as 40 lowercase hexadecimal digits.
func (a Address) String() string {
	return hex.EncodeToString(a[:])
}

// IsZero reports whether a is the zero address.
func (a Address) IsZero() bool {
	return a == Address{}
}

// Compare returns -1, 0 or +1 as a sorts before, equal to or after b as a
// big-endian unsigned number.
func (a Address) Compare(b Address) int {
	return bytes.Compare(a[:], b[:])
}

// MarshalText implements encoding.TextMarshaler, using the String form.
func (a Address) MarshalText() ([]byte, error) {
	b := make([]byte, 2*AddressLen)
	hex.Encode(b, a[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler, using ParseAddress. An
// empty text yields the zero address, like the net/netip types.
func (a *Address) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*a = Address{}
		return nil
	}
	p, err := ParseAddress(string(text))
	if err != nil {
		return err
	}
	*a = p
	return nil
}
