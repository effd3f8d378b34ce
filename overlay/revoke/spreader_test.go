package revoke_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/revoke"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/simnet"
	"github.com/ringvpn/ringvpn/security"
)

// member is a cluster member with revocation lists, a DHT and a
// Spreader.
type member struct {
	*sim.Member
	revs *security.Revocations
	dht  *dht.DHT
	sp   *revoke.Spreader
}

// group is a cluster whose members spread revocation lists.
type group struct {
	t       *testing.T
	c       *sim.Cluster
	cfg     revoke.Config
	members []*member
}

// testConfig checks the DHT every second.
func testConfig() revoke.Config {
	return revoke.Config{CheckInterval: time.Second, RecordTTL: time.Hour}
}

func dhtConfig() dht.Config {
	c := dht.Default()
	c.RepublishInterval = 200 * time.Millisecond
	c.RequestTimeout = time.Second
	c.Retries = 3
	return c
}

// newGroup starts a cluster (plain links with certificates unless
// opts.Secure) and a Spreader on each member, checking the DHT every
// second.
func newGroup(t *testing.T, opts sim.Options) *group {
	t.Helper()
	return newGroupWith(t, opts, testConfig())
}

func newGroupWith(t *testing.T, opts sim.Options, cfg revoke.Config) *group {
	t.Helper()
	opts.Certs = true
	if opts.Latency == nil {
		opts.Latency = simnet.Constant(4 * time.Millisecond)
	}
	g := &group{t: t, c: overlaytest.NewCluster(t, opts), cfg: cfg}
	for _, m := range g.c.Members() {
		g.attach(m)
	}
	return g
}

// attach gives m revocation lists its links obey, a DHT and a Spreader,
// stopped when the test ends.
func (g *group) attach(m *sim.Member) *member {
	t := g.t
	t.Helper()
	revs := security.NewRevocations(m.Bundle)
	switch l := m.Linker.(type) {
	case *overlay.SecureLinker:
		l.Endpoint().SetRevocations(revs)
	case *simnet.Linker:
		l.SetRevocations(revs)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Named(m.Identity.Member.Name)
	d, err := dht.New(m.Node, dhtConfig(), revoke.Verifier(dht.VerifyWith(m.Bundle)), log)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := revoke.New(revoke.Params{Node: m.Node, Revocations: revs, DHT: d, Identity: m.Identity, Config: g.cfg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sp.Close()
		d.Close()
	})
	gm := &member{Member: m, revs: revs, dht: d, sp: sp}
	g.members = append(g.members, gm)
	return gm
}

// list signs a list of the cluster's CA numbered n that revokes ms.
func (g *group) list(n int64, ms ...*member) *x509.RevocationList {
	g.t.Helper()
	return signList(g.t, g.c.CA(), n, ms...)
}

func signList(t *testing.T, ca *security.CA, n int64, ms ...*member) *x509.RevocationList {
	t.Helper()
	now := time.Now()
	var entries []x509.RevocationListEntry
	for _, m := range ms {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: m.Identity.Cert.SerialNumber, RevocationTime: now, ReasonCode: 1})
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), RevokedCertificateEntries: entries}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// waitFor polls cond until it holds or within passes, and returns how
// long it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %s", what, within, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holds reports whether every member but skip holds a list numbered n.
func (g *group) holds(n int64, skip ...*member) (bool, string) {
	for _, m := range g.members {
		if slices.Contains(skip, m) {
			continue
		}
		ls := m.revs.Lists()
		if len(ls) != 1 || ls[0].Number.Int64() != n {
			nums := []string{}
			for _, l := range ls {
				nums = append(nums, l.Number.String())
			}
			return false, fmt.Sprintf("%s holds lists %v, want number %d", m.Identity.Member.Name, nums, n)
		}
	}
	return true, ""
}

