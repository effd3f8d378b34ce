package transport

import "sync/atomic"

// Stats counts what a Mux received and why it dropped what it dropped.
type Stats struct {
	Datagrams   uint64 `json:"datagrams"`    // read from the socket
	Sealed      uint64 `json:"sealed"`       // sealed records handed to a pipe
	Control     uint64 `json:"control"`      // DTLS records handed to a pipe
	Accepted    uint64 `json:"accepted"`     // sessions opened by a peer's ClientHello
	Glare       uint64 `json:"glare"`        // simultaneous opens resolved
	ReadErrors  uint64 `json:"read_errors"`  // socket read errors
	Garbage     uint64 `json:"garbage"`      // first byte neither DTLS nor sealed
	Short       uint64 `json:"short"`        // too short for its header
	UnknownID   uint64 `json:"unknown_id"`   // connection ID of no session
	NoSession   uint64 `json:"no_session"`   // DTLS record, no session, not a ClientHello
	PendingFull uint64 `json:"pending_full"` // ClientHello beyond max_pending
	QueueFull   uint64 `json:"queue_full"`   // control queue of a pipe full
	GlareDrop   uint64 `json:"glare_drop"`   // the peer's ClientHello lost a simultaneous open
	Detached    uint64 `json:"detached"`     // DTLS record for a pipe whose engine is gone
	NoHandler   uint64 `json:"no_handler"`   // sealed record before the session was ready
	Flushes     uint64 `json:"flushes"`      // batches of held-back datagrams sent
	Flushed     uint64 `json:"flushed"`      // datagrams sent in those batches
	WriteErrors uint64 `json:"write_errors"` // batches the socket failed to send
}

// Dropped is the sum of all drop counters.
func (s Stats) Dropped() uint64 {
	return s.Garbage + s.Short + s.UnknownID + s.NoSession + s.PendingFull +
		s.QueueFull + s.GlareDrop + s.Detached + s.NoHandler
}

type counters struct {
	datagrams, sealed, control, accepted, glare, readErrors atomic.Uint64
	dropGarbage, dropShort, dropUnknownID, dropNoSession    atomic.Uint64
	dropPendingFull, dropQueueFull, dropGlare, dropDetached atomic.Uint64
	dropNoHandler                                           atomic.Uint64
	flushes, flushed, writeErrors                           atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Datagrams: c.datagrams.Load(), Sealed: c.sealed.Load(), Control: c.control.Load(),
		Accepted: c.accepted.Load(), Glare: c.glare.Load(), ReadErrors: c.readErrors.Load(),
		Garbage: c.dropGarbage.Load(), Short: c.dropShort.Load(), UnknownID: c.dropUnknownID.Load(),
		NoSession: c.dropNoSession.Load(), PendingFull: c.dropPendingFull.Load(),
		QueueFull: c.dropQueueFull.Load(), GlareDrop: c.dropGlare.Load(),
		Detached: c.dropDetached.Load(), NoHandler: c.dropNoHandler.Load(),
		Flushes: c.flushes.Load(), Flushed: c.flushed.Load(), WriteErrors: c.writeErrors.Load(),
	}
}
