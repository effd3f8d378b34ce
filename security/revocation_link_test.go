package security

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringvpn/ringvpn/transport/memnet"
)

// revokeNow signs g's next list after prev, revoking ids now.
func (g *testGroup) revoke(t testing.TB, prev *x509.RevocationList, ids ...*Identity) *x509.RevocationList {
	t.Helper()
	var add []x509.RevocationListEntry
	for _, id := range ids {
		add = append(add, x509.RevocationListEntry{SerialNumber: id.Cert.SerialNumber, RevocationTime: time.Now(), ReasonCode: 1})
	}
	crl, err := g.ca.Revoke(prev, add, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func waitClosed(t testing.TB, l *Link, want error) {
	t.Helper()
	select {
	case <-l.Done():
		if !errors.Is(l.Err(), want) {
			t.Fatalf("link to %q closed with %v, want %v", l.Peer().Name, l.Err(), want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("link to %q still open", l.Peer().Name)
	}
}

func TestLink_RefusesRevokedPeer(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	mallory, alice := g.validMember(t, "mallory"), g.validMember(t, "alice")
	revs := NewRevocations(g.bundle)
	mustAdd(t, revs, g.revoke(t, nil, mallory).Raw)

	for _, dir := range []string{"revoked dials", "revoked is dialed"} {
		t.Run(dir, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			net := memnet.New(7)
			honest := newTestNode(t, net, "10.0.0.1:4820", alice, g.bundle, testConfig(), zap.New(core))
			honest.ep.SetRevocations(revs)
			revoked := newTestNode(t, net, "10.0.0.2:4820", mallory, g.bundle, testConfig(), zaptest.NewLogger(t))
			from, to := revoked, "10.0.0.1:4820"
			if dir == "revoked is dialed" {
				from, to = honest, "10.0.0.2:4820"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if l, err := from.ep.Dial(ctx, netip.MustParseAddrPort(to)); err == nil {
				l.Close()
				t.Fatal("a revoked member got a link")
			}
			refused := logs.FilterMessage("peer refused").All()
			if len(refused) == 0 {
				t.Fatal("no \"peer refused\" log line")
			}
			msg := fmt.Sprint(refused[0].ContextMap()["error"])
			if !strings.Contains(msg, `certificate of "mallory"`) || !strings.Contains(msg, `was revoked by CA "group-ca"`) || !strings.Contains(msg, "key-compromise") {
				t.Fatalf("refusal says %q; want it to name mallory, the CA and the reason", msg)
			}
			if len(honest.ep.Links()) != 0 {
				t.Fatal("the honest member kept a link")
			}
		})
	}
}

func TestLink_ClosesWhenPeerRevoked(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	net := memnet.New(8)
	log := zaptest.NewLogger(t)
	alice, bob, carol := g.validMember(t, "alice"), g.validMember(t, "bob"), g.validMember(t, "carol")
	a := newTestNode(t, net, "10.0.0.1:4820", alice, g.bundle, testConfig(), log)
	b := newTestNode(t, net, "10.0.0.2:4820", bob, g.bundle, testConfig(), log)
	c := newTestNode(t, net, "10.0.0.3:4820", carol, g.bundle, testConfig(), log)
	revs := NewRevocations(g.bundle)
	a.ep.SetRevocations(revs)

	toBob, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
	if err != nil {
		t.Fatal(err)
	}
	fromAlice := accept(t, b.ep)
	toCarol, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.3:4820"))
	if err != nil {
		t.Fatal(err)
	}
	accept(t, c.ep)

	// A list revoking bob arrives (from anywhere: here the test).
	mustAdd(t, revs, g.revoke(t, nil, bob).Raw)
	waitClosed(t, toBob, ErrRevoked)
	if !strings.Contains(toBob.Err().Error(), `certificate of "bob"`) {
		t.Errorf("reason %q does not name bob", toBob.Err())
	}
	waitClosed(t, fromAlice, ErrPeerClosed) // bob is told
	select {
	case <-toCarol.Done():
		t.Fatalf("the link to carol closed too: %v", toCarol.Err())
	default:
	}
	// The closed link leaves the endpoint's table just after it ends.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		links := a.ep.Links()
		if len(links) == 1 && links[0] == toCarol {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice has %d links, want only carol's", len(links))
		}
	}
	// Bob can't come back.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if l, err := b.ep.Dial(ctx, netip.MustParseAddrPort("10.0.0.1:4820")); err == nil {
		l.Close()
		t.Fatal("revoked bob linked again")
	}
}

// A link made before SetRevocations is swept when it is called.
func TestEndpoint_SetRevocationsSweepsOpenLinks(t *testing.T) {
	g := newTestGroup(t, "group-ca")
	net := memnet.New(9)
	log := zaptest.NewLogger(t)
	alice, bob := g.validMember(t, "alice"), g.validMember(t, "bob")
	a := newTestNode(t, net, "10.0.0.1:4820", alice, g.bundle, testConfig(), log)
	b := newTestNode(t, net, "10.0.0.2:4820", bob, g.bundle, testConfig(), log)
	l, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
	if err != nil {
		t.Fatal(err)
	}
	accept(t, b.ep)
	revs := NewRevocations(g.bundle)
	mustAdd(t, revs, g.revoke(t, nil, bob).Raw)
	a.ep.SetRevocations(revs)
	waitClosed(t, l, ErrRevoked)
	if a.ep.Revocations() != revs {
		t.Fatal("Revocations() is not what was set")
	}
	a.ep.SetRevocations(nil)
	if a.ep.Revocations() != nil {
		t.Fatal("SetRevocations(nil) kept the old set")
	}
}

// The link to a peer closes at the instant its certificate expires, and
// the peer is told. Inside a synctest bubble, the ten minutes pass at once.
func TestLink_ClosesAtPeerExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "group-ca")
		net := memnet.New(10)
		log := zaptest.NewLogger(t)
		start := time.Now()
		alice := g.validMember(t, "alice")
		bob := g.member(t, "bob", start.Add(-time.Minute), start.Add(10*time.Minute), nil)
		// Keepalive ticks (which also check expiry) miss the instant of
		// expiry: what closes the link on time is its expiry timer.
		cfg := testConfig()
		cfg.KeepaliveInterval, cfg.DeadAfter = 7*time.Second, 21*time.Second
		a := newTestNode(t, net, "10.0.0.1:4820", alice, g.bundle, cfg, log)
		b := newTestNode(t, net, "10.0.0.2:4820", bob, g.bundle, cfg, log)
		toBob, err := a.ep.Dial(t.Context(), netip.MustParseAddrPort("10.0.0.2:4820"))
		if err != nil {
			t.Fatal(err)
		}
		fromAlice := accept(t, b.ep)

		expiry := bob.Cert.NotAfter
		time.Sleep(time.Until(expiry) - time.Millisecond)
		synctest.Wait()
		select {
		case <-toBob.Done():
			t.Fatalf("link closed before bob's expiry: %v", toBob.Err())
		default:
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		select {
		case <-toBob.Done():
		default:
			t.Fatalf("link to bob still open at his expiry %s", expiry)
		}
		if !errors.Is(toBob.Err(), ErrExpired) || !strings.Contains(toBob.Err().Error(), `certificate of "bob" expired at `+fmtTime(expiry)) {
			t.Fatalf("closed with %v", toBob.Err())
		}
		synctest.Wait()
		select {
		case <-fromAlice.Done():
			if !errors.Is(fromAlice.Err(), ErrPeerClosed) {
				t.Fatalf("bob's side closed with %v", fromAlice.Err())
			}
		default:
			t.Fatal("bob was not told")
		}
	})
}

// A CA that expires before its member ends the member's links too.
func TestExpiredError(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	_, cert := issueTestMember(t, ca, aliceSpec(), "")
	m, err := mustBundle(t, ca).VerifyMember(chainOf(cert), now)
	if err != nil {
		t.Fatal(err)
	}
	if err := expiredError(m, cert.NotAfter.Add(-time.Second)); err != nil {
		t.Fatalf("valid member: %v", err)
	}
	if err := expiredError(m, cert.NotAfter); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), `certificate of "alice" expired at`) {
		t.Fatalf("at NotAfter: %v", err)
	}
	m.CANotAfter = cert.NotAfter.Add(-time.Hour)
	if !m.ValidUntil().Equal(m.CANotAfter) {
		t.Fatalf("ValidUntil = %s, want the CA's expiry", m.ValidUntil())
	}
	if err := expiredError(m, m.CANotAfter); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), `CA "group-ca" that issued certificate of "alice" expired at`) {
		t.Fatalf("CA expired: %v", err)
	}
	if err := expiredError(&Member{}, now); err != nil {
		t.Fatalf("a member without validity: %v", err)
	}
}