// cutOff reports whether target has no links and nobody links to it.
func (g *group) cutOff(target *member) (bool, string) {
	if ps := target.Node.Peers(); len(ps) > 0 {
		return false, fmt.Sprintf("%s still has %d links", target.Identity.Member.Name, len(ps))
	}
	for _, m := range g.members {
		if m != target && slices.Contains(m.Node.Peers(), target.Node.Address()) {
			return false, fmt.Sprintf("%s still links to %s", m.Identity.Member.Name, target.Identity.Member.Name)
		}
	}
	return true, ""
}

// TestSpreader_RevocationReachesEveryMember: a list published at one
// member reaches every other, which cut the revoked member off and keep
// refusing it; the DHT holds the list for later joiners, and one that
// joins gets it.
func TestSpreader_RevocationReachesEveryMember(t *testing.T) {
	g := newGroup(t, sim.Options{N: 12, Seed: 3})
	pub, target := g.members[0], g.members[5]
	crl := g.list(1, target)
	changed, err := pub.sp.Publish(crl.Raw)
	if err != nil || !changed {
		t.Fatalf("Publish = %v, %v", changed, err)
	}
	took := waitFor(t, 10*time.Second, "every member holds the list", func() (bool, string) { return g.holds(1, target) })
	t.Logf("the list reached all %d other members in %v", len(g.members)-2, took.Round(time.Millisecond))
	took = waitFor(t, 10*time.Second, "revoked member cut off", func() (bool, string) { return g.cutOff(target) })
	t.Logf("the revoked member had no links %v later", took.Round(time.Millisecond))
	for _, m := range g.members {
		if m != target && !m.revs.Revoked(target.Identity.Cert) {
			t.Errorf("%s does not revoke the target", m.Identity.Member.Name)
		}
	}
	// It keeps trying to link (its maintenance runs every 200ms): every
	// handshake is refused.
	time.Sleep(time.Second)
	if ok, why := g.cutOff(target); !ok {
		t.Fatalf("the revoked member got back in: %s", why)
	}

	// The DHT holds the list, and a member that joins now takes it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := revoke.FetchList(ctx, g.members[9].dht, g.c.CA().Cert)
	if err != nil || string(got) != string(crl.Raw) {
		t.Fatalf("the DHT's list: %v (%d bytes, want %d)", err, len(got), len(crl.Raw))
	}
	m, err := g.c.Add()
	if err != nil {
		t.Fatal(err)
	}
	late := g.attach(m)
	waitFor(t, 15*time.Second, "the late joiner holds the list", func() (bool, string) {
		return late.revs.Revoked(target.Identity.Cert), "not yet"
	})
}

