package revoke

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// worker runs the DHT jobs one at a time.
func (s *Spreader) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closed:
			return
		case j := <-s.jobs:
			ctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
			switch {
			case j.check:
				s.check(ctx, j.first)
			case j.put != nil:
				s.store(ctx, j.put.CA, j.put.List)
			}
			cancel()
		}
	}
}

// check reads each CA's list from the DHT: a newer one is taken; where
// the DHT's is missing, older, junk or half way to expiring, ours is
// written. On the first check after the start, a list the DHT held older
// is broadcast too: the ring may not have it either. (One the DHT lacks
// is not: in a group starting up, every member may hold it from its
// files, and the digests tell the neighbours.)
func (s *Spreader) check(ctx context.Context, first bool) {
	b := s.revs.TrustBundle()
	if b == nil {
		return
	}
	s.stats.checks.Add(1)
	for _, ca := range b.CAs() {
		if ctx.Err() != nil {
			return
		}
		if s.checkCA(ctx, ca) && first {
			if h, ok := s.heldOf(ca); ok {
				s.goRun(func() { s.broadcast(h.List.Raw) })
			}
		}
	}
}

// checkCA compares the DHT's list of ca with ours and reports whether it
// wrote ours over another (older, or junk).
func (s *Spreader) checkCA(ctx context.Context, ca *x509.Certificate) (replaced bool) {
	id := caIDOf(ca)
	rec, err := s.dht.GetRecord(ctx, Namespace, headName(id))
	missing := errors.Is(err, dht.ErrNotFound)
	var hd head
	switch {
	case errors.Is(err, dht.ErrNotFound), errors.Is(err, dht.ErrBadRecord):
		// Missing, or a record that does not verify: ours replaces it.
	case err != nil:
		s.stats.dhtErrors.Add(1)
		s.log.Debug("revocation list not read from the DHT", zap.String("ca", ca.Subject.CommonName), zap.Error(err))
		return false
	default:
		if hd, err = parseHead(rec.Value); err != nil {
			break // junk: ours replaces it
		}
		if h, ok := s.heldOf(ca); ok && hashOf(h.List) == hd.Hash {
			if time.Until(rec.Expires) < s.cfg.RecordTTL/2 {
				s.store(ctx, ca, h.List)
			}
			return false
		}
		if seen, _ := s.seenAs(hd.Hash); !seen {
			der, err := fetchList(ctx, s.dht, id, hd)
			if err != nil {
				s.stats.dhtErrors.Add(1)
				s.log.Debug("revocation list not fetched from the DHT", zap.String("ca", ca.Subject.CommonName), zap.Error(err))
				return false
			}
			s.stats.dhtFetched.Add(1)
			s.consider(der, hd.Hash, "dht", overlay.Address{})
		}
		if seen, _ := s.seenAs(hd.Hash); !seen {
			return false // not judged (over the signature-check budget): next time
		}
	}
	h, ok := s.heldOf(ca)
	if !ok || (err == nil && hashOf(h.List) == hd.Hash) {
		return false
	}
	s.store(ctx, ca, h.List)
	return !missing
}

// heldOf returns the list held for ca.
func (s *Spreader) heldOf(ca *x509.Certificate) (security.HeldList, bool) {
	for _, h := range s.revs.Held() {
		if h.CA.Equal(ca) {
			return h, true
		}
	}
	return security.HeldList{}, false
}

// fetchList reads the list a head describes: inline, or from its chunk
// records, each checked against its hash.
func fetchList(ctx context.Context, d *dht.DHT, id caID, hd head) ([]byte, error) {
	if hd.Inline != nil {
		return hd.Inline, nil // parseHead checked its hash
	}
	buf := make([]byte, hd.Total)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int, len(hd.Chunks))
	)
	for i := range hd.Chunks {
		next <- i
	}
	close(next)
	for range min(fetchParallel, len(hd.Chunks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rec, err := d.GetRecord(ctx, Namespace, chunkName(id, hd.Chunks[i]))
				if err == nil && (len(rec.Value) != chunkLen(hd.Total, i) || chunkHash(rec.Value) != hd.Chunks[i]) {
					err = fmt.Errorf("chunk %d does not match its hash", i)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("revoke: chunk %d of %d: %w", i+1, len(hd.Chunks), err)
					}
					mu.Unlock()
					return
				}
				copy(buf[i*ChunkSize:], rec.Value)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if sha256.Sum256(buf) != hd.Hash {
		return nil, errors.New("revoke: the chunks do not make the list named in the head")
	}
	return buf, nil
}

// store writes a list into the DHT: its chunk records first, then the
// head, all expiring after record_ttl.
func (s *Spreader) store(ctx context.Context, ca *x509.Certificate, crl *x509.RevocationList) {
	if s.id == nil || len(crl.Raw) > MaxListSize {
		return
	}
	id := caIDOf(ca)
	hd := headOf(crl.Raw)
	expires := time.Now().Add(s.cfg.RecordTTL)
	put := func(name string, value []byte) error {
		rec, err := dht.Sign(s.id, Namespace, name, value, expires)
		if err != nil {
			return err
		}
		return s.dht.PutRecord(ctx, rec)
	}
	for i, ch := range hd.Chunks {
		if err := put(chunkName(id, ch), chunkOf(crl.Raw, i)); err != nil {
			s.storeFailed(ca, crl, err)
			return
		}
	}
	if err := put(headName(id), hd.append(nil)); err != nil {
		s.storeFailed(ca, crl, err)
		return
	}
	s.stats.dhtStored.Add(1)
	s.log.Debug("revocation list written to the DHT", zap.String("ca", ca.Subject.CommonName), zap.Stringer("number", crl.Number),
		zap.Int("chunks", max(1, len(hd.Chunks))))
}

func (s *Spreader) storeFailed(ca *x509.Certificate, crl *x509.RevocationList, err error) {
	s.stats.dhtErrors.Add(1)
	if s.ctx.Err() == nil {
		s.log.Debug("revocation list not written to the DHT", zap.String("ca", ca.Subject.CommonName),
			zap.Stringer("number", crl.Number), zap.Error(err))
	}
}
