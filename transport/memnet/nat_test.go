package memnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ringvpn/ringvpn/transport"
)

func newNAT(t testing.TB, n *Network, ip string, cfg NATConfig) *NAT {
	t.Helper()
	nat, err := n.NewNAT(netip.MustParseAddr(ip), cfg)
	if err != nil {
		t.Fatalf("NewNAT(%s, %+v): %v", ip, cfg, err)
	}
	return nat
}

func natListen(t testing.TB, nat *NAT, addr string) *Conn {
	t.Helper()
	c, err := nat.Listen(netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatalf("NAT %v: Listen(%s): %v", nat.Addr(), addr, err)
	}
	return c
}

// dgram is a datagram read by a test.
type dgram struct {
	Msg  string
	From netip.AddrPort
}

// queued returns how many datagrams wait in c's receive queue.
func queued(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.q.len()
}

// drain reads what c has queued without blocking.
func drain(t testing.TB, c *Conn) []dgram {
	t.Helper()
	var got []dgram
	for queued(c) > 0 {
		b, from := readOne(t, c)
		got = append(got, dgram{string(b), from})
	}
	return got
}

// recvFrom reads the one datagram c must have queued and returns its
// source.
func recvFrom(t testing.TB, c *Conn) netip.AddrPort {
	t.Helper()
	if k := queued(c); k != 1 {
		t.Fatalf("%v has %d datagrams queued, want 1", c.LocalAddr(), k)
	}
	_, from := readOne(t, c)
	return from
}

// reflect asks the reflector r, STUN-like, which public address c's
// datagrams to it come from; the answer must get back through c's NAT.
func reflect(t testing.TB, c, r *Conn) netip.AddrPort {
	t.Helper()
	mustWrite(t, c, []byte("binding request"), r.LocalAddr())
	seen := recvFrom(t, r)
	mustWrite(t, r, []byte(seen.String()), seen)
	if k := queued(c); k != 1 {
		t.Fatalf("the reflector's answer to %v did not get through its NAT", seen)
	}
	b, from := readOne(t, c)
	if from != r.LocalAddr() || string(b) != seen.String() {
		t.Fatalf("reflector answer %q from %v, want %q from %v", b, from, seen, r.LocalAddr())
	}
	return seen
}

func TestNAT_MappingAndFiltering(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  NATConfig
		// Whether the public port towards r1 is reused towards r1b (same
		// IP, other port) and towards r2 (other IP).
		sameToPort, sameToIP bool
		// Whether a datagram to the port mapped for r1 gets in from r1b
		// (a port of r1's IP that was sent to), r1x (a port of r1's IP
		// never sent to), r2 (sent to, other IP) and r3 (never sent to).
		fromR1b, fromR1x, fromR2, fromR3 bool
	}{
		{"FullCone", FullCone.Config(), true, true, true, true, true, true},
		{"RestrictedCone", RestrictedCone.Config(), true, true, true, true, true, false},
		{"PortRestrictedCone", PortRestrictedCone.Config(), true, true, true, false, true, false},
		{"AddressDependent", NATConfig{Mapping: AddressDependent, Filtering: AddressDependent}, true, false, true, true, false, false},
		{"AddressDependentMappingPortFiltering", NATConfig{Mapping: AddressDependent, Filtering: AddressAndPortDependent}, true, false, true, false, false, false},
		{"SymmetricOpenFiltering", NATConfig{Mapping: AddressAndPortDependent}, false, false, true, true, true, true},
		{"Symmetric", Symmetric.Config(), false, false, false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			nat := newNAT(t, n, "203.0.113.1", tc.cfg)
			a := natListen(t, nat, "192.168.1.10:5000")
			r1, r1b, r1x := listen(t, n, "198.51.100.1:1000"), listen(t, n, "198.51.100.1:2000"), listen(t, n, "198.51.100.1:3000")
			r2, r3 := listen(t, n, "198.51.100.2:1000"), listen(t, n, "198.51.100.3:1000")

			var seen [3]netip.AddrPort
			for i, r := range []*Conn{r1, r1b, r2} {
				mustWrite(t, a, []byte("out"), r.LocalAddr())
				seen[i] = recvFrom(t, r)
				if seen[i].Addr() != nat.Addr() {
					t.Errorf("%v saw %v, want the NAT's address %v", r.LocalAddr(), seen[i], nat.Addr())
				}
			}
			if got := seen[1] == seen[0]; got != tc.sameToPort {
				t.Errorf("same public port for another port of the same IP = %v, want %v (%v, %v)", got, tc.sameToPort, seen[0], seen[1])
			}
			if got := seen[2] == seen[0]; got != tc.sameToIP {
				t.Errorf("same public port for another IP = %v, want %v (%v, %v)", got, tc.sameToIP, seen[0], seen[2])
			}
			// Only an endpoint-independent mapping is one public address.
			wantPub := netip.AddrPort{}
			if tc.cfg.Mapping == EndpointIndependent {
				wantPub = seen[0]
			}
			if got := a.PublicAddr(); got != wantPub {
				t.Errorf("PublicAddr = %v, want %v", got, wantPub)
			}

			var filtered uint64
			for _, in := range []struct {
				from *Conn
				want bool
			}{{r1, true}, {r1b, tc.fromR1b}, {r1x, tc.fromR1x}, {r2, tc.fromR2}, {r3, tc.fromR3}} {
				mustWrite(t, in.from, []byte("in"), seen[0])
				got := drain(t, a)
				if len(got) == 1 && got[0].From != in.from.LocalAddr() {
					t.Errorf("datagram from %v arrived from %v", in.from.LocalAddr(), got[0].From)
				}
				if (len(got) == 1) != in.want {
					t.Errorf("from %v to %v: %d arrived, want admitted = %v", in.from.LocalAddr(), seen[0], len(got), in.want)
				}
				if !in.want {
					filtered++
				}
			}
			s := n.Stats()
			if s.DroppedFiltered != filtered || s.DroppedNoListener != 0 {
				t.Errorf("stats %+v; want %d dropped by filtering and none for no listener", s, filtered)
			}
			checkConservation(t, s)
		})
	}
}

