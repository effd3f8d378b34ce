package revoke

import (
	"fmt"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// Verifier wraps a DHT Verifier with the rules of namespace "crl": a head
// record must hold a well-formed head under a CA id, and a chunk record
// must hold the chunk its name hashes. Any member may write these records
// (base checks who signed them); the rules keep the chunks immutable.
// Give it to dht.New on every member.
func Verifier(base dht.Verifier) dht.Verifier { return crlVerifier{base} }

type crlVerifier struct{ base dht.Verifier }

func (v crlVerifier) Verify(key overlay.Address, rec *dht.SignedRecord, now time.Time) (*security.Member, error) {
	m, err := v.base.Verify(key, rec, now)
	if err != nil || rec.Namespace != Namespace {
		return m, err
	}
	if err := checkRecord(rec.Name, rec.Value); err != nil {
		return nil, fmt.Errorf("%w: %s record %q: %v", dht.ErrBadRecord, Namespace, rec.Name, err)
	}
	return m, nil
}

// checkRecord applies the rules of namespace "crl" to a record's name and
// value.
func checkRecord(name string, value []byte) error {
	_, ch, isChunk, ok := parseName(name)
	switch {
	case !ok:
		return fmt.Errorf("the name is neither a CA id (%d hex digits) nor a CA id, '/' and a chunk hash (%d hex digits)", 2*caIDLen, 2*chunkHashLen)
	case isChunk:
		if len(value) == 0 || len(value) > ChunkSize || chunkHash(value) != ch {
			return fmt.Errorf("the value (%d bytes) is not the chunk its name hashes", len(value))
		}
	default:
		if _, err := parseHead(value); err != nil {
			return fmt.Errorf("the value is not a revocation list head")
		}
	}
	return nil
}
