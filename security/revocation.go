package security

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Revocations holds the newest revocation list of each CA in a trust
// bundle and answers whether a certificate is revoked. The lists are
// standard X.509 v2 CRLs (RFC 5280), made by `ringvpn ca revoke` or
// [CA.Revoke], in DER form on the wire and PEM ("X509 CRL") in files.
//
// A list is taken by [Revocations.Add] only if
//   - it parses, has a CRL number, and carries no critical extension
//     (delta and partitioned lists, which cover only part of a CA's
//     revocations, are refused: taking one for the whole would undo
//     revocations);
//   - it is signed by a CA of the trust bundle whose name it carries;
//   - its number is higher than the number of the list held for that CA.
//     An older or equal list is ignored with [ErrStaleRevocationList], so
//     a replayed old list can't undo a revocation. Two different lists
//     with the same number (two operators revoking from the same list at
//     once) are ordered by their thisUpdate and then by their bytes, so
//     every member keeps the same one.
//
// NextUpdate is advisory. A list past its nextUpdate is still taken and
// stays in force: revocation lists only ever take access away, so refusing
// a stale list (or dropping one held when it goes stale) would let revoked
// members back in as soon as the CA operator is late re-signing. Instead
// [Revocations.Stale] reports such lists, and a node warns about them
// daily (see [Monitor]). Neither thisUpdate nor the CA's own validity
// matter for the same reason.
//
// A certificate is revoked if the list held for its issuer lists its
// serial number: certificates are identified by issuer name and serial,
// as RFC 5280 does. (Two CAs of one bundle may share a name during a
// rotation; their serials are random 128-bit numbers, so one can't hit the
// other's members.)
//
// Revocations is safe for concurrent use. Changes are serialised and
// published atomically as an immutable snapshot: Revoked and Check take no
// lock, and neither allocates for a certificate that is not revoked.
type Revocations struct {
	// mu serialises changes and guards the following
	mu     sync.Mutex
	bundle *TrustBundle
	hooks  []*func()

	state atomic.Pointer[revocationState] // never nil after NewRevocations
}

// revocationState is one immutable snapshot of the lists held.
type revocationState struct {
	lists []heldList
	// revoked: issuer (the CA's raw subject) -> serialKey -> entry
	revoked map[string]map[string]revocationEntry
}

type heldList struct {
	ca  *x509.Certificate
	crl *x509.RevocationList
}

type revocationEntry struct {
	at     time.Time
	reason int
	caName string
	number *big.Int
}

// Extensions of a CRL that a list must not have, even marked non-critical.
var (
	oidDeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
)

// NewRevocations returns an empty set of revocation lists that takes lists
// signed by the CAs of bundle (nil: none).
func NewRevocations(bundle *TrustBundle) *Revocations {
	r := &Revocations{bundle: bundle}
	r.state.Store(&revocationState{})
	return r
}

// Add takes one revocation list in DER form, as lists travel between
// members. It returns true if the list is now held for its CA (the first
// of that CA, or newer than the one held), false with a nil error if
// exactly this list is already held, and otherwise an error that wraps
// ErrBadRevocationList, ErrUnknownCA, ErrBadSignature or
// ErrStaleRevocationList and says why, for example
//
//	revocation list number 3 of CA "group-ca" is older than the one held (number 3 < 5); ignored
//
// The lists held do not change on error.
func (r *Revocations) Add(der []byte) (bool, error) {
	crl, err := parseRevocationList(der)
	if err != nil {
		return false, err
	}
	r.mu.Lock()
	changed, err := r.addLocked(crl)
	hooks := r.hooksIfLocked(changed)
	r.mu.Unlock()
	notify(hooks)
	return changed, err
}