func TestNAT_HolePunching(t *testing.T) {
	types := []NATType{FullCone, RestrictedCone, PortRestrictedCone, Symmetric}
	for _, ta := range types {
		for _, tb := range types {
			// The classic table: a symmetric NAT defeats hole punching
			// against itself and against port-restricted filtering.
			want := !(ta == Symmetric && tb >= PortRestrictedCone || tb == Symmetric && ta >= PortRestrictedCone)
			t.Run(ta.String()+"-"+tb.String(), func(t *testing.T) {
				n := New(1)
				natA := newNAT(t, n, "203.0.113.1", ta.Config())
				natB := newNAT(t, n, "203.0.113.2", tb.Config())
				// The same private address behind both: the LANs are apart.
				a := natListen(t, natA, "192.168.1.10:5000")
				b := natListen(t, natB, "192.168.1.10:5000")
				r := listen(t, n, "198.51.100.1:3478")
				reflA, reflB := reflect(t, a, r), reflect(t, b, r)

				// Simultaneous open towards the reflexive addresses; the
				// second round passes the permissions the first made.
				for range 2 {
					mustWrite(t, a, []byte("punch"), reflB)
					mustWrite(t, b, []byte("punch"), reflA)
				}
				heardA, heardB := drain(t, a), drain(t, b)
				// Whoever heard the peer answers where it came from (a
				// peer-reflexive address, as ICE does).
				if len(heardA) > 0 {
					mustWrite(t, a, []byte("ack"), heardA[0].From)
				}
				if len(heardB) > 0 {
					mustWrite(t, b, []byte("ack"), heardB[0].From)
				}
				heardA, heardB = append(heardA, drain(t, a)...), append(heardB, drain(t, b)...)
				for _, d := range heardA {
					if d.From.Addr() != natB.Addr() {
						t.Errorf("a heard %q from %v, want from %v", d.Msg, d.From, natB.Addr())
					}
				}
				for _, d := range heardB {
					if d.From.Addr() != natA.Addr() {
						t.Errorf("b heard %q from %v, want from %v", d.Msg, d.From, natA.Addr())
					}
				}
				got := len(heardA) > 0 && len(heardB) > 0
				if got != want {
					t.Errorf("connected = %v (a heard %v, b heard %v), want %v", got, heardA, heardB, want)
				}
				s := n.Stats()
				if !want && s.DroppedFiltered == 0 {
					t.Errorf("stats %+v: a failed punch should count filtered datagrams", s)
				}
				checkConservation(t, s)
			})
		}
	}
}

// The port a symmetric NAT shows a reflector is not the one a peer sees,
// and the peer can't use it.
func TestNAT_Symmetric_ReflexivePortUseless(t *testing.T) {
	n := New(1)
	nat := newNAT(t, n, "203.0.113.1", Symmetric.Config())
	a := natListen(t, nat, "192.168.1.10:5000")
	r, p := listen(t, n, "198.51.100.1:3478"), listen(t, n, "198.51.100.2:4000")
	refl := reflect(t, a, r)
	mustWrite(t, a, []byte("hi"), p.LocalAddr())
	direct := recvFrom(t, p)
	if direct == refl || direct.Addr() != refl.Addr() {
		t.Errorf("peer sees %v, reflector saw %v; want another port on the same IP", direct, refl)
	}
	mustWrite(t, p, []byte("via reflexive"), refl)
	mustWrite(t, p, []byte("via seen"), direct)
	if got := drain(t, a); len(got) != 1 || got[0].Msg != "via seen" {
		t.Errorf("a got %v, want only %q", got, "via seen")
	}
	if s := n.Stats(); s.DroppedFiltered != 1 {
		t.Errorf("DroppedFiltered = %d, want 1", s.DroppedFiltered)
	}
	if got := nat.Mappings(); got != 2 {
		t.Errorf("Mappings = %d, want 2 (reflector and peer)", got)
	}
}

