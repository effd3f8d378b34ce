package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/netnstest"
	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/security"
)

// The acceptance tests of NAT traversal (issue 5): real `ringvpn up`
// members in a netnstest.NATLab, with a bootstrap member on the public
// segment and members behind nftables NAT routers.

// natPort is the port every member listens on. Members in different
// sites share it; a cone NAT keeps it, so a member behind one is seen at
// its router's address and this port.
const natPort = 4820

// natVPNLab runs members on the hosts of a NATLab: the first member added
// is the bootstrap of the others.
type natVPNLab struct {
	t      *testing.T
	bin    string
	dir    string
	lab    *netnstest.NATLab
	ca     *security.CA
	caPath string
	boot   netip.AddrPort
}

func newNATVPNLab(t *testing.T, public int, sites ...netnstest.SiteSpec) *natVPNLab {
	netnstest.RequireNAT(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	now := time.Now()
	ca, err := security.NewCA("group-ca", now.Add(-time.Hour), now.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.crt")
	if err := security.WriteCertificate(caPath, ca.Cert, false); err != nil {
		t.Fatal(err)
	}
	return &natVPNLab{t: t, bin: bin, dir: dir, lab: netnstest.NewNATLab(t, public, sites...), ca: ca, caPath: caPath}
}

// add writes the files of member name with virtual IP 10.88.0.<n> on host
// h (listening on its underlay address) and starts it. The first member
// added is the bootstrap; the others join through it. The timers are
// those of the other namespace tests: links notice a silent peer within
// seconds, and a link attempt dials for 3s, turning to a relay after a
// quarter of that. The logs are at debug level: a failed test shows
// every link's life.
func (l *natVPNLab) add(h *netnstest.Host, name string, n byte) *vpnMember {
	t := l.t
	m := &vpnMember{
		name:   name,
		host:   h,
		vip:    netip.AddrFrom4([4]byte{10, 88, 0, n}),
		socket: filepath.Join(l.dir, name+".sock"),
		conf:   filepath.Join(l.dir, name+".yaml"),
	}
	key, err := security.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := l.ca.Issue(key.Public(), security.MemberSpec{Name: name, IPs: []netip.Prefix{netip.PrefixFrom(m.vip, 24)}}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(l.dir, name+".crt"), filepath.Join(l.dir, name+".key")
	if err := security.WriteCertificate(certPath, cert, false); err != nil {
		t.Fatal(err)
	}
	if err := security.WritePrivateKey(keyPath, key, false); err != nil {
		t.Fatal(err)
	}
	listen := netip.AddrPortFrom(h.Underlay, natPort)
	boot := "[]"
	if l.boot.IsValid() {
		boot = fmt.Sprintf("[%q]", l.boot.String())
	} else {
		l.boot = listen
	}
	yaml := fmt.Sprintf(`identity: {cert: %s, key: %s, ca: %s}
listen: %q
control: {socket: %s}
overlay: {bootstrap: %s, maintain_interval: 250ms, ping_interval: 500ms, dead_after: 2s, connect_timeout: 3s}
security: {keepalive_interval: 1s, dead_after: 4s, handshake_timeout: 3s}
tap: {name: rv0}
vpn: {negative_ttl: 500ms, resolve_timeout: 2s}
log: {level: debug}
`, certPath, keyPath, l.caPath, listen.String(), m.socket, boot)
	if err := os.WriteFile(m.conf, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	m.start(t, l.bin)
	return m
}

// waitStatus polls m's status every 100ms until cond holds or within
// passes, and returns the last status and how long it took.
func waitStatus(m *vpnMember, within time.Duration, cond func(node.Status) bool) (node.Status, time.Duration, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	start := time.Now()
	var st node.Status
	for {
		s, err := m.status(ctx)
		if err == nil {
			st = s
			if cond(s) {
				return st, time.Since(start), true
			}
		}
		select {
		case <-ctx.Done():
			return st, time.Since(start), false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitInRing waits for every member to have its place in the ring.
func waitInRing(t *testing.T, within time.Duration, ms ...*vpnMember) {
	t.Helper()
	for _, m := range ms {
		if st, took, ok := waitStatus(m, within, func(s node.Status) bool { return s.InRing }); !ok {
			t.Fatalf("%s not in the ring after %v: %+v", m.name, took.Round(time.Millisecond), st)
		}
	}
}

// linkTo returns the row of st's link to the member named peer.
func linkTo(st node.Status, peer string) (node.LinkStatus, bool) {
	for _, l := range st.Links {
		if l.Peer == peer {
			return l, true
		}
	}
	return node.LinkStatus{}, false
}

// remoteAddr parses a link's remote endpoint.
func remoteAddr(l node.LinkStatus) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(l.Remote)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// vpnPath returns how st's VPN sends to the member named peer.
func vpnPath(st node.Status, peer string) vpn.Path {
	if st.VPN == nil {
		return ""
	}
	for _, p := range st.VPN.Peers {
		if p.Name == peer {
			return p.Path
		}
	}
	return ""
}

// twoSites starts the bootstrap on the public host and, once it answers,
// members a and b in the first host of sites 1 and 2; it returns when
// they were started. Two sited members and a bootstrap make a ring of
// three, so a and b are near neighbours: they start linking as they
// join, and their first traffic is their join.
func (l *natVPNLab) twoSites() (a, b *vpnMember, start time.Time) {
	t := l.t
	boot := l.add(l.lab.Public()[0], "boot", 1)
	if _, took, ok := waitStatus(boot, 10*time.Second, func(node.Status) bool { return true }); !ok {
		t.Fatalf("boot does not answer after %v", took)
	}
	start = time.Now()
	a = l.add(l.lab.Sites()[0].Hosts[0], "a", 2)
	b = l.add(l.lab.Sites()[1].Hosts[0], "b", 3)
	return a, b, start
}

// TestNAT_Namespaces_ConeHolePunch: two members behind two different
// cone-like NATs get a direct link within 10s of their first traffic; it
// is hole-punched: each sees the other at the other site's router. The
// clock starts when they start (see twoSites), and a pings b at once
// through the VPN.
func TestNAT_Namespaces_ConeHolePunch(t *testing.T) {
	l := newNATVPNLab(t, 1, netnstest.SiteSpec{NAT: netnstest.Cone, Hosts: 1}, netnstest.SiteSpec{NAT: netnstest.Cone, Hosts: 1})
	s1, s2 := l.lab.Sites()[0], l.lab.Sites()[1]
	a, b, start := l.twoSites()

	pinged := make(chan error, 1)
	var replied time.Duration
	go func() {
		_, err := pingUntil(a.host, b.vip, 10*time.Second)
		replied = time.Since(start)
		pinged <- err
	}()
	// Each must see the other at its router's public address: no other
	// path exists between two NATed sites but a hole punched through both.
	direct := func(peer string, router netip.Addr) func(node.Status) bool {
		return func(s node.Status) bool {
			lk, ok := linkTo(s, peer)
			return ok && lk.Relay == "" && remoteAddr(lk).Addr() == router
		}
	}
	var sts [2]node.Status
	var took [2]time.Duration
	for i, c := range []struct {
		m      *vpnMember
		peer   string
		router netip.Addr
	}{{a, "b", s2.Router.Underlay}, {b, "a", s1.Router.Underlay}} {
		st, _, ok := waitStatus(c.m, 10*time.Second-time.Since(start), direct(c.peer, c.router))
		took[i] = time.Since(start)
		sts[i] = st
		if !ok {
			lk, _ := linkTo(st, c.peer)
			t.Fatalf("%s has no direct link to %s at %v within 10s of starting: %+v (reflexive %v)", c.m.name, c.peer, c.router, lk, st.Reflexive)
		}
	}
	if err := <-pinged; err != nil {
		t.Fatalf("a -> b: %v", err)
	}
	la, _ := linkTo(sts[0], "b")
	lb, _ := linkTo(sts[1], "a")
	t.Logf("cone <-> cone: direct link a->b at %s, b->a at %s, %v after a and b started; a's first ping to b answered after %v (a is seen at %v, b at %v)",
		la.Remote, lb.Remote, max(took[0], took[1]).Round(time.Millisecond), replied.Round(time.Millisecond), sts[0].Reflexive, sts[1].Reflexive)
	if p := vpnPath(sts[0], "b"); p != vpn.PathDirect {
		// The link is there; the VPN moves to it on its next packet.
		if _, err := pingUntil(a.host, b.vip, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		st, _, ok := waitStatus(a, 5*time.Second, func(s node.Status) bool { return vpnPath(s, "b") == vpn.PathDirect })
		if !ok {
			t.Errorf("a's VPN sends to b over %q, want %q", vpnPath(st, "b"), vpn.PathDirect)
		}
	}
}

// TestNAT_Namespaces_SymmetricRelay: two members behind symmetric NATs,
// which no hole punch gets through, talk within 5s of their first
// traffic (the clock starts when they start, see twoSites), link through
// the bootstrap (a relay), and carry a TCP transfer with a matching
// checksum over that link.
func TestNAT_Namespaces_SymmetricRelay(t *testing.T) {
	l := newNATVPNLab(t, 1, netnstest.SiteSpec{NAT: netnstest.Symmetric, Hosts: 1}, netnstest.SiteSpec{NAT: netnstest.Symmetric, Hosts: 1})
	a, b, start := l.twoSites()

	// Until a and b are linked, the ring is wrong around them: they are
	// each other's neighbour, and lookups between them fail.
	if _, err := pingUntil(a.host, b.vip, 5*time.Second); err != nil {
		t.Fatalf("a -> b: %v", err)
	}
	replied := time.Since(start)
	if _, err := pingUntil(b.host, a.vip, 5*time.Second-replied); err != nil {
		t.Fatalf("b -> a: %v", err)
	}
	both := time.Since(start)

	relayed := func(peer string) func(node.Status) bool {
		return func(s node.Status) bool {
			lk, ok := linkTo(s, peer)
			return ok && lk.Relay == "boot"
		}
	}
	sa, _, ok := waitStatus(a, 10*time.Second, relayed("b"))
	if !ok {
		lk, _ := linkTo(sa, "b")
		t.Fatalf("a's link to b is not relayed by boot: %+v", lk)
	}
	sb, _, ok := waitStatus(b, 5*time.Second, relayed("a"))
	if !ok {
		lk, _ := linkTo(sb, "a")
		t.Fatalf("b's link to a is not relayed by boot: %+v", lk)
	}
	linked := time.Since(start)
	t.Logf("symmetric <-> symmetric: a's pings to b answered %v after a and b started, b's to a after %v; their link relayed by boot shown after %v (a is seen at %v, b at %v)",
		replied.Round(time.Millisecond), both.Round(time.Millisecond), linked.Round(time.Millisecond), sa.Reflexive, sb.Reflexive)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lkBefore, _ := linkTo(sa, "b")
	const size = 32 << 20
	rate, err := netnstest.TCPTransfer(ctx, a.host, b.host, b.vip, 0, size)
	if err != nil {
		t.Fatalf("32 MB a -> b through the relay: %v", err)
	}
	t.Logf("32 MB a -> b through the relay: checksum matches, %.0f Mbit/s", rate*8/1e6)
	st, err := a.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	switch lk, _ := linkTo(st, "b"); {
	case lk.Relay != "boot":
		t.Errorf("after the transfer, a's link to b: %+v, want relayed by boot", lk)
	case lk.BytesOut-lkBefore.BytesOut < size:
		t.Errorf("a's relayed link to b carried %d bytes, less than the transfer", lk.BytesOut-lkBefore.BytesOut)
	}
	if p := vpnPath(st, "b"); p != vpn.PathDirect {
		t.Errorf("a's VPN sends to b over %q, want the (relayed) link", p)
	}
}

// TestNAT_Namespaces_RebindDuringTransfer: a member behind a cone NAT
// receives a TCP transfer from another member when its NAT hands out new
// ports (Rebind: mappings flushed, external port changed). The transfer
// completes with a matching checksum, pings across it stop for less than
// 5s, and the member learns its new reflexive address. The other member
// is public (it follows the connection ID to the new address: the link is
// kept) or behind a cone NAT of its own, whose filter drops what comes
// from the new port: then the link dies (overlay.dead_after, 2s here) and
// a new one is punched to the new address, which the member offers as
// its peers' pings taught it.
func TestNAT_Namespaces_RebindDuringTransfer(t *testing.T) {
	t.Run("public peer", func(t *testing.T) { testRebindDuringTransfer(t, false) })
	t.Run("peer behind a cone", func(t *testing.T) { testRebindDuringTransfer(t, true) })
}

func testRebindDuringTransfer(t *testing.T, peerNATed bool) {
	sites := []netnstest.SiteSpec{{NAT: netnstest.Cone, Hosts: 1}}
	public := 2
	if peerNATed {
		sites, public = append(sites, netnstest.SiteSpec{NAT: netnstest.Cone, Hosts: 1}), 1
	}
	l := newNATVPNLab(t, public, sites...)
	site := l.lab.Sites()[0]
	l.add(l.lab.Public()[0], "boot", 1)
	var p *vpnMember
	if peerNATed {
		p = l.add(l.lab.Sites()[1].Hosts[0], "p", 2)
	} else {
		p = l.add(l.lab.Public()[1], "p", 2)
	}
	a := l.add(site.Hosts[0], "a", 3)
	waitInRing(t, 30*time.Second, p, a)
	if _, err := pingUntil(p.host, a.vip, 10*time.Second); err != nil {
		t.Fatalf("p -> a: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oldMapped := netip.AddrPortFrom(site.Router.Underlay, natPort)
	before, _, ok := waitStatus(p, 10*time.Second, func(s node.Status) bool {
		lk, ok := linkTo(s, "a")
		return ok && lk.Relay == "" && remoteAddr(lk) == oldMapped
	})
	if !ok {
		t.Fatalf("p has no direct link to a at %v: %+v", oldMapped, before.Links)
	}
	linkBefore, _ := linkTo(before, "a")

	// The site's downlink is shaped to 100 Mbit/s so that the transfer is
	// still under way when the NAT rebinds, however fast this machine is.
	if _, err := site.Router.Run(ctx, "tc", "qdisc", "add", "dev", "lan", "root", "tbf", "rate", "100mbit", "burst", "64kb", "latency", "20ms"); err != nil {
		t.Fatal(err)
	}

	// Pings p -> a every 100ms; replies are timestamped.
	var (
		mu      sync.Mutex
		replies []time.Time
	)
	pingCtx, stopPing := context.WithCancel(ctx)
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		for pingCtx.Err() == nil {
			next := time.Now().Add(100 * time.Millisecond)
			if _, err := p.host.Ping(pingCtx, a.vip, time.Second); err == nil {
				mu.Lock()
				replies = append(replies, time.Now())
				mu.Unlock()
			}
			select {
			case <-time.After(time.Until(next)):
			case <-pingCtx.Done():
			}
		}
	}()
	defer func() { stopPing(); <-pinged }()

	const size = 40 << 20
	type result struct {
		rate float64
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		rate, err := netnstest.TCPTransfer(ctx, p.host, a.host, a.vip, 0, size)
		done <- result{rate, err, time.Now()}
	}()
	time.Sleep(time.Second)
	select {
	case r := <-done:
		t.Fatalf("the transfer ended before the rebind: %+v", r)
	default:
	}
	rebound := time.Now()
	if err := site.Rebind(ctx); err != nil {
		t.Fatal(err)
	}
	port, _ := site.MappedPort(0, natPort)
	newMapped := netip.AddrPortFrom(site.Router.Underlay, port)
	t.Logf("NAT rebound: a's mapping %v -> %v", oldMapped, newMapped)

	// a learns its new reflexive address from its peers' pings, and p
	// sends to it: the same link, found by connection ID.
	sa, learnt, ok := waitStatus(a, 10*time.Second, func(s node.Status) bool {
		return len(s.Reflexive) > 0 && s.Reflexive[0] == newMapped.String()
	})
	if !ok {
		t.Errorf("a's reflexive addresses %v, want %v first", sa.Reflexive, newMapped)
	}
	sp, followed, ok := waitStatus(p, 10*time.Second, func(s node.Status) bool {
		lk, ok := linkTo(s, "a")
		return ok && remoteAddr(lk) == newMapped
	})
	linkAfter, _ := linkTo(sp, "a")
	kept := linkAfter.Since == linkBefore.Since && linkAfter.Role == linkBefore.Role
	switch {
	case !ok:
		t.Errorf("p's link to a: %+v, want remote %v", linkAfter, newMapped)
	case !kept && !peerNATed:
		t.Errorf("p's link to a was replaced (%+v before, %+v after), want the same link at a new address", linkBefore, linkAfter)
	}

	r := <-done
	if r.err != nil {
		t.Fatalf("40 MB p -> a across the rebind: %v", r.err)
	}
	// Keep pinging a little past the end of the transfer, so a gap at its
	// end shows.
	for time.Since(rebound) < 5*time.Second || time.Since(r.at) < time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	stopPing()
	<-pinged

	mu.Lock()
	defer mu.Unlock()
	var gap time.Duration
	var gapAt time.Time
	firstAfter := time.Duration(-1)
	for i, at := range replies {
		if at.After(rebound) && firstAfter < 0 {
			firstAfter = at.Sub(rebound)
		}
		if i > 0 && at.Sub(replies[i-1]) > gap {
			gap, gapAt = at.Sub(replies[i-1]), replies[i-1]
		}
	}
	t.Logf("40 MB p -> a across the rebind: checksum matches, %.0f Mbit/s (shaped to 100), done %v after the rebind",
		r.rate*8/1e6, r.at.Sub(rebound).Round(time.Millisecond))
	t.Logf("rebind: %d ping replies; longest gap %v (from %v after the rebind); first reply %v after it; a learnt its new address within %v, p sent to it within %v (link kept: %v)",
		len(replies), gap.Round(time.Millisecond), gapAt.Sub(rebound).Round(time.Millisecond), firstAfter.Round(time.Millisecond),
		learnt.Round(time.Millisecond), followed.Round(time.Millisecond), kept)
	switch {
	case firstAfter < 0:
		t.Errorf("no ping reply after the rebind")
	case gap > 5*time.Second:
		t.Errorf("pings went unanswered for %v, want at most 5s", gap)
	}
}
