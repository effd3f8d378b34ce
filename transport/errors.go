package transport

import "errors"

var (
	// ErrGlare reports that a dialed session lost a simultaneous open: the
	// peer dialed us at the same moment and its handshake won, so the
	// session continues as the one the peer opened.
	ErrGlare = errors.New("transport: simultaneous open resolved in the peer's favour")
	// ErrReplaced reports that a handshaking session was abandoned because
	// the peer started a new one from the same address.
	ErrReplaced = errors.New("transport: peer restarted its handshake")
)