func TestNAT_Expiry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     NATConfig
		timeout time.Duration
	}{
		{"FullConeDefault", FullCone.Config(), DefaultNATTimeout},
		{"RestrictedCone5s", NATConfig{Filtering: AddressDependent, Timeout: 5 * time.Second}, 5 * time.Second},
		{"Symmetric2m", NATConfig{Mapping: AddressAndPortDependent, Filtering: AddressAndPortDependent, Timeout: 2 * time.Minute}, 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// With latency, the NAT decides when a datagram arrives.
				const latency = 100 * time.Millisecond
				n := New(1)
				setDefaultLink(t, n, LinkConfig{Latency: latency})
				nat := newNAT(t, n, "203.0.113.1", tc.cfg)
				if got := nat.Config().Timeout; got != tc.timeout {
					t.Errorf("Config().Timeout = %v, want %v", got, tc.timeout)
				}
				a := natListen(t, nat, "192.168.1.10:5000")
				r := listen(t, n, "198.51.100.1:3478")
				step := func(d time.Duration) { time.Sleep(d); synctest.Wait() }

				// Sent at 0: the mapping lives until timeout, whatever
				// comes in.
				mustWrite(t, a, []byte("out"), r.LocalAddr())
				step(latency)
				pub := recvFrom(t, r)
				mustWrite(t, r, []byte("early"), pub)
				step(tc.timeout - 2*latency)
				mustWrite(t, r, []byte("late"), pub) // arrives at timeout
				step(2 * latency)                    // arrives at timeout
				if got := drain(t, a); len(got) != 1 || got[0].Msg != "early" {
					t.Errorf("a got %v; want only the datagram that arrived before the timeout", got)
				}
				if s := n.Stats(); s.DroppedFiltered != 1 {
					t.Errorf("DroppedFiltered = %d, want 1", s.DroppedFiltered)
				}
				if got := nat.Mappings(); got != 0 {
					t.Errorf("Mappings = %d after the timeout, want 0", got)
				}

				// A new mapping, kept alive by datagrams out.
				mustWrite(t, a, []byte("out"), r.LocalAddr())
				step(latency)
				pub2 := recvFrom(t, r)
				if pub2 == pub || pub2.Addr() != pub.Addr() {
					t.Errorf("after expiry the NAT maps to %v, want a new port instead of %v", pub2, pub)
				}
				for range 3 {
					step(tc.timeout - time.Second)
					mustWrite(t, a, []byte("keepalive"), r.LocalAddr())
				}
				step(latency)
				if got := drain(t, r); len(got) != 3 || got[2].From != pub2 {
					t.Errorf("reflector got %v, want 3 keepalives from %v", got, pub2)
				}
				mustWrite(t, r, []byte("kept"), pub2)
				step(latency)
				if got := drain(t, a); len(got) != 1 || got[0].Msg != "kept" {
					t.Errorf("a got %v through a refreshed mapping, want %q", got, "kept")
				}
				checkConservation(t, n.Stats())
			})
		})
	}
}

// A filter remembers each destination for a timeout after the last datagram
// to it, even while other traffic keeps the mapping alive.
func TestNAT_Expiry_FilterPermission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		nat := newNAT(t, n, "203.0.113.1", RestrictedCone.Config())
		a := natListen(t, nat, "192.168.1.10:5000")
		r1, r2 := listen(t, n, "198.51.100.1:1"), listen(t, n, "198.51.100.2:1")
		mustWrite(t, a, []byte("x"), r1.LocalAddr())
		pub := recvFrom(t, r1)
		time.Sleep(20 * time.Second)
		mustWrite(t, a, []byte("x"), r2.LocalAddr())
		recvFrom(t, r2)
		time.Sleep(15 * time.Second) // r1 last sent to 35 s ago, r2 15 s ago
		mustWrite(t, r1, []byte("r1"), pub)
		mustWrite(t, r2, []byte("r2"), pub)
		if got := drain(t, a); len(got) != 1 || got[0].Msg != "r2" {
			t.Errorf("a got %v, want only %q", got, "r2")
		}
		if s := n.Stats(); s.DroppedFiltered != 1 {
			t.Errorf("DroppedFiltered = %d, want 1", s.DroppedFiltered)
		}
	})
}

// Expired state is swept from the send path, so a NAT whose hosts come and
// go does not keep their ports.
func TestNAT_Expiry_Sweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		nat := newNAT(t, n, "203.0.113.1", NATConfig{Mapping: EndpointIndependent, Filtering: AddressAndPortDependent})
		r := listen(t, n, "198.51.100.1:1")
		var conns []*Conn
		for i := range 10 {
			c := natListen(t, nat, fmt.Sprintf("192.168.1.%d:5000", i+1))
			mustWrite(t, c, []byte("x"), r.LocalAddr())
			mustWrite(t, c, []byte("x"), netip.AddrPortFrom(r.LocalAddr().Addr(), uint16(2+i)))
			conns = append(conns, c)
		}
		routes := func() int {
			n.mu.Lock()
			defer n.mu.Unlock()
			return len(n.routes)
		}
		if got := routes(); got != 1+10 {
			t.Errorf("%d routes, want the reflector's and 10 mappings", got)
		}
		time.Sleep(DefaultNATTimeout / 2)
		mustWrite(t, conns[0], []byte("x"), r.LocalAddr())
		time.Sleep(DefaultNATTimeout / 2)
		if got := nat.Mappings(); got != 1 {
			t.Errorf("Mappings = %d, want the 1 refreshed", got)
		}
		mustWrite(t, conns[0], []byte("x"), r.LocalAddr()) // sweeps
		n.mu.Lock()
		ports, sent := len(nat.byPort), len(nat.byPort[conns[0].out[netip.AddrPort{}].pub.Port()].sent)
		n.mu.Unlock()
		if got := routes(); got != 1+1 || ports != 1 {
			t.Errorf("after a sweep: %d routes, %d ports mapped; want 2 and 1", got, ports)
		}
		if sent != 1 {
			t.Errorf("the live mapping remembers %d destinations, want the 1 sent to within the timeout", sent)
		}
	})
}

