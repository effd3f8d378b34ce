package revoke

import (
	"context"
	"crypto/x509"

	"github.com/ringvpn/ringvpn/overlay/dht"
)

// VerifyRate is the signature-check budget per second.
const VerifyRate = verifyRate

// Pieces encodes a list's pieces, as a Spreader sends them.
func Pieces(list []byte) [][]byte { return pieces(list) }

// CheckNow runs one DHT check at once.
func (s *Spreader) CheckNow(ctx context.Context) { s.check(ctx, false) }

// StoreAs writes crl into the DHT as ca's list, whatever is held.
func (s *Spreader) StoreAs(ctx context.Context, ca *x509.Certificate, crl *x509.RevocationList) {
	s.store(ctx, ca, crl)
}

// FetchList reads ca's list from the DHT.
func FetchList(ctx context.Context, d *dht.DHT, ca *x509.Certificate) ([]byte, error) {
	id := caIDOf(ca)
	rec, err := d.GetRecord(ctx, Namespace, headName(id))
	if err != nil {
		return nil, err
	}
	hd, err := parseHead(rec.Value)
	if err != nil {
		return nil, err
	}
	return fetchList(ctx, d, id, hd)
}
