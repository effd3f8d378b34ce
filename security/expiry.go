package security

import (
	"time"

	"go.uber.org/zap"
)

// ValidUntil is the last instant the member's certificate is valid: its
// own NotAfter or, if earlier, its CA's (known for members verified
// against a trust bundle).
func (m *Member) ValidUntil() time.Time {
	if !m.CANotAfter.IsZero() && m.CANotAfter.Before(m.NotAfter) {
		return m.CANotAfter
	}
	return m.NotAfter
}

// expiredError returns the error a link to m closes with once m has
// expired at now, or nil while m is valid. A certificate is valid up to
// and including its NotAfter (as VerifyMember has it); the link closes at
// that instant, so that no link outlives the validity of its peer.
func expiredError(m *Member, now time.Time) error {
	until := m.ValidUntil()
	if until.IsZero() || now.Before(until) {
		return nil
	}
	label := certLabel(m.Cert)
	if until.Equal(m.NotAfter) {
		return errorf(ErrExpired, "%s expired at %s", label, fmtTime(until))
	}
	return errorf(ErrExpired, "CA %q that issued %s expired at %s", m.CAName, label, fmtTime(until))
}

// Links close when their peer's certificate or its CA expires. Each link
// has one timer, armed when the link starts (and re-armed when a rekey
// brings a renewed certificate) for the peer's expiry: a runtime timer is
// a heap entry, not a goroutine, and the link closes at the instant of
// expiry rather than at the next sweep. Go timers run on the monotonic
// clock, which stops while the machine sleeps, whereas validity is wall
// clock time; so the timer re-checks the wall clock when it fires, and
// the link's keepalive tick checks it too, which bounds the lateness after
// a suspend or a clock step to one keepalive interval.

// onExpiry runs when the peer's validity ends, by the monotonic clock.
func (l *Link) onExpiry() {
	now := time.Now()
	err := l.peerExpired(now)
	if err == nil { // renewed by a rekey, or the wall clock lags
		l.mu.Lock()
		if until := l.Peer().ValidUntil(); l.closeErr == nil && !until.IsZero() {
			l.expiry.Reset(until.Sub(now))
		}
		l.mu.Unlock()
		return
	}
	l.closeWith(err, true)
}

// peerExpired returns why the link must close for its peer's expiry at
// now, or nil.
func (l *Link) peerExpired(now time.Time) error {
	return expiredError(l.Peer(), now)
}

// expiryWarnings logs a warning for the identity's certificate and for
// its CA if either expires within ahead of now (or has expired), and for
// each revocation list of revs past its nextUpdate. It returns when to
// check again: in a day, or when the next credential enters its warning
// window, if sooner.
func expiryWarnings(log *zap.Logger, id *Identity, revs *Revocations, now time.Time, ahead time.Duration) time.Time {
	next := now.Add(24 * time.Hour)
	check := func(what, name string, until time.Time, fix string) {
		if until.IsZero() {
			return
		}
		left := until.Sub(now)
		switch {
		case left < 0:
			log.Error(what+" has expired", zap.String("name", name), zap.Time("expired", until), zap.String("fix", fix))
		case left <= ahead:
			log.Warn(what+" expires soon", zap.String("name", name), zap.Time("expires", until),
				zap.Duration("in", left.Round(time.Minute)), zap.String("fix", fix))
		default:
			if at := until.Add(-ahead); at.Before(next) {
				next = at
			}
		}
	}
	m := id.Member
	check("member certificate", m.Name, m.NotAfter,
		"issue a new one with `ringvpn cert issue` and restart; peers refuse an expired certificate")
	check("CA certificate", m.CAName, m.CANotAfter,
		"rotate the CA: create a new one with `ringvpn ca init`, put both in identity.ca, and reissue the members")
	for _, crl := range revs.Stale(now) {
		log.Warn("revocation list is past its next update", zap.String("ca", crl.Issuer.CommonName),
			zap.String("number", crl.Number.String()), zap.Time("next_update", crl.NextUpdate),
			zap.String("fix", "the list stays in force; re-sign it with `ringvpn ca revoke` and publish it"))
	}
	return next
}
