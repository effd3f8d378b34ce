package vpn_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/security"
)

// waitLease waits until m holds an address of its pool and returns it.
func waitLease(t *testing.T, m *member, within time.Duration) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if l := m.vpn.Leases(); len(l) > 0 {
			return l[0].Addr()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds no lease after %v: %+v", m.Identity.Member.Name, within, m.vpn.Status().Counters)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLease_PoolMembers: members whose certificates grant a pool lease
// distinct addresses of it, renew them, exchange packets from them and
// with a member of fixed IPs, resolve each other's names, and can't send
// from another's lease. (Fixed IPs belong outside pools, as lease.go
// says: a lease taken on a fixed IP before its member published it is
// not reliably taken back yet.)
func TestLease_PoolMembers(t *testing.T) {
	pool := netip.MustParsePrefix("10.67.0.0/29") // .1 to .6
	fixed := []netip.Prefix{}
	for i := 9; i <= 12; i++ {
		fixed = append(fixed, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 67, 0, byte(i)}), 29))
	}
	cfg := vpn.Default()
	cfg.NegativeTTL = 100 * time.Millisecond
	cfg.ResolveTimeout = 2 * time.Second
	cfg.LeaseTTL = 10 * time.Second // renewed every 3.3s
	cfg.ShortcutPackets = 0
	const n = 6
	ms := newVPNClusterWith(t, n, func(i int, _ *vpn.Config, spec *security.MemberSpec) {
		switch i {
		case 0:
			spec.IPs = fixed // 10.67.0.9-12, outside the pool
		case 1, 2:
			spec.IPs = []netip.Prefix{pool}
		}
	}, cfg)
	owner, a, b := ms[0], ms[1], ms[2]

	la, lb := waitLease(t, a, 60*time.Second), waitLease(t, b, 60*time.Second)
	// Two creates may race while the ring forms; the confirmation and
	// renewals sort it out: wait for the end state.
	deadline := time.Now().Add(60 * time.Second)
	for !(pool.Contains(la) && pool.Contains(lb) && la != lb) {
		if time.Now().After(deadline) {
			t.Fatalf("leases %s and %s, want two distinct addresses of %s; a %+v, b %+v", la, lb, pool, a.vpn.Status().Counters, b.vpn.Status().Counters)
		}
		time.Sleep(100 * time.Millisecond)
		la, lb = waitLease(t, a, 30*time.Second), waitLease(t, b, 30*time.Second)
	}
	t.Logf("leases: a %s (conflicts %d, lost %d), b %s (conflicts %d, lost %d)", la, a.vpn.Status().LeaseConflicts, a.vpn.Status().LeasesLost,
		lb, b.vpn.Status().LeaseConflicts, b.vpn.Status().LeasesLost)
	if st := a.vpn.Status(); !slices.Contains(st.Leased, netip.PrefixFrom(la, 29)) || !slices.Contains(st.IPs, netip.PrefixFrom(la, 29)) {
		t.Errorf("a's status: IPs %v, leased %v; want %s/29 in both", st.IPs, st.Leased, la)
	}
	a.ip, b.ip, owner.ip = la, lb, fixed[0].Addr()

	t.Run("the lease is renewed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		first, err := owner.dht.GetRecord(ctx, vpn.NamespaceVIP, la.String())
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			rec, err := owner.dht.GetRecord(ctx, vpn.NamespaceVIP, la.String())
			if err == nil && rec.Expires.After(first.Expires) {
				if addr := a.Node.Address(); !bytes.Equal(rec.Value, addr[:]) {
					t.Fatalf("renewed record of %s names %x, want a", la, rec.Value)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the lease of %s was not renewed within 20s (expires %v; %v)", la, first.Expires, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if l := a.vpn.Leases(); len(l) != 1 || l[0].Addr() != la {
			t.Errorf("a's leases after renewal: %v, want %s", l, la)
		}
	})

	t.Run("packets flow from leased addresses", func(t *testing.T) {
		deliver(t, a, b, []byte("lease to lease"), 20*time.Second)
		deliver(t, b, a, []byte("and back"), 20*time.Second)
		deliver(t, owner, a, []byte("fixed to lease"), 20*time.Second)
		deliver(t, a, owner, []byte("lease to fixed"), 20*time.Second)
	})

	t.Run("a pool member can't send from another's lease", func(t *testing.T) {
		spoofed := udpFrame(gateway, a.dev.MAC(), lb, owner.ip, []byte("spoofed from b's lease"))
		for range 5 {
			if err := a.dev.Inject(spoofed); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for {
			got, err := owner.dev.Take(ctx)
			if err != nil {
				break
			}
			if bytes.HasSuffix(got, []byte("spoofed from b's lease")) {
				t.Fatal("a packet from another member's lease reached the device")
			}
		}
		if c := owner.vpn.Status().Counters; c.DropUnverified+c.DropSpoofed == 0 {
			t.Errorf("no drop counted: %+v", c)
		}
	})

	t.Run("names resolve", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			ips, err := owner.vpn.LookupName(ctx, b.Identity.Member.Name)
			if err == nil && slices.Equal(ips, []netip.Addr{lb}) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("LookupName(%s) = %v, %v; want [%s]", b.Identity.Member.Name, ips, err, lb)
			}
			time.Sleep(200 * time.Millisecond)
		}
		ips, err := b.vpn.LookupName(ctx, "NODE0") // owner's name, any case
		if err != nil || len(ips) != len(fixed) {
			t.Errorf("LookupName(NODE0) = %v, %v; want its 4 fixed IPs", ips, err)
		}
		if _, err := b.vpn.LookupName(ctx, "nobody"); !errors.Is(err, dht.ErrNotFound) {
			t.Errorf("LookupName(nobody): %v, want not found", err)
		}
	})
}
