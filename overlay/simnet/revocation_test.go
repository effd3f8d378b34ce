package simnet

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/security"
)

// TestLinker_SetRevocations: once a node's revocation lists revoke a
// peer's certificate, its link to the peer closes at both ends, and
// handshakes between them fail either way with ErrRefused.
func TestLinker_SetRevocations(t *testing.T) {
	now := time.Now()
	ca, err := security.NewCA("test-ca", now.Add(-time.Hour), now.Add(time.Hour), "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := security.NewTrustBundle(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	f := newFabric(t, Config{Latency: Constant(2 * time.Millisecond)})
	ls := make([]*Linker, 3)
	for i := range ls {
		key, err := security.GenerateKey("ed25519")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(key.Public(), security.MemberSpec{Name: fmt.Sprintf("node%d", i)}, now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		id, err := security.NewIdentity(key, cert, bundle, now)
		if err != nil {
			t.Fatal(err)
		}
		if ls[i], err = f.Listen(id.Member, hostAddr(i)); err != nil {
			t.Fatal(err)
		}
	}
	revs := security.NewRevocations(bundle)
	ls[0].SetRevocations(revs)
	a1, b1 := connect(t, ls[0], ls[1])
	a2, _ := connect(t, ls[0], ls[2])

	crl, err := ca.Revoke(nil, []x509.RevocationListEntry{{SerialNumber: ls[1].Self().Cert.SerialNumber, RevocationTime: now}}, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := revs.Add(crl.Raw); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*Link{a1, b1} {
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the link to the revoked node is still open")
		}
	}
	select {
	case <-a2.Done():
		t.Fatal("the link to a member in good standing closed")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, d := range [][2]*Linker{{ls[0], ls[1]}, {ls[1], ls[0]}} {
		if _, err := d[0].Dial(ctx, d[1].LocalAddr()); !errors.Is(err, ErrRefused) || !errors.Is(err, security.ErrRevoked) {
			t.Errorf("%s dials %s: %v, want ErrRefused and ErrRevoked", d[0].Self().Name, d[1].Self().Name, err)
		}
	}
	if st := f.Stats(); st.Refused != 2 {
		t.Errorf("Stats.Refused = %d, want 2", st.Refused)
	}
}
