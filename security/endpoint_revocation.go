package security

// SetRevocations makes the endpoint apply r: handshakes (new links and
// rekeys) refuse peers whose certificates r revokes, with a "peer refused"
// log line that names the member and the revocation, and links to such
// peers close, those open now and, from then on, whenever r changes. nil
// turns revocation checks off. The links close on a goroutine of the
// endpoint, so r may change anywhere, even on a packet handler.
func (e *Endpoint) SetRevocations(r *Revocations) {
	e.mu.Lock()
	if e.revStop != nil {
		e.revStop()
		e.revStop = nil
	}
	e.revocations.Store(r)
	if r != nil && !e.isClosed {
		e.revStop = r.OnChange(e.queueSweep)
	}
	e.mu.Unlock()
	e.queueSweep()
}

// Revocations is what SetRevocations set, or nil.
func (e *Endpoint) Revocations() *Revocations { return e.revocations.Load() }

// queueSweep runs sweepRevoked on a goroutine unless one is already
// queued; a change during a sweep queues another.
func (e *Endpoint) queueSweep() {
	if e.revocations.Load() == nil || !e.sweepQueued.CompareAndSwap(false, true) {
		return
	}
	if !e.spawn(e.sweepRevoked) {
		e.sweepQueued.Store(false)
	}
}

// sweepRevoked closes every link whose peer is revoked, telling the peer.
// A link registered while the sweep runs checks itself (see register).
func (e *Endpoint) sweepRevoked() {
	e.sweepQueued.Store(false)
	r := e.revocations.Load()
	for _, l := range e.Links() {
		if err := r.Check(l.Peer().Cert); err != nil {
			l.closeWith(err, true)
		}
	}
}