// A mapping can expire between two sweeps; it is checked where it is used.
func TestNAT_Expiry_BetweenSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		nat := newNAT(t, n, "203.0.113.1", FullCone.Config())
		a, b := natListen(t, nat, "192.168.1.10:5000"), natListen(t, nat, "192.168.1.11:5000")
		r := listen(t, n, "198.51.100.1:3478")
		other := func() { // traffic from b, which sweeps when due
			mustWrite(t, b, []byte("x"), r.LocalAddr())
			drain(t, r)
		}
		other() // sweeps at 0
		time.Sleep(10 * time.Second)
		pub := reflect(t, a, r)
		time.Sleep(20 * time.Second)
		other()                      // sweeps at 30 s; a's mapping lives
		time.Sleep(11 * time.Second) // a's mapping expired at 40 s
		pub2 := reflect(t, a, r)
		mustWrite(t, r, []byte("x"), pub)
		if s := n.Stats(); s.DroppedFiltered != 1 {
			t.Errorf("DroppedFiltered = %d, want the datagram to the expired mapping", s.DroppedFiltered)
		}
		time.Sleep(DefaultNATTimeout - time.Second)
		if pub3 := reflect(t, a, r); pub2 == pub || pub3 != pub2 {
			t.Errorf("a mapped to %v, then %v, then %v; want a new port after expiry, then the same", pub, pub2, pub3)
		}
	})
}

func TestNAT_PortExhaustion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		nat := newNAT(t, n, "203.0.113.1", Symmetric.Config())
		a := natListen(t, nat, "192.168.1.10:5000")
		r1, r2 := listen(t, n, "198.51.100.1:1"), listen(t, n, "198.51.100.3:1")
		mustWrite(t, a, []byte("x"), r1.LocalAddr()) // sweeps at 0
		time.Sleep(20 * time.Second)
		mustWrite(t, a, []byte("x"), r1.LocalAddr()) // lives until 50 s
		time.Sleep(11 * time.Second)
		// Nobody listens at these destinations; each still takes a port.
		// The first sweeps at 31 s.
		for i := range ephemeralCount - 1 {
			mustWrite(t, a, []byte("x"), netip.AddrPortFrom(netip.MustParseAddr("198.51.100.2"), uint16(i+1)))
		}
		if got := nat.Mappings(); got != ephemeralCount {
			t.Fatalf("Mappings = %d, want every port (%d)", got, ephemeralCount)
		}
		mustWrite(t, a, []byte("x"), r2.LocalAddr())
		if s := n.Stats(); s.DroppedFiltered != 1 || queued(r2) != 0 {
			t.Errorf("with every port taken: stats %+v, %d queued; want the datagram filtered", s, queued(r2))
		}
		// At 51 s the mapping to r1 has expired, and no sweep is due: a
		// full NAT sweeps before giving up.
		time.Sleep(20 * time.Second)
		mustWrite(t, a, []byte("x"), r2.LocalAddr())
		recvFrom(t, r2)
	})
}

func TestNAT_Flush(t *testing.T) {
	for _, typ := range []NATType{FullCone, Symmetric} {
		t.Run(typ.String(), func(t *testing.T) {
			n := New(1)
			nat := newNAT(t, n, "203.0.113.1", typ.Config())
			a := natListen(t, nat, "192.168.1.10:5000")
			r := listen(t, n, "198.51.100.1:3478")
			pub := reflect(t, a, r)
			nat.Flush()
			if got := nat.Mappings(); got != 0 {
				t.Errorf("Mappings = %d after Flush, want 0", got)
			}
			if got := a.PublicAddr(); got.IsValid() {
				t.Errorf("PublicAddr = %v after Flush, want the zero AddrPort", got)
			}
			mustWrite(t, r, []byte("stale"), pub)
			if s := n.Stats(); s.DroppedFiltered != 1 || queued(a) != 0 {
				t.Errorf("a datagram to the flushed port: stats %+v, %d queued; want it filtered", s, queued(a))
			}
			if pub2 := reflect(t, a, r); pub2 == pub {
				t.Errorf("after Flush the NAT maps to %v again, want a new port", pub2)
			}
		})
	}
}