// AddPEM takes every "X509 CRL" PEM block of data, as in a file from
// `ringvpn ca revoke` (one list per CA; several may be concatenated). It
// returns true if any list was taken. Errors name the block; a bad block
// does not stop the others from being taken.
func (r *Revocations) AddPEM(data []byte) (bool, error) {
	ders, err := DecodeRevocationListsPEM(data)
	if err != nil {
		return false, err
	}
	var (
		changed bool
		errs    []error
	)
	for i, der := range ders {
		c, err := r.Add(der)
		changed = changed || c
		if err != nil {
			if len(ders) > 1 {
				err = wrapDetail(err, fmt.Sprintf("PEM block %d: %s", i+1, err))
			}
			errs = append(errs, err)
		}
	}
	return changed, errors.Join(errs...)
}

// parseRevocationList parses der and checks the list's shape (not its
// signature).
func parseRevocationList(der []byte) (*x509.RevocationList, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, errorf(ErrBadRevocationList, "cannot parse revocation list: %w", err)
	}
	label := crlLabel(crl)
	if len(crl.Raw) != len(der) {
		return nil, errorf(ErrBadRevocationList, "%s is followed by %d bytes of trailing data", label, len(der)-len(crl.Raw))
	}
	if crl.Number == nil || crl.Number.Sign() < 0 {
		return nil, errorf(ErrBadRevocationList, "%s has no CRL number; ringvpn orders a CA's lists by it (make lists with `ringvpn ca revoke`)", label)
	}
	for _, ext := range crl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRLIndicator):
			return nil, errorf(ErrBadRevocationList, "%s is a delta list; ringvpn takes only complete lists", label)
		case ext.Id.Equal(oidIssuingDistributionPoint):
			return nil, errorf(ErrBadRevocationList, "%s is a partitioned list (issuing distribution point); ringvpn takes only complete lists", label)
		case ext.Critical:
			return nil, errorf(ErrBadRevocationList, "%s has a critical extension %s that ringvpn does not understand", label, ext.Id)
		}
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber == nil {
			return nil, errorf(ErrBadRevocationList, "%s has an entry without a serial number", label)
		}
		for _, ext := range e.Extensions {
			if ext.Critical {
				return nil, errorf(ErrBadRevocationList, "%s has an entry (serial %x) with a critical extension %s that ringvpn does not understand (an indirect list?)", label, e.SerialNumber, ext.Id)
			}
		}
	}
	return crl, nil
}

// addLocked verifies crl against the bundle and takes it if it is newer
// than the list held for its CA. r.mu is held.
func (r *Revocations) addLocked(crl *x509.RevocationList) (bool, error) {
	ca, err := r.bundle.signerOf(crl)
	if err != nil {
		return false, err
	}
	s := r.state.Load()
	i := slices.IndexFunc(s.lists, func(h heldList) bool { return h.ca == ca })
	if i >= 0 {
		held := s.lists[i].crl
		label := crlLabel(crl)
		switch c := crl.Number.Cmp(held.Number); {
		case c < 0:
			return false, errorf(ErrStaleRevocationList, "%s is older than the one held (number %s < %s); ignored", label, crl.Number, held.Number)
		case c == 0 && bytes.Equal(crl.Raw, held.Raw):
			return false, nil
		case c == 0 && !sameNumberWins(crl, held):
			return false, errorf(ErrStaleRevocationList, "%s differs from the list held with the same number, which wins (signed %s); ignored. Two lists were made from the same one: revoke again with `ringvpn ca revoke` on the list held to merge them",
				label, fmtTime(held.ThisUpdate))
		}
	}
	lists := slices.Clone(s.lists)
	if i >= 0 {
		lists[i].crl = crl
	} else {
		lists = append(lists, heldList{ca: ca, crl: crl})
	}
	r.state.Store(newRevocationState(lists))
	return true, nil
}

// sameNumberWins orders two different lists with the same number, the
// same way on every member: the later thisUpdate, then the larger
// SHA-256 of the bytes.
func sameNumberWins(crl, held *x509.RevocationList) bool {
	if !crl.ThisUpdate.Equal(held.ThisUpdate) {
		return crl.ThisUpdate.After(held.ThisUpdate)
	}
	a, b := sha256.Sum256(crl.Raw), sha256.Sum256(held.Raw)
	return bytes.Compare(a[:], b[:]) > 0
}

