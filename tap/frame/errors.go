package frame

import (
	"errors"
	"fmt"
)

// Sentinels that every *Error unwraps to, so callers can count drops by
// reason with errors.Is.
var (
	// ErrTruncated: the input ends before a length it declares.
	ErrTruncated = errors.New("truncated")
	// ErrMalformed: a field holds a value the protocol forbids.
	ErrMalformed = errors.New("malformed")
	// ErrUnsupported: valid on the wire, but not something this package
	// handles (a second VLAN tag, an ARP for another protocol, ...).
	ErrUnsupported = errors.New("unsupported")
	// ErrSuppressed: a builder declined to answer a packet because the
	// RFCs forbid a reply to it (an ICMP error about an ICMP error, a
	// packet from a broadcast address, ...). Drop the packet silently.
	ErrSuppressed = errors.New("suppressed")
)

// Error says why a parser refused its input, e.g. "ipv4: header length 12
// below 20". Its message is formatted only when asked for, so refusing a
// packet costs one small allocation and no formatting.
type Error struct {
	// Layer is the protocol that was being parsed: "ethernet", "arp",
	// "ipv4", "ipv6", "icmp", "icmpv6" or "tcp".
	Layer string

	format string // constant text with len(args) %d or %#04x verbs
	args   [2]int
	nargs  int
	kind   error
}

// errorf returns an *Error; format holds at most two verbs, each with an
// int from args.
func errorf(kind error, layer, format string, args ...int) *Error {
	e := &Error{Layer: layer, format: format, kind: kind}
	e.nargs = copy(e.args[:], args)
	return e
}

func (e *Error) Error() string {
	var a [2]any
	for i := range e.nargs {
		a[i] = e.args[i]
	}
	return e.Layer + ": " + fmt.Sprintf(e.format, a[:e.nargs]...)
}

// Unwrap returns ErrTruncated, ErrMalformed, ErrUnsupported or
// ErrSuppressed.
func (e *Error) Unwrap() error { return e.kind }