func TestConn_Rebind_BehindNAT(t *testing.T) {
	n := New(1)
	nat := newNAT(t, n, "203.0.113.1", FullCone.Config())
	a, b := natListen(t, nat, "192.168.1.10:5000"), natListen(t, nat, "192.168.1.11:5000")
	r := listen(t, n, "198.51.100.1:3478")
	pubA, pubB := reflect(t, a, r), reflect(t, b, r)
	if got := a.Rebind(); got.IsValid() {
		t.Errorf("Rebind behind a NAT = %v, want the zero AddrPort", got)
	}
	if got := b.PublicAddr(); got != pubB {
		t.Errorf("b's PublicAddr = %v after a's Rebind, want %v kept", got, pubB)
	}
	if got := reflect(t, a, r); got == pubA || a.PublicAddr() != got {
		t.Errorf("after Rebind a maps to %v (PublicAddr %v), want a new port instead of %v", got, a.PublicAddr(), pubA)
	}
}

func TestNAT_Hairpin(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  NATConfig
		want bool
	}{
		{"FullCone", FullCone.Config(), true},
		{"Symmetric", Symmetric.Config(), false}, // b never sent to a's new mapping
		{"NoHairpin", NATConfig{NoHairpin: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			nat := newNAT(t, n, "203.0.113.1", tc.cfg)
			a, b := natListen(t, nat, "192.168.1.10:5000"), natListen(t, nat, "192.168.1.11:5000")
			r := listen(t, n, "198.51.100.1:3478")
			pubA, pubB := reflect(t, a, r), reflect(t, b, r)
			mustWrite(t, a, []byte("hairpin"), pubB)
			got := drain(t, b)
			if (len(got) == 1) != tc.want {
				t.Fatalf("b got %v, want delivered = %v", got, tc.want)
			}
			if !tc.want {
				if s := n.Stats(); s.DroppedFiltered != 1 {
					t.Errorf("DroppedFiltered = %d, want 1", s.DroppedFiltered)
				}
				return
			}
			// It comes from a's public address, so a reply takes the
			// same way back.
			if got[0].From != pubA {
				t.Errorf("hairpinned datagram from %v, want a's public address %v", got[0].From, pubA)
			}
			mustWrite(t, b, []byte("back"), got[0].From)
			if got := drain(t, a); len(got) != 1 || got[0].From != pubB {
				t.Errorf("a got %v, want the reply from %v", got, pubB)
			}
		})
	}
	t.Run("PortRestrictedCone", func(t *testing.T) {
		n := New(1)
		nat := newNAT(t, n, "203.0.113.1", PortRestrictedCone.Config())
		a, b := natListen(t, nat, "192.168.1.10:5000"), natListen(t, nat, "192.168.1.11:5000")
		r := listen(t, n, "198.51.100.1:3478")
		pubA, pubB := reflect(t, a, r), reflect(t, b, r)
		// Hole punching through one NAT's own filter.
		mustWrite(t, a, []byte("1"), pubB)
		mustWrite(t, b, []byte("2"), pubA)
		mustWrite(t, a, []byte("3"), pubB)
		if d := cmp.Diff([]dgram{{"2", pubB}}, drain(t, a), equateAddrs); d != "" {
			t.Errorf("a (-want +got):\n%s", d)
		}
		if d := cmp.Diff([]dgram{{"3", pubA}}, drain(t, b), equateAddrs); d != "" {
			t.Errorf("b (-want +got):\n%s", d)
		}
	})
}

func TestNAT_SameLAN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		const lanLatency = time.Millisecond
		if err := n.SetLink(netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("192.168.1.20"), LinkConfig{Latency: lanLatency}); err != nil {
			t.Fatal(err)
		}
		nat := newNAT(t, n, "203.0.113.1", Symmetric.Config())
		a, b := natListen(t, nat, "192.168.1.10:5000"), natListen(t, nat, "192.168.1.20:0")
		// Another LAN with b's address, and a's address on the public
		// network: neither is reached from inside nat.
		other := newNAT(t, n, "203.0.113.2", FullCone.Config())
		twin := natListen(t, other, b.LocalAddr().String())
		public := listen(t, n, "192.168.1.30:5000")

		start := time.Now()
		mustWrite(t, a, []byte("hi"), b.LocalAddr())
		mustWrite(t, a, []byte("nobody"), netip.MustParseAddrPort("192.168.1.20:1"))
		time.Sleep(lanLatency)
		synctest.Wait()
		if got := drain(t, b); len(got) != 1 || got[0].From != a.LocalAddr() || time.Since(start) != lanLatency {
			t.Errorf("b got %v after %v, want one datagram from %v after %v", got, time.Since(start), a.LocalAddr(), lanLatency)
		}
		mustWrite(t, b, []byte("back"), a.LocalAddr())
		time.Sleep(lanLatency)
		synctest.Wait()
		if got := drain(t, a); len(got) != 1 || got[0].From != b.LocalAddr() {
			t.Errorf("a got %v, want the reply from %v", got, b.LocalAddr())
		}
		if got := nat.Mappings(); got != 0 {
			t.Errorf("LAN traffic made %d mappings, want 0", got)
		}
		// twin's datagram to a's private address goes out through its
		// NAT and reaches nobody; one to a public host of the same prefix
		// leaves through nat.
		mustWrite(t, twin, []byte("x"), a.LocalAddr())
		mustWrite(t, a, []byte("out"), public.LocalAddr())
		if got := drain(t, twin); len(got) != 0 {
			t.Errorf("twin got %v, want nothing", got)
		}
		if from := recvFrom(t, public); from.Addr() != nat.Addr() {
			t.Errorf("public host saw %v, want nat's address %v", from, nat.Addr())
		}
		s := n.Stats()
		if s.DroppedNoListener != 2 || s.DroppedFiltered != 0 {
			t.Errorf("stats %+v; want 2 dropped for no listener (port 1 on the LAN, a's address from the other LAN)", s)
		}
		checkConservation(t, s)
	})
}