func newRevocationState(lists []heldList) *revocationState {
	s := &revocationState{lists: lists, revoked: make(map[string]map[string]revocationEntry)}
	for _, h := range lists {
		issuer := string(h.ca.RawSubject)
		bySerial := s.revoked[issuer]
		if bySerial == nil {
			bySerial = make(map[string]revocationEntry, len(h.crl.RevokedCertificateEntries))
			s.revoked[issuer] = bySerial
		}
		for _, e := range h.crl.RevokedCertificateEntries {
			var buf [serialKeyBuf]byte
			key := string(serialKey(e.SerialNumber, &buf))
			if _, dup := bySerial[key]; dup {
				continue
			}
			bySerial[key] = revocationEntry{at: e.RevocationTime, reason: e.ReasonCode, caName: h.ca.Subject.CommonName, number: h.crl.Number}
		}
	}
	return s
}

// signerOf finds the CA of the bundle that signed crl.
func (b *TrustBundle) signerOf(crl *x509.RevocationList) (*x509.Certificate, error) {
	label := crlLabel(crl)
	if b == nil {
		return nil, errorf(ErrUnknownCA, "%s can't be checked: no trust bundle", label)
	}
	var named []*x509.Certificate
	for _, ca := range b.cas {
		if !bytes.Equal(crl.RawIssuer, ca.RawSubject) {
			continue
		}
		if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCRLSign == 0 {
			named = append(named, ca)
			continue
		}
		if crl.CheckSignatureFrom(ca) == nil {
			return ca, nil
		}
		named = append(named, ca)
	}
	if len(named) > 0 {
		ca := named[0]
		if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCRLSign == 0 && len(named) == 1 {
			return nil, errorf(ErrBadSignature, "%s: %s may not sign revocation lists (no cRLSign key usage)", label, caLabel(ca))
		}
		return nil, errorf(ErrBadSignature, "%s names %s as its issuer, but its signature does not verify with that CA's key (tampered with, or signed by another CA of the same name)",
			label, caLabel(ca))
	}
	return nil, errorf(ErrUnknownCA, "%s is not signed by any CA in the trust bundle (trusted: %s)", label, quotedNames(b.cas))
}

// crlLabel names a revocation list in messages.
func crlLabel(crl *x509.RevocationList) string {
	if crl.Number != nil {
		return fmt.Sprintf("revocation list number %s of CA %q", crl.Number, crl.Issuer.CommonName)
	}
	return fmt.Sprintf("revocation list of CA %q", crl.Issuer.CommonName)
}

// serialKeyBuf is the longest serial number (in bytes) that serialKey
// encodes without allocating; RFC 5280 allows 20.
const serialKeyBuf = 64

// serialKey returns the map key of a serial number: its minimal big-endian
// bytes for a positive number (built in buf: no allocation), else a text
// form starting with a zero byte, which no positive number's key does.
func serialKey(n *big.Int, buf *[serialKeyBuf]byte) []byte {
	if n.Sign() > 0 {
		if l := (n.BitLen() + 7) / 8; l <= len(buf) {
			return n.FillBytes(buf[len(buf)-l:])
		}
	}
	return append([]byte{0}, n.String()...)
}

// Revoked reports whether cert is revoked by a list held. A nil
// Revocations revokes nothing.
func (r *Revocations) Revoked(cert *x509.Certificate) bool {
	_, ok := r.lookup(cert)
	return ok
}

// Check returns nil if cert is not revoked, else an error that wraps
// ErrRevoked and names the certificate, its CA, when and why, like
//
//	certificate of "alice" (serial 3f…) was revoked by CA "group-ca" at 2026-01-02T00:00:00Z (key-compromise; revocation list number 4)
func (r *Revocations) Check(cert *x509.Certificate) error {
	e, ok := r.lookup(cert)
	if !ok {
		return nil
	}
	return errorf(ErrRevoked, "%s (serial %x) was revoked by CA %q at %s (%s; revocation list number %s)",
		certLabel(cert), cert.SerialNumber, e.caName, fmtTime(e.at), ReasonName(e.reason), e.number)
}

