package simnet

import (
	"fmt"

	"github.com/ringvpn/ringvpn/security"
)

// SetRevocations makes the node apply r as a DTLS endpoint does
// (security.Endpoint.SetRevocations): a handshake with a peer whose
// certificate r revokes fails (Dial returns an error wrapping
// ErrRefused; the peer's Accept never sees it), and links to such peers
// close, those open now and, from then on, whenever r changes. Members
// without a certificate (Member.Cert nil) are never revoked. nil turns
// the checks off. A Linker closed or crashed ignores it.
func (l *Linker) SetRevocations(r *security.Revocations) {
	f := l.f
	f.mu.Lock()
	if l.revStop != nil {
		l.revStop()
		l.revStop = nil
	}
	l.revs.Store(r)
	if r != nil && l.state == nodeOpen {
		l.revStop = r.OnChange(l.sweepRevoked)
	}
	f.mu.Unlock()
	l.sweepRevoked()
}

// revokedPeer returns why l refuses peer, or nil. It takes no lock.
func (l *Linker) revokedPeer(peer *Linker) error {
	r := l.revs.Load()
	if r == nil || peer.self.Cert == nil {
		return nil
	}
	return r.Check(peer.self.Cert)
}

// refusedLocked returns why the handshake between a and b fails, or nil.
// Fabric.mu is held.
func refusedLocked(a, b *Linker) error {
	if err := a.revokedPeer(b); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if err := b.revokedPeer(a); err != nil {
		return fmt.Errorf("%w by %s: %w", ErrRefused, b.self.Name, err)
	}
	return nil
}

// sweepRevoked closes every link of l whose peer is revoked, telling the
// peer.
func (l *Linker) sweepRevoked() {
	f := l.f
	var doomed []*Link
	f.mu.Lock()
	if l.state == nodeOpen {
		for _, k := range l.links {
			if l.revokedPeer(k.peer.owner) != nil {
				doomed = append(doomed, k)
			}
		}
	}
	f.mu.Unlock()
	for _, k := range doomed {
		k.Close()
	}
}