// TestSpreader_LongListInChunks: a list longer than a DHT value and a
// datagram travels in pieces over the ring and in chunk records in the
// DHT, and comes back whole both ways.
func TestSpreader_LongListInChunks(t *testing.T) {
	g := newGroup(t, sim.Options{N: 8, Seed: 5})
	// 150 made-up serials besides one member: ~4 KB, 5 chunks.
	now := time.Now()
	var entries []x509.RevocationListEntry
	for i := range 150 {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(int64(1e15 + i)), RevocationTime: now})
	}
	target := g.members[3]
	entries = append(entries, x509.RevocationListEntry{SerialNumber: target.Identity.Cert.SerialNumber, RevocationTime: now})
	crl, err := g.c.CA().Revoke(nil, entries, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.Raw) <= 3*revoke.ChunkSize {
		t.Fatalf("the list is only %d bytes", len(crl.Raw))
	}
	t.Logf("a list of %d entries: %d bytes", len(entries), len(crl.Raw))
	if _, err := g.members[0].sp.Publish(crl.Raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every member holds the list", func() (bool, string) { return g.holds(1, target) })
	waitFor(t, 10*time.Second, "revoked member cut off", func() (bool, string) { return g.cutOff(target) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []byte
	waitFor(t, 10*time.Second, "the DHT holds the list", func() (bool, string) {
		got, err = revoke.FetchList(ctx, g.members[6].dht, g.c.CA().Cert)
		return err == nil && string(got) == string(crl.Raw), fmt.Sprint(err)
	})
}

// TestSpreader_RefusesForgedAndOlderLists: a list signed by another key
// under the CA's name, and an older list of the CA, sent around by a
// member, are refused everywhere; so is an older list written into the
// DHT, which the next check puts right.
func TestSpreader_RefusesForgedAndOlderLists(t *testing.T) {
	// Each member checks the DHT once, soon after it joined, then not for
	// an hour: the test does the next check itself.
	g := newGroupWith(t, sim.Options{N: 8, Seed: 9}, revoke.Config{CheckInterval: time.Hour, RecordTTL: time.Hour})
	a, b, x := g.members[1], g.members[2], g.members[4]
	if _, err := g.members[0].sp.Publish(g.list(2, x).Raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every member holds list 2", func() (bool, string) { return g.holds(2, x) })

	// A rogue CA of the same name revokes b, with a higher number.
	now := time.Now()
	rogue, err := security.NewCA(g.c.CA().Cert.Subject.CommonName, now.Add(-time.Hour), now.Add(time.Hour), "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	forged := signList(t, rogue, 9, b)
	older := g.list(1)
	before := map[*member]revoke.Stats{}
	for _, m := range g.members {
		before[m] = m.sp.Stats()
	}
	for _, l := range [][]byte{forged.Raw, older.Raw} {
		for _, p := range revoke.Pieces(l) {
			if err := a.Node.Broadcast(revoke.TypeBroadcast, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, 10*time.Second, "every member refused both lists", func() (bool, string) {
		for _, m := range g.members {
			if m == a || m == x {
				continue
			}
			if got := m.sp.Stats().Refused - before[m].Refused; got < 2 {
				return false, fmt.Sprintf("%s refused %d", m.Identity.Member.Name, got)
			}
		}
		return true, ""
	})
	if ok, why := g.holds(2, x); !ok {
		t.Fatal(why)
	}
	for _, m := range g.members {
		if m.revs.Revoked(b.Identity.Cert) {
			t.Fatalf("%s took the forged list", m.Identity.Member.Name)
		}
		// The older list was refused before its signature was checked.
		if m != a && m != x && m.sp.Stats().Checked-before[m].Checked > 1 {
			t.Errorf("%s checked %d signatures, want only the forged list's", m.Identity.Member.Name, m.sp.Stats().Checked-before[m].Checked)
		}
	}

	// A member writes the older list into the DHT: members refuse it, and
	// one holding list 2 writes it back at its check.
	waitFor(t, 10*time.Second, "every member checked the DHT once", func() (bool, string) {
		for _, m := range g.members {
			if m != x && m.sp.Stats().Checks == 0 {
				return false, m.Identity.Member.Name + " did not"
			}
		}
		return true, ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a.sp.StoreAs(ctx, g.c.CA().Cert, older)
	got, err := revoke.FetchList(ctx, b.dht, g.c.CA().Cert)
	if err != nil || string(got) != string(older.Raw) {
		t.Fatalf("the older list was not written: %v", err)
	}
	b.sp.CheckNow(ctx)
	got, err = revoke.FetchList(ctx, g.members[5].dht, g.c.CA().Cert)
	if err != nil || string(got) != string(g.members[5].revs.Lists()[0].Raw) {
		t.Fatalf("the DHT's list was not put right: %v", err)
	}
	if ok, why := g.holds(2, x); !ok {
		t.Fatal(why)
	}
}

// TestSpreader_JunkCostsLittle: a member floods a neighbour with junk
// pieces, forged lists and one forged list over and over: the neighbour
// checks at most VerifyRate signatures a second and takes nothing.
func TestSpreader_JunkCostsLittle(t *testing.T) {
	g := newGroup(t, sim.Options{N: 4, Seed: 11})
	a := g.members[0]
	var b *member
	for _, m := range g.members[1:] {
		if slices.Contains(a.Node.Peers(), m.Node.Address()) {
			b = m
			break
		}
	}
	if b == nil {
		t.Fatal("no neighbour")
	}
	now := time.Now()
	rogue, err := security.NewCA(g.c.CA().Cert.Subject.CommonName, now.Add(-time.Hour), now.Add(time.Hour), "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	before := b.sp.Stats()
	start := time.Now()
	sent := 0
	send := func(p []byte) {
		if err := a.Node.SendTo(b.Node.Address(), revoke.TypePiece, p); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	one := revoke.Pieces(signList(t, rogue, 1000, a).Raw)[0]
	for i := range 200 {
		send(revoke.Pieces(signList(t, rogue, int64(10+i), a).Raw)[0]) // each a new forged list
		send(revoke.Pieces([]byte(fmt.Sprintf("junk %d", i)))[0])      // not a list at all
		send(one)                                                      // the same forged list again
		if i%50 == 49 {
			time.Sleep(10 * time.Millisecond) // let the queue drain a little
		}
	}
	var st revoke.Stats
	waitFor(t, 10*time.Second, "the flood is handled", func() (bool, string) {
		st = b.sp.Stats()
		done := st.Refused + st.Dropped + st.Duplicate - before.Refused - before.Dropped - before.Duplicate
		return done >= uint64(sent), fmt.Sprintf("%d of %d", done, sent)
	})
	elapsed := time.Since(start)
	checked := st.Checked - before.Checked
	t.Logf("%d junk messages in %v: %d signatures checked, %d refused, %d duplicates, %d dropped", sent,
		elapsed.Round(time.Millisecond), checked, st.Refused-before.Refused, st.Duplicate-before.Duplicate, st.Dropped-before.Dropped)
	if limit := uint64(revoke.VerifyRate * (elapsed.Seconds() + 1)); checked > limit {
		t.Errorf("%d signatures checked in %v, above the budget of %d", checked, elapsed, limit)
	}
	if len(b.revs.Lists()) != 0 || st.Received != before.Received {
		t.Errorf("the flood got a list taken: %v", b.revs.Lists())
	}
}

// TestSpreader_Secure_RevokedPeerRefused: over DTLS links, the endpoints
// close the revoked member's links and refuse its handshakes.
func TestSpreader_Secure_RevokedPeerRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("DTLS cluster")
	}
	g := newGroup(t, sim.Options{N: 6, Secure: true, Seed: 13})
	target := g.members[4]
	if _, err := g.members[1].sp.Publish(g.list(1, target).Raw); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 10*time.Second, "every member holds the list", func() (bool, string) { return g.holds(1, target) })
	cut := waitFor(t, 10*time.Second, "revoked member cut off", func() (bool, string) { return g.cutOff(target) })
	t.Logf("DTLS: the list reached every member in %v, the revoked member was cut off %v later", took.Round(time.Millisecond), cut.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	if ok, why := g.cutOff(target); !ok {
		t.Fatalf("the revoked member got back in: %s", why)
	}
}

// TestSpreader_GossipWhenBroadcastsAreLost: when no member takes the
// broadcast (their handlers are gone), the list still reaches every one
// from neighbour to neighbour, and the DHT.
func TestSpreader_GossipWhenBroadcastsAreLost(t *testing.T) {
	g := newGroup(t, sim.Options{N: 16, Seed: 17})
	for _, m := range g.members[1:] {
		m.Node.Handle(revoke.TypeBroadcast, nil)
	}
	target := g.members[7]
	if _, err := g.members[0].sp.Publish(g.list(1, target).Raw); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 20*time.Second, "every member holds the list", func() (bool, string) { return g.holds(1, target) })
	var sum revoke.Stats
	for _, m := range g.members {
		st := m.sp.Stats()
		sum.ViaBroadcast += st.ViaBroadcast
		sum.ViaPeer += st.ViaPeer
		sum.ViaDHT += st.ViaDHT
	}
	t.Logf("without broadcasts the list reached all %d other members in %v: %d from a neighbour, %d from the DHT",
		len(g.members)-2, took.Round(time.Millisecond), sum.ViaPeer, sum.ViaDHT)
	if sum.ViaBroadcast != 0 || sum.ViaPeer == 0 {
		t.Errorf("taken from broadcasts %d, from neighbours %d", sum.ViaBroadcast, sum.ViaPeer)
	}
	waitFor(t, 10*time.Second, "revoked member cut off", func() (bool, string) { return g.cutOff(target) })
}