// Conns of the one host behind a NAT reach each other without it.
func TestNAT_SameHost(t *testing.T) {
	n := New(1)
	nat := newNAT(t, n, "203.0.113.1", Symmetric.Config())
	a, b := natListen(t, nat, "192.168.1.10:1"), natListen(t, nat, "192.168.1.10:2")
	mustWrite(t, a, []byte("x"), b.LocalAddr())
	if from := recvFrom(t, b); from != a.LocalAddr() {
		t.Errorf("b got a datagram from %v, want %v", from, a.LocalAddr())
	}
	if got := nat.Mappings(); got != 0 {
		t.Errorf("Mappings = %d, want 0", got)
	}
}

// LANs with the same addresses are apart: what is in flight on one does not
// hold back the other.
func TestNAT_SameLAN_Apart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		x, y := netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("192.168.1.20")
		if err := n.SetLink(x, y, LinkConfig{Latency: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		var tx, rx [2]*Conn
		for i := range 2 {
			nat := newNAT(t, n, fmt.Sprintf("203.0.113.%d", i+1), FullCone.Config())
			tx[i], rx[i] = natListen(t, nat, "192.168.1.10:1"), natListen(t, nat, "192.168.1.20:1")
		}
		start := time.Now()
		mustWrite(t, tx[0], []byte("slow"), rx[0].LocalAddr())
		if err := n.SetLink(x, y, LinkConfig{}); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, tx[1], []byte("fast"), rx[1].LocalAddr())
		if got := drain(t, rx[1]); len(got) != 1 || got[0].Msg != "fast" {
			t.Errorf("second LAN got %v at once, want %q", got, "fast")
		}
		if got := drain(t, rx[0]); len(got) != 0 {
			t.Errorf("first LAN got %v at once, want nothing before 50ms", got)
		}
		readOne(t, rx[0])
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("first LAN's datagram arrived after %v, want 50ms", d)
		}
	})
}

func TestNAT_Setup(t *testing.T) {
	n := New(1)
	listen(t, n, "198.51.100.1:1")
	c := listen(t, n, "198.51.100.2:1")
	c.Rebind()
	nat := newNAT(t, n, "203.0.113.1", FullCone.Config())
	for _, tc := range []struct {
		name string
		err  error
		want error // nil: any error
	}{
		{"NATOnBoundIP", func() error { _, err := n.NewNAT(netip.MustParseAddr("198.51.100.1"), NATConfig{}); return err }(), ErrAddrInUse},
		{"NATOnRebound", func() error { _, err := n.NewNAT(c.PublicAddr().Addr(), NATConfig{}); return err }(), ErrAddrInUse},
		{"NATTwice", func() error { _, err := n.NewNAT(netip.MustParseAddr("::ffff:203.0.113.1"), NATConfig{}); return err }(), ErrAddrInUse},
		{"NATUnspecified", func() error { _, err := n.NewNAT(netip.IPv4Unspecified(), NATConfig{}); return err }(), nil},
		{"NATBadConfig", func() error {
			_, err := n.NewNAT(netip.MustParseAddr("203.0.113.9"), NATConfig{Timeout: -1})
			return err
		}(), nil},
		{"ListenOnNAT", func() error { _, err := n.Listen(netip.MustParseAddrPort("203.0.113.1:1")); return err }(), ErrAddrInUse},
		{"ListenOnNATPortZero", func() error { _, err := n.Listen(netip.MustParseAddrPort("203.0.113.1:0")); return err }(), ErrAddrInUse},
		{"NATListenPublic", func() error { _, err := nat.Listen(netip.MustParseAddrPort("203.0.113.1:1")); return err }(), nil},
		{"NATListenFamily", func() error { _, err := nat.Listen(netip.MustParseAddrPort("[fd00::1]:1")); return err }(), nil},
		{"NATListenUnspecified", func() error { _, err := nat.Listen(netip.MustParseAddrPort("0.0.0.0:1")); return err }(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || tc.want != nil && !errors.Is(tc.err, tc.want) {
				t.Errorf("err = %v, want an error (wrapping %v)", tc.err, tc.want)
			}
		})
	}

	t.Run("ListenBehindNAT", func(t *testing.T) {
		a := natListen(t, nat, "192.168.1.10:5000")
		if _, err := nat.Listen(a.LocalAddr()); !errors.Is(err, ErrAddrInUse) {
			t.Errorf("second Listen(%v) = %v, want ErrAddrInUse", a.LocalAddr(), err)
		}
		// The private address space is nat's own.
		listen(t, n, a.LocalAddr().String())
		z := natListen(t, nat, "[::ffff:192.168.1.10]:0")
		if z.LocalAddr().Addr() != a.LocalAddr().Addr() || z.LocalAddr().Port() < ephemeralFirst || z.NAT() != nat || a.NAT() != nat {
			t.Errorf("Listen on port 0 = %v (NAT %p), want an ephemeral port on %v behind %p", z.LocalAddr(), z.NAT(), a.LocalAddr().Addr(), nat)
		}
		// IPv6 destinations are out of an IPv4 NAT's reach.
		mustWrite(t, a, []byte("x"), netip.MustParseAddrPort("[2001:db8::1]:1"))
		if s := n.Stats(); s.DroppedFiltered != 1 {
			t.Errorf("DroppedFiltered = %d, want 1", s.DroppedFiltered)
		}
	})

	t.Run("Close", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n := New(1)
			nat := newNAT(t, n, "203.0.113.1", FullCone.Config())
			a, b := natListen(t, nat, "192.168.1.10:5000"), natListen(t, nat, "192.168.1.11:5000")
			r := listen(t, n, "198.51.100.1:1")
			pub := reflect(t, a, r)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if got := nat.Mappings(); got != 0 {
				t.Errorf("Mappings = %d after Close, want 0", got)
			}
			mustWrite(t, r, []byte("x"), pub)
			mustWrite(t, b, []byte("x"), a.LocalAddr())
			if s := n.Stats(); s.DroppedFiltered != 1 || s.DroppedNoListener != 1 {
				t.Errorf("stats %+v; want the datagram to the old mapping filtered and the LAN one without a listener", s)
			}
			a2 := natListen(t, nat, a.LocalAddr().String())
			mustWrite(t, b, []byte("x"), a2.LocalAddr())
			recvFrom(t, a2)

			errc := make(chan error, 1)
			go func() {
				_, err := b.ReadBatch([][]byte{make([]byte, 8)}, make([]int, 1), make([]netip.AddrPort, 1))
				errc <- err
			}()
			synctest.Wait()
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; !errors.Is(err, net.ErrClosed) {
				t.Errorf("ReadBatch behind a NAT after Network.Close = %v, want net.ErrClosed", err)
			}
			if _, err := nat.Listen(netip.MustParseAddrPort("192.168.1.12:1")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("NAT.Listen after Network.Close = %v, want net.ErrClosed", err)
			}
			if _, err := n.NewNAT(netip.MustParseAddr("203.0.113.2"), NATConfig{}); !errors.Is(err, net.ErrClosed) {
				t.Errorf("NewNAT after Network.Close = %v, want net.ErrClosed", err)
			}
		})
	})
}

func TestNATConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  NATConfig
		want []string // substrings of the error; none means valid
	}{
		{"Zero", NATConfig{}, nil},
		{"Symmetric", Symmetric.Config(), nil},
		{"MaxTimeout", NATConfig{Timeout: 24 * time.Hour}, nil},
		{"NegativeTimeout", NATConfig{Timeout: -time.Second}, []string{"nat.timeout: -1s not in [0,24h0m0s]"}},
		{"HugeTimeout", NATConfig{Timeout: 25 * time.Hour}, []string{"nat.timeout"}},
		{"BadBehaviors", NATConfig{Mapping: 3, Filtering: 9}, []string{"nat.mapping: 3 not in [0,2]", "nat.filtering: 9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to mention %q", err, w)
				}
			}
			if _, err := New(1).NewNAT(netip.MustParseAddr("203.0.113.1"), tc.cfg); err == nil || !strings.Contains(err.Error(), "nat 203.0.113.1") {
				t.Errorf("NewNAT = %v, want an error naming the NAT", err)
			}
		})
	}
	for _, s := range []fmt.Stringer{Behavior(7), NATType(7), AddressDependent, Symmetric} {
		if s.String() == "" {
			t.Errorf("%#v has an empty String", s)
		}
	}
}

// natOutcome runs NATed Conns over a lossy link and returns the public
// addresses the peers saw.
func natOutcome(t *testing.T, seed uint64) (seen []netip.AddrPort, s Stats) {
	n := New(seed)
	setDefaultLink(t, n, LinkConfig{Loss: 0.3})
	sym := newNAT(t, n, "203.0.113.1", Symmetric.Config())
	cone := newNAT(t, n, "203.0.113.2", PortRestrictedCone.Config())
	conns := []*Conn{
		natListen(t, sym, "192.168.1.10:0"), natListen(t, sym, "192.168.1.11:0"),
		natListen(t, cone, "192.168.1.10:0"),
	}
	var peers []*Conn
	for i := range 4 {
		peers = append(peers, listen(t, n, fmt.Sprintf("198.51.100.%d:0", i+1)))
	}
	for round := range 5 {
		for _, c := range conns {
			for _, p := range peers {
				mustWrite(t, c, []byte("x"), p.LocalAddr())
			}
		}
		if round == 2 {
			sym.Flush()
		}
	}
	for _, p := range peers {
		for _, d := range drain(t, p) {
			seen = append(seen, d.From)
		}
	}
	for _, c := range conns {
		seen = append(seen, c.LocalAddr())
	}
	return seen, n.Stats()
}

