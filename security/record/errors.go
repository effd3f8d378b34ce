package record

import "errors"

// Errors returned by this package. Open returns them unwrapped so that the
// packet path can compare and count them without allocating.
var (
	// ErrShort reports a record shorter than [Overhead].
	ErrShort = errors.New("record: record too short")
	// ErrType reports a record whose first byte is not [TypeByte].
	ErrType = errors.New("record: not a sealed record")
	// ErrConnID reports a record addressed to another connection ID.
	ErrConnID = errors.New("record: wrong receiver connection id")
	// ErrReplay reports a sequence number that was already accepted.
	ErrReplay = errors.New("record: replayed sequence number")
	// ErrTooOld reports a sequence number that fell behind the replay
	// window; it may or may not have been seen.
	ErrTooOld = errors.New("record: sequence number older than the replay window")
	// ErrAuth reports a record whose tag did not verify: it was forged,
	// corrupted, or sealed under another key.
	ErrAuth = errors.New("record: authentication failed")
	// ErrExhausted reports that a Sealer has used every sequence number;
	// the link must be rekeyed.
	ErrExhausted = errors.New("record: sequence numbers exhausted")
	// ErrKey reports key material of the wrong length.
	ErrKey = errors.New("record: bad key material")
	// ErrWindowSize reports a replay window size that is not a multiple of
	// 64 in [MinWindow, MaxWindow].
	ErrWindowSize = errors.New("record: bad replay window size")
)
