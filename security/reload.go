package security

import (
	"errors"
	"fmt"
	"time"
)

// ErrUntrusted: a link closed because a trust bundle that replaced the
// old one no longer trusts the peer's CA (see ReplaceTrustBundle).
var ErrUntrusted = errors.New("the trust bundle no longer trusts the peer")

// SetIdentity makes new handshakes (new links and rekeys) present id,
// a renewed certificate or a new one for the same key; open links keep
// the keys they have. The overlay address can't change: it is what peers
// know this node by, so a new key needs a restart.
func (e *Endpoint) SetIdentity(id *Identity) error {
	old := e.identity.Load()
	if id == nil {
		return errors.New("security: no identity")
	}
	if id.Member.Address != old.Member.Address {
		return fmt.Errorf("the new certificate is for overlay address %s, this node is %s (a new key makes a new node: restart it)",
			id.Member.Address, old.Member.Address)
	}
	e.identity.Store(id)
	return nil
}

// ReplaceTrustBundle makes b the CAs new handshakes trust, and closes the
// open links whose peers b does not accept (their CA left the bundle);
// the others stay up. It reports how many closed.
func (e *Endpoint) ReplaceTrustBundle(b *TrustBundle, now time.Time) int {
	e.SetTrustBundle(b)
	closed := 0
	for _, l := range e.Links() {
		m := l.Peer()
		if m == nil || m.Cert == nil {
			continue
		}
		if _, err := b.VerifyMember([][]byte{m.Cert.Raw}, now); err != nil {
			l.closeWith(fmt.Errorf("%w: %w", ErrUntrusted, err), true)
			closed++
		}
	}
	return closed
}