func (r *Revocations) lookup(cert *x509.Certificate) (revocationEntry, bool) {
	if r == nil || cert == nil || cert.SerialNumber == nil {
		return revocationEntry{}, false
	}
	bySerial := r.state.Load().revoked[string(cert.RawIssuer)]
	if bySerial == nil {
		return revocationEntry{}, false
	}
	var buf [serialKeyBuf]byte
	e, ok := bySerial[string(serialKey(cert.SerialNumber, &buf))]
	return e, ok
}

// Lists returns the lists held, one per CA, in the order they were first
// taken: what a member publishes to the others (each list's Raw is its
// DER form, which Add takes). The lists must not be modified.
func (r *Revocations) Lists() []*x509.RevocationList {
	if r == nil {
		return nil
	}
	s := r.state.Load()
	out := make([]*x509.RevocationList, len(s.lists))
	for i, h := range s.lists {
		out[i] = h.crl
	}
	return out
}

// HeldList is one list held and the CA of the trust bundle that signed it.
type HeldList struct {
	CA   *x509.Certificate
	List *x509.RevocationList
}

// Held returns the lists held with their CAs, in the order of Lists. The
// certificates and lists must not be modified.
func (r *Revocations) Held() []HeldList {
	if r == nil {
		return nil
	}
	s := r.state.Load()
	out := make([]HeldList, len(s.lists))
	for i, h := range s.lists {
		out[i] = HeldList{CA: h.ca, List: h.crl}
	}
	return out
}

// TrustBundle returns the bundle whose CAs' lists are taken (nil: none).
func (r *Revocations) TrustBundle() *TrustBundle {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bundle
}

// Stale returns the lists held that are past their nextUpdate at now.
// They stay in force; their CA should re-sign them.
func (r *Revocations) Stale(now time.Time) []*x509.RevocationList {
	var out []*x509.RevocationList
	for _, crl := range r.Lists() {
		if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
			out = append(out, crl)
		}
	}
	return out
}

// SetTrustBundle replaces the CAs whose lists are taken. Lists of CAs no
// longer in b are dropped; the others are kept.
func (r *Revocations) SetTrustBundle(b *TrustBundle) {
	r.mu.Lock()
	r.bundle = b
	s := r.state.Load()
	var lists []heldList
	for _, h := range s.lists {
		if b == nil {
			break
		}
		// Keep pointers into the new bundle, which signerOf returns from
		// now on.
		if i := slices.IndexFunc(b.cas, h.ca.Equal); i >= 0 {
			lists = append(lists, heldList{ca: b.cas[i], crl: h.crl})
		}
	}
	changed := len(lists) != len(s.lists)
	r.state.Store(newRevocationState(lists))
	hooks := r.hooksIfLocked(changed)
	r.mu.Unlock()
	notify(hooks)
}

// OnChange registers f to be called after every change of the lists held
// (a list taken, lists dropped by SetTrustBundle). f runs on the goroutine
// that made the change, once the change is visible to Revoked and Lists;
// it must not block. stop unregisters f.
func (r *Revocations) OnChange(f func()) (stop func()) {
	p := &f
	r.mu.Lock()
	r.hooks = append(r.hooks, p)
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.hooks = slices.DeleteFunc(r.hooks, func(q *func()) bool { return q == p })
		r.mu.Unlock()
	}
}

// hooksIfLocked returns a copy of the hooks to call if changed. r.mu is
// held.
func (r *Revocations) hooksIfLocked(changed bool) []*func() {
	if !changed {
		return nil
	}
	return slices.Clone(r.hooks)
}

func notify(hooks []*func()) {
	for _, f := range hooks {
		(*f)()
	}
}
