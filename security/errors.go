package security

import (
	"errors"
	"fmt"
)

// Sentinel errors. The errors returned by this package wrap them with detail
// that names the certificate and the cause; test for them with errors.Is.
var (
	// ErrUnknownCA means a certificate was issued by a CA that is not in the
	// trust bundle.
	ErrUnknownCA = errors.New("certificate issued by a CA that is not in the trust bundle")
	// ErrBadSignature means a certificate names a trusted CA as its issuer
	// but its signature does not verify with that CA's key.
	ErrBadSignature = errors.New("certificate signature does not verify")
	// ErrExpired means a certificate, or the CA that issued it, has expired.
	ErrExpired = errors.New("certificate has expired")
	// ErrNotYetValid means a certificate, or the CA that issued it, is not
	// valid yet.
	ErrNotYetValid = errors.New("certificate is not yet valid")
	// ErrAddressMismatch means a certificate claims an overlay address that
	// is not the hash of its public key.
	ErrAddressMismatch = errors.New("overlay address does not match the certificate's key")
	// ErrNoMemberExtension means a certificate has no ringvpn member
	// extension.
	ErrNoMemberExtension = errors.New("certificate has no ringvpn member extension")
	// ErrBadMemberExtension means a certificate's member extension is
	// malformed or holds invalid values.
	ErrBadMemberExtension = errors.New("malformed ringvpn member extension")
	// ErrBadCertificate means a certificate can't be parsed or is not shaped
	// like a member certificate (a CA certificate, wrong key usage, an
	// unsupported key type, an unknown critical extension).
	ErrBadCertificate = errors.New("not a valid ringvpn member certificate")
	// ErrKeyMismatch means a private key does not belong to the certificate
	// it was paired with.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrRevoked means a certificate is listed in a revocation list of the
	// CA that issued it.
	ErrRevoked = errors.New("certificate has been revoked")
	// ErrBadRevocationList means a revocation list can't be parsed, or is
	// not shaped like a list ringvpn can apply (no CRL number, a delta or
	// partitioned list, an unknown critical extension).
	ErrBadRevocationList = errors.New("not a valid revocation list")
	// ErrStaleRevocationList means a revocation list is not newer than the
	// one already held for its CA, and was ignored. Lists travel between
	// members, so old ones arrive as a matter of course: this is not a
	// fault of the list.
	ErrStaleRevocationList = errors.New("revocation list is not newer than the one held")
)

// detailError is an error with its own message that wraps a sentinel (and
// possibly an underlying cause), so that messages read naturally while
// errors.Is still works.
type detailError struct {
	msg  string
	errs []error
}

func (e *detailError) Error() string   { return e.msg }
func (e *detailError) Unwrap() []error { return e.errs }

// errorf returns an error whose message is fmt.Sprintf(format, args...) and
// which wraps sentinel and any %w operands in args.
func errorf(sentinel error, format string, args ...any) error {
	inner := fmt.Errorf(format, args...)
	return &detailError{msg: inner.Error(), errs: []error{sentinel, inner}}
}

// wrapDetail returns an error with message msg that wraps err (and so
// everything err wraps).
func wrapDetail(err error, msg string) error {
	return &detailError{msg: msg, errs: []error{err}}
}
