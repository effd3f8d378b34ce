package security

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
)

// RevocationFiles feeds the revocation lists of files into a Revocations
// and reloads them when the files change. Reload runs on one goroutine
// at a time (a Monitor's).
type RevocationFiles struct {
	// immutable after LoadRevocationFiles
	revs *Revocations
	log  *zap.Logger

	// owned by the goroutine that calls Reload
	files []revocationFile
}

type revocationFile struct {
	path string
	last string // what was read last: a hash of the content, or the read error
}

// LoadRevocationFiles reads every file of paths (PEM "X509 CRL" blocks, as
// `ringvpn ca revoke` writes them) into revs. Each file must be readable
// and each of its lists well formed and signed by a CA of the trust
// bundle: a node should not start without a list it was told to apply.
// Errors name the file. A list no newer than one held already is not an
// error.
func LoadRevocationFiles(revs *Revocations, paths []string, log *zap.Logger) (*RevocationFiles, error) {
	f := &RevocationFiles{revs: revs, log: log.Named("security")}
	var errs []error
	for _, p := range paths {
		rf := revocationFile{path: p}
		if err := f.load(&rf); err != nil {
			errs = append(errs, err)
		}
		f.files = append(f.files, rf)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload re-reads every file and takes the lists of those whose content
// changed. A file that can't be read or holds a bad list is reported once
// (until it changes again) with a warning; the lists held stay as they
// were, so the last good list of each CA stays in force. Lists are never
// dropped by a reload: only a newer list of the same CA replaces one.
func (f *RevocationFiles) Reload() {
	for i := range f.files {
		rf := &f.files[i]
		before := rf.last
		if err := f.load(rf); err != nil && rf.last != before {
			f.log.Warn("revocation list file not applied; keeping the lists held", zap.String("file", rf.path), zap.Error(err))
		}
	}
}

// load reads rf and adds its lists unless its content is what was read
// last time.
func (f *RevocationFiles) load(rf *revocationFile) error {
	data, err := os.ReadFile(rf.path)
	if err != nil {
		rf.last = "error: " + err.Error()
		return fmt.Errorf("read revocation list: %w", err)
	}
	sum := sha256.Sum256(data)
	if string(sum[:]) == rf.last {
		return nil
	}
	rf.last = string(sum[:])
	ders, err := DecodeRevocationListsPEM(data)
	if err != nil {
		return fmt.Errorf("%s: %w", rf.path, err)
	}
	var errs []error
	for i, der := range ders {
		changed, err := f.revs.Add(der)
		switch {
		case changed:
			crl, _ := x509.ParseRevocationList(der) // Add parsed it
			f.log.Info("revocation list loaded", zap.String("file", rf.path), zap.String("ca", crl.Issuer.CommonName),
				zap.String("number", crl.Number.String()), zap.Int("revoked", len(crl.RevokedCertificateEntries)))
		case errors.Is(err, ErrStaleRevocationList):
			f.log.Debug("revocation list not newer than the one held", zap.String("file", rf.path), zap.Error(err))
		case err != nil && len(ders) > 1:
			errs = append(errs, fmt.Errorf("%s: PEM block %d: %w", rf.path, i+1, err))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", rf.path, err))
		}
	}
	return errors.Join(errs...)
}

// Monitor watches a member's own credentials while it runs: it reloads
// revocation list files, warns ahead of the expiry of the member's
// certificate and of its CA, warns about revocation lists past their next
// update, and reports when the member itself is revoked.
type Monitor struct {
	// Identity is the member; its Member must come from a trust bundle
	// (LoadIdentity, NewIdentity) for its CA's expiry to be known.
	Identity *Identity
	// Revocations is what the member applies.
	Revocations *Revocations
	// Files, if not nil, are reloaded every ReloadEvery (0: never).
	Files       *RevocationFiles
	ReloadEvery time.Duration
	// WarnAhead is how long before an expiry warnings start; they repeat
	// daily until it is fixed.
	WarnAhead time.Duration
	Log       *zap.Logger
}

// Run checks at once and then as configured, until ctx is done.
func (m *Monitor) Run(ctx context.Context) {
	log := m.Log.Named("security")
	var reload <-chan time.Time
	if m.Files != nil && m.ReloadEvery > 0 {
		t := time.NewTicker(m.ReloadEvery)
		defer t.Stop()
		reload = t.C
	}
	changed := make(chan struct{}, 1)
	if m.Revocations != nil {
		defer m.Revocations.OnChange(func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})()
		changed <- struct{}{}
	}
	warn := time.NewTimer(0)
	defer warn.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			m.Files.Reload()
		case <-changed:
			if err := m.Revocations.Check(m.Identity.Cert); err != nil {
				log.Error("this member's certificate is revoked: peers refuse it", zap.Error(err))
			}
		case <-warn.C:
			now := time.Now()
			next := expiryWarnings(log, m.Identity, m.Revocations, now, m.WarnAhead)
			warn.Reset(next.Sub(now))
		}
	}
}