func TestNAT_SameSeedSameOutcome(t *testing.T) {
	seen1, s1 := natOutcome(t, 7)
	seen2, s2 := natOutcome(t, 7)
	if d := cmp.Diff(seen1, seen2, equateAddrs); d != "" {
		t.Errorf("addresses differ (-first +second):\n%s", d)
	}
	if d := cmp.Diff(s1, s2); d != "" {
		t.Errorf("stats differ (-first +second):\n%s", d)
	}
	if seen3, _ := natOutcome(t, 8); cmp.Equal(seen1, seen3, equateAddrs) {
		t.Error("seeds 7 and 8 gave the same addresses")
	}
}

func TestNAT_ConcurrentSenders(t *testing.T) {
	const (
		senders = 4
		each    = 1000
	)
	n := New(1)
	nats := []*NAT{
		newNAT(t, n, "203.0.113.1", Symmetric.Config()),
		newNAT(t, n, "203.0.113.2", RestrictedCone.Config()),
	}
	rx := listen(t, n, "198.51.100.1:1")
	setQueueLen(t, rx, senders*len(nats)*each)
	var wg sync.WaitGroup
	for i, nat := range nats {
		for s := range senders {
			c := natListen(t, nat, fmt.Sprintf("192.168.1.%d:5000", s+1))
			wg.Go(func() {
				for j := range each {
					if err := c.WriteTo([]byte("x"), rx.LocalAddr()); err != nil {
						t.Errorf("WriteTo: %v", err)
						return
					}
					if j%100 == 0 {
						c.Rebind()
						c.PublicAddr()
					}
				}
			})
		}
		// Mappings change under the senders while datagrams come in.
		wg.Go(func() {
			for range 50 {
				nat.Flush()
				nat.Mappings()
				n.Stats()
				if err := rx.WriteTo([]byte("in"), netip.AddrPortFrom(nat.Addr(), uint16(ephemeralFirst+i))); err != nil {
					t.Errorf("WriteTo: %v", err)
				}
			}
		})
	}
	wg.Wait()
	s := n.Stats()
	checkConservation(t, s)
	if got, want := queued(rx), senders*len(nats)*each; got != want {
		t.Errorf("%d datagrams at the receiver, want all %d sent; stats %+v", got, want, s)
	}
}

func TestConn_WriteRead_NoAllocs_NAT(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, typ := range []NATType{FullCone, RestrictedCone, Symmetric} {
		t.Run(typ.String(), func(t *testing.T) {
			n := New(1)
			nat := newNAT(t, n, "203.0.113.1", typ.Config())
			a := natListen(t, nat, "192.168.1.10:5000")
			b := listen(t, n, "198.51.100.1:1")
			lan := natListen(t, nat, "192.168.1.11:5000")
			pub := reflect(t, a, b)
			msg := make([]byte, 1400)
			bufs := [][]byte{make([]byte, transport.MaxPacket)}
			sizes, from := make([]int, 1), make([]netip.AddrPort, 1)
			roundTrip := func(tx, rx *Conn, to netip.AddrPort) {
				if err := tx.WriteTo(msg, to); err != nil {
					t.Fatal(err)
				}
				if k, err := rx.ReadBatch(bufs, sizes, from); k != 1 || err != nil {
					t.Fatal(k, err)
				}
			}
			for name, f := range map[string]func(){
				"Out": func() { roundTrip(a, b, b.LocalAddr()) },
				"In":  func() { roundTrip(b, a, pub) },
				"LAN": func() { roundTrip(a, lan, lan.LocalAddr()) },
			} {
				if got := testing.AllocsPerRun(1000, f); got != 0 {
					t.Errorf("%s: %v allocations per run, want 0", name, got)
				}
			}
		})
	}
}

// directNsPerOp is the last BenchmarkConn_WriteRead_NAT/Direct result, for
// the ratio the NAT cases report.
var directNsPerOp float64

func BenchmarkConn_WriteRead_NAT(b *testing.B) {
	const size = 1400
	for _, tc := range []struct {
		name string
		nat  bool
		typ  NATType
	}{{"Direct", false, 0}, {"FullCone", true, FullCone}, {"RestrictedCone", true, RestrictedCone}, {"Symmetric", true, Symmetric}} {
		b.Run(tc.name, func(b *testing.B) {
			n := New(1)
			rx := listen(b, n, "198.51.100.1:1")
			tx := listen(b, n, "198.51.100.2:1")
			if tc.nat {
				tx = natListen(b, newNAT(b, n, "203.0.113.1", tc.typ.Config()), "192.168.1.10:5000")
			}
			msg := make([]byte, size)
			bufs := [][]byte{make([]byte, transport.MaxPacket)}
			sizes, from := make([]int, 1), make([]netip.AddrPort, 1)
			dst := rx.LocalAddr()
			b.ReportAllocs()
			b.SetBytes(size)
			for b.Loop() {
				if err := tx.WriteTo(msg, dst); err != nil {
					b.Fatal(err)
				}
				if _, err := rx.ReadBatch(bufs, sizes, from); err != nil {
					b.Fatal(err)
				}
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if !tc.nat {
				directNsPerOp = ns
			} else if directNsPerOp > 0 {
				b.ReportMetric(ns/directNsPerOp, "x-direct")
			}
		})
	}
}
