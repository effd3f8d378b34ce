package dht

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap them with detail
// (the key, the node that answered, the cause); test with errors.Is.
var (
	// ErrNotFound means no live value is stored under the key.
	ErrNotFound = errors.New("dht: not found")
	// ErrExists means Create found a live value under the key, written by
	// someone else; the stored value was not changed.
	ErrExists = errors.New("dht: a live value already exists")
	// ErrRefused means the storing node refused the value; the error also
	// wraps the reason (ErrBadRecord, ErrTooLarge, ErrFull, ErrUnsigned or
	// ErrBadRequest).
	ErrRefused = errors.New("dht: refused by the storing node")
	// ErrBadRecord means a signed record does not verify: unknown CA, bad
	// signature, wrong key, expired, or a claim about another node.
	ErrBadRecord = errors.New("dht: signed record does not verify")
	// ErrTooLarge means a value is larger than dht.max_value_size.
	ErrTooLarge = errors.New("dht: value too large")
	// ErrFull means the storing node holds dht.max_items values already.
	ErrFull = errors.New("dht: store full")
	// ErrUnsigned means a plain value was offered to a DHT that stores
	// only signed records (one with a Verifier).
	ErrUnsigned = errors.New("dht: only signed records are accepted")
	// ErrBadRequest means a request is malformed or out of bounds (a TTL
	// beyond dht.max_ttl, an expiry in the past).
	ErrBadRequest = errors.New("dht: bad request")
	// ErrTimeout means no answer came after every retry.
	ErrTimeout = errors.New("dht: no answer")
	// ErrClosed means the DHT (or its node) was closed.
	ErrClosed = errors.New("dht: closed")
	// ErrMalformed means bytes from the network do not decode.
	ErrMalformed = errors.New("dht: malformed message")
)

// detailError is an error with its own message that wraps sentinels (and
// any %w operand), so messages read naturally while errors.Is works.
type detailError struct {
	msg  string
	errs []error
}

func (e *detailError) Error() string   { return e.msg }
func (e *detailError) Unwrap() []error { return e.errs }

// errorf returns an error reading fmt.Sprintf(format, args...) that wraps
// the sentinels and any %w operands of args.
func errorf(sentinels []error, format string, args ...any) error {
	inner := fmt.Errorf(format, args...)
	errs := append(sentinels[:len(sentinels):len(sentinels)], inner)
	return &detailError{msg: inner.Error(), errs: errs}
}

// one is a sentinel list of one.
func one(sentinel error) []error { return []error{sentinel} }
