package netnstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// The reflector's ports: two per public host make four destinations with
// two hosts.
const reflectorPort, reflectorPort2 = 3478, 3479

func TestNATLab_AddressesAndPings(t *testing.T) {
	t.Parallel()
	lab := NewNATLab(t, 2, SiteSpec{NAT: Cone, Hosts: 2}, SiteSpec{NAT: Symmetric, Hosts: 1}, SiteSpec{NAT: Route, Hosts: 1})
	pub, sites := lab.Public(), lab.Sites()
	for _, c := range []struct {
		what      string
		got, want netip.Addr
	}{
		{"public host 2", pub[1].Underlay, netip.MustParseAddr("203.0.113.2")},
		{"site 2 router", sites[1].Router.Underlay, netip.MustParseAddr("203.0.113.102")},
		{"site 1 inside", sites[0].Inside, netip.MustParseAddr("10.1.0.1")},
		{"site 1 host 2", sites[0].Hosts[1].Underlay, netip.MustParseAddr("10.1.0.3")},
		{"site 3 host 1", sites[2].Hosts[0].Underlay, netip.MustParseAddr("10.3.0.2")},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if got, want := sites[1].Prefix, netip.MustParsePrefix("10.2.0.0/24"); got != want {
		t.Errorf("site 2 prefix %v, want %v", got, want)
	}
	if got := len(lab.Namespaces()); got != 2+(2+1+1)+3*2+1 {
		t.Errorf("%d namespaces: %v", got, lab.Namespaces())
	}

	ctx := t.Context()
	ping := func(from *Host, to netip.Addr) {
		t.Helper()
		if _, err := from.Ping(ctx, to, 3*time.Second); err != nil {
			t.Error(err)
		}
	}
	for _, s := range sites {
		for _, h := range s.Hosts {
			ping(h, s.Inside)
			ping(h, pub[0].Underlay)
			for _, o := range sites {
				ping(h, o.Router.Underlay) // through its own router's NAT
			}
		}
	}
	route := sites[2].Hosts[0].Underlay
	ping(pub[1], route)            // routed sites are reachable from outside,
	ping(sites[0].Hosts[0], route) // from other sites,
	ping(sites[2].Hosts[0], pub[1].Underlay)
	// but NAT sites are not: nothing routes their prefixes.
	if _, err := pub[0].Ping(ctx, sites[0].Hosts[0].Underlay, 300*time.Millisecond); err == nil {
		t.Errorf("a public host pinged %v behind a NAT", sites[0].Hosts[0].Underlay)
	}
}

func TestNATLab_Mappings(t *testing.T) {
	t.Parallel()
	lab := NewNATLab(t, 2, SiteSpec{NAT: Cone, Hosts: 1}, SiteSpec{NAT: Symmetric, Hosts: 1}, SiteSpec{NAT: Route, Hosts: 1})
	var refls []netip.AddrPort
	for _, h := range lab.Public() {
		refls = append(refls, startReflector(t, h, reflectorPort), startReflector(t, h, reflectorPort2))
	}
	for _, s := range lab.Sites() {
		h := s.Hosts[0]
		c := udpConn(t, h, 40000)
		var seen []netip.AddrPort
		for _, r := range refls {
			seen = append(seen, reflexive(t, c, r))
		}
		t.Logf("%v site: %v:40000 is seen as %v", s.NAT, h.Underlay, seen)
		ports := map[uint16]bool{}
		for _, a := range seen {
			ports[a.Port()] = true
			want := s.Router.Underlay
			if s.NAT == Route {
				want = h.Underlay
			}
			if a.Addr() != want {
				t.Errorf("%v site: seen from %v, want address %v", s.NAT, a, want)
			}
		}
		switch s.NAT {
		case Cone, Route: // one mapping, the port kept
			if len(ports) != 1 || !ports[40000] {
				t.Errorf("%v site: ports %v, want 40000 towards every destination", s.NAT, seen)
			}
		case Symmetric:
			// A port per destination, drawn at random: two clashes among
			// four draws from 32768 ports are a 1-in-10^8 chance.
			if len(ports) < 3 {
				t.Errorf("symmetric site: ports %v, want one per destination", seen)
			}
			for p := range ports {
				if p < 32768 {
					t.Errorf("symmetric site: port %d, want 32768-65535", p)
				}
			}
		}
	}
}

func TestNATLab_DropsUnsolicitedInbound(t *testing.T) {
	t.Parallel()
	lab := NewNATLab(t, 2, SiteSpec{NAT: Cone, Hosts: 1}, SiteSpec{NAT: Symmetric, Hosts: 1})
	pub := lab.Public()
	refl := startReflector(t, pub[0], reflectorPort)
	other := udpConn(t, pub[1], 0)    // another public host
	sidePort := udpConn(t, pub[0], 0) // the reflector's host, another port
	for _, s := range lab.Sites() {
		h := s.Hosts[0]
		c := udpConn(t, h, 40000)
		mapped := reflexive(t, c, refl) // the mapping exists, and replies come in
		// With a route to the site's prefix, a public host could address
		// the site host directly, were it not for the forward filter.
		if _, err := pub[1].Run(t.Context(), "ip", "route", "add", s.Prefix.String(), "via", s.Router.Underlay.String()); err != nil {
			t.Fatal(err)
		}
		direct := netip.AddrPortFrom(h.Underlay, 40000)
		for range 3 {
			for _, p := range []struct {
				from *net.UDPConn
				to   netip.AddrPort
			}{{other, mapped}, {sidePort, mapped}, {other, direct}, {sidePort, netip.AddrPortFrom(s.Router.Underlay, 40001)}} {
				if _, err := p.from.WriteToUDPAddrPort([]byte("unsolicited"), p.to); err != nil {
					t.Fatal(err)
				}
			}
		}
		if from, ok := receive(c, 500*time.Millisecond); ok {
			t.Errorf("%v site: %v received an unsolicited datagram from %v", s.NAT, h.Underlay, from)
		}
		if again := reflexive(t, c, refl); again != mapped {
			t.Errorf("%v site: mapping moved from %v to %v", s.NAT, mapped, again)
		}
	}
}

func TestNATLab_HolePunchBetweenCones(t *testing.T) {
	t.Parallel()
	lab := NewNATLab(t, 1, SiteSpec{NAT: Cone, Hosts: 1}, SiteSpec{NAT: Cone, Hosts: 1})
	refl := startReflector(t, lab.Public()[0], reflectorPort)
	a := udpConn(t, lab.Sites()[0].Hosts[0], 40000)
	b := udpConn(t, lab.Sites()[1].Hosts[0], 40000)
	ra, rb := reflexive(t, a, refl), reflexive(t, b, refl)
	if heardA, heardB, ok := punch(t, a, b, ra, rb, 3*time.Second); !ok {
		t.Fatalf("no hole punched between %v and %v (a heard %v, b heard %v)", ra, rb, heardA, heardB)
	}
}

func TestNATLab_SymmetricDefeatsHolePunching(t *testing.T) {
	t.Parallel()
	lab := NewNATLab(t, 1, SiteSpec{NAT: Symmetric, Hosts: 1}, SiteSpec{NAT: Symmetric, Hosts: 1})
	refl := startReflector(t, lab.Public()[0], reflectorPort)
	a := udpConn(t, lab.Sites()[0].Hosts[0], 40000)
	b := udpConn(t, lab.Sites()[1].Hosts[0], 40000)
	ra, rb := reflexive(t, a, refl), reflexive(t, b, refl)
	if heardA, heardB, _ := punch(t, a, b, ra, rb, time.Second); heardA.IsValid() || heardB.IsValid() {
		t.Fatalf("a datagram crossed two symmetric NATs (a heard %v, b heard %v)", heardA, heardB)
	}
}

func TestSite_FlushAndRebind(t *testing.T) {
	t.Parallel()
	for _, nat := range []NAT{Cone, Symmetric} {
		t.Run(nat.String(), func(t *testing.T) {
			t.Parallel()
			lab := NewNATLab(t, 1, SiteSpec{NAT: nat, Hosts: 2})
			s := lab.Sites()[0]
			refls := []netip.AddrPort{startReflector(t, lab.Public()[0], reflectorPort), startReflector(t, lab.Public()[0], reflectorPort2)}
			// Both hosts on the same port, as members with one configured
			// port are.
			conns := []*net.UDPConn{udpConn(t, s.Hosts[0], 4820), udpConn(t, s.Hosts[1], 4820)}
			seen := func() [2][2]netip.AddrPort {
				var m [2][2]netip.AddrPort
				for i, c := range conns {
					for j, r := range refls {
						m[i][j] = reflexive(t, c, r)
					}
				}
				return m
			}
			before := seen()
			t.Logf("before: %v", before)
			if ct, err := s.Conntrack(); errors.Is(err, os.ErrNotExist) {
				t.Logf("no /proc/net/nf_conntrack: %v", err)
			} else if err != nil {
				t.Error(err)
			} else if want := fmt.Sprintf("sport=%d dport=%d", reflectorPort, before[0][0].Port()); !strings.Contains(ct, want) {
				t.Errorf("conntrack table lacks %q:\n%s", want, ct)
			}

			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			if n, err := s.ConntrackCount(); err != nil || n != 0 {
				t.Errorf("after Flush: %d conntrack entries, %v", n, err)
			}
			flushed := seen()
			t.Logf("after Flush: %v", flushed)
			if nat == Cone && flushed[0] != before[0] {
				t.Errorf("after Flush, host 1 moved from %v to %v: masquerade keeps a free port", before[0], flushed[0])
			}

			if err := s.Rebind(t.Context()); err != nil {
				t.Fatal(err)
			}
			rebound := seen()
			t.Logf("after Rebind: %v", rebound)
			for i := range conns {
				for j := range refls {
					if rebound[i][j].Port() == before[i][j].Port() || rebound[i][j].Port() == flushed[i][j].Port() {
						t.Errorf("host %d towards %v: port %d after Rebind, as before", i+1, refls[j], rebound[i][j].Port())
					}
				}
				if nat == Cone {
					want, _ := s.MappedPort(i, 4820)
					if rebound[i][0].Port() != want || rebound[i][1] != rebound[i][0] {
						t.Errorf("host %d: %v after Rebind, want port %d towards both", i+1, rebound[i], want)
					}
				}
			}
			if nat == Cone && rebound[0][0] == rebound[1][0] {
				t.Errorf("both hosts mapped to %v", rebound[0][0])
			}
			if err := s.Rebind(t.Context()); err != nil { // back to the first range for Symmetric
				t.Fatal(err)
			}
			t.Logf("after a second Rebind: %v", seen())
		})
	}
	t.Run("route", func(t *testing.T) {
		t.Parallel()
		s := NewNATLab(t, 0, SiteSpec{NAT: Route}).Sites()[0]
		if err := s.Rebind(t.Context()); err == nil {
			t.Error("Rebind of a route site succeeded")
		}
		if err := s.Flush(); err != nil {
			t.Error(err)
		}
	})
}

// TestSite_TCPAcrossFlushAndRebind shows what a TCP flow through a cone
// NAT sees: after Flush its next segment gets the same mapping (picked up
// mid-stream), after Rebind another port, which the far end answers with
// a reset.
func TestSite_TCPAcrossFlushAndRebind(t *testing.T) {
	t.Parallel()
	lab := NewNATLab(t, 1, SiteSpec{NAT: Cone, Hosts: 1})
	s, server := lab.Sites()[0], lab.Public()[0]
	var ln net.Listener
	if err := server.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(server.Underlay, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	echoed := make(chan struct{})
	go func() { // echoes lines on the first connection
		defer close(echoed)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		stop := context.AfterFunc(t.Context(), func() { c.Close() }) // ends before Cleanup
		defer stop()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-echoed
	})

	var c net.Conn
	if err := s.Hosts[0].Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	echo := func(msg string) error {
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err == nil && got != msg+"\n" {
			err = fmt.Errorf("echo %q, want %q", got, msg)
		}
		return err
	}
	if err := echo("before"); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := echo("after flush"); err != nil {
		t.Fatalf("after Flush: %v", err)
	}
	if err := s.Rebind(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := echo("after rebind")
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("after Rebind: %v, want a reset from the far end", err)
	}
	t.Logf("after Rebind, as expected: %v", err)
}

// udpConn opens a UDP socket in h on its underlay address and port (0:
// any), closed by t.Cleanup.
func udpConn(t *testing.T, h *Host, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.Underlay, uint16(port))))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startReflector answers each datagram that reaches h's port with the
// address it came from, as text (a STUN server, in short). It stops at
// t's Cleanup.
func startReflector(t *testing.T, h *Host, port int) netip.AddrPort {
	t.Helper()
	c := udpConn(t, h, port)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort([]byte(from.String()), from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return netip.AddrPortFrom(h.Underlay, uint16(port))
}

// reflexive returns the address the reflector refl sees c's datagrams
// come from.
func reflexive(t *testing.T, c *net.UDPConn, refl netip.AddrPort) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 1500)
	for range 10 {
		if _, err := c.WriteToUDPAddrPort([]byte("?"), refl); err != nil {
			t.Fatalf("asking %v: %v", refl, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if from.Addr().Unmap() != refl.Addr() || from.Port() != refl.Port() {
				continue
			}
			a, err := netip.ParseAddrPort(string(buf[:n]))
			if err != nil {
				t.Fatalf("reflector %v answered %q", refl, buf[:n])
			}
			return a
		}
	}
	t.Fatalf("no answer from the reflector %v to %v", refl, c.LocalAddr())
	return netip.AddrPort{}
}

// receive waits up to d for a datagram on c and returns its sender.
func receive(c *net.UDPConn, d time.Duration) (netip.AddrPort, bool) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	_, from, err := c.ReadFromUDPAddrPort(buf)
	return from, err == nil
}

// punch has a and b send to each other's reflexive address (ra, rb) every
// 100ms, as both sides of a hole punch do, until each has heard the other
// or within passes. It returns the sender of the first datagram each
// heard, and whether each heard the other from its reflexive address.
func punch(t *testing.T, a, b *net.UDPConn, ra, rb netip.AddrPort, within time.Duration) (heardA, heardB netip.AddrPort, ok bool) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		if _, err := a.WriteToUDPAddrPort([]byte("punch"), rb); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WriteToUDPAddrPort([]byte("punch"), ra); err != nil {
			t.Fatal(err)
		}
		if !heardA.IsValid() {
			heardA, _ = receive(a, 50*time.Millisecond)
		}
		if !heardB.IsValid() {
			heardB, _ = receive(b, 50*time.Millisecond)
		}
		if heardA.IsValid() && heardB.IsValid() {
			break
		}
	}
	// Through a cone, each hears the other from exactly the address the
	// reflector saw.
	return heardA, heardB, heardA == rb && heardB == ra
}
