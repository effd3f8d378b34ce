package simnet

import (
	"context"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// randomAddr returns a random IPv4 or IPv6 address.
func randomAddr(rng *rand.Rand) netip.Addr {
	if rng.IntN(4) == 0 {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return netip.AddrFrom4(b)
}

func TestPlane_SymmetricAndDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	p, same, other := NewPlane(42), NewPlane(42), NewPlane(43)
	differ := 0
	const pairs = 1000
	for range pairs {
		a, b := randomAddr(rng), randomAddr(rng)
		rtt := p.RTT(a, b)
		if back := p.RTT(b, a); back != rtt {
			t.Fatalf("RTT(%v, %v) = %v but RTT(%v, %v) = %v", a, b, rtt, b, a, back)
		}
		if again := same.RTT(a, b); again != rtt {
			t.Fatalf("RTT(%v, %v) = %v, then %v on another plane with the same seed", a, b, rtt, again)
		}
		if other.RTT(a, b) != rtt {
			differ++
		}
	}
	if differ < pairs*99/100 {
		t.Errorf("another seed changed only %d of %d RTTs", differ, pairs)
	}
}

func TestPlane_Hosts(t *testing.T) {
	p := NewPlane(1)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("2001:db8::1")
	mapped := netip.AddrFrom16(a.As16())
	if got := p.RTT(a, a); got != PlaneLoopback || got <= 0 {
		t.Errorf("RTT(a, a) = %v, want %v", got, PlaneLoopback)
	}
	if got := p.RTT(a, mapped); got != PlaneLoopback {
		t.Errorf("RTT(a, IPv4-mapped a) = %v, want %v", got, PlaneLoopback)
	}
	if p.RTT(mapped, b) != p.RTT(a, b) {
		t.Errorf("an IPv4-mapped address is not its IPv4 host")
	}
	x, y := p.Point(a)
	if x < 0 || x >= PlaneSide || y < 0 || y >= PlaneSide {
		t.Errorf("Point(a) = %v, %v; want in [0, %v)", x, y, PlaneSide)
	}
	if acc := p.Access(a); acc < PlaneAccessMin || acc >= PlaneAccessMax {
		t.Errorf("Access(a) = %v, want in [%v, %v)", acc, PlaneAccessMin, PlaneAccessMax)
	}
	bx, by := p.Point(b)
	d := math.Hypot(x-bx, y-by)
	want := time.Duration(2*d/PlaneSpeed*float64(time.Millisecond)) + p.Access(a) + p.Access(b)
	if got := p.RTT(a, b); got != want {
		t.Errorf("RTT(a, b) = %v, want 2×%.0fkm/%dkm/ms + access %v + %v = %v", got, d, PlaneSpeed, p.Access(a), p.Access(b), want)
	}
}

// TestPlane_RTTRange checks the numbers the package documents for the RTTs
// of random pairs of hosts.
func TestPlane_RTTRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const pairs = 200_000
	rtts := make([]time.Duration, 0, pairs)
	var sum time.Duration
	for seed := range uint64(4) {
		p := NewPlane(seed)
		for range pairs / 4 {
			r := p.RTT(randomAddr(rng), randomAddr(rng))
			rtts = append(rtts, r)
			sum += r
		}
	}
	slices.Sort(rtts)
	pct := func(q float64) time.Duration { return rtts[int(q*float64(len(rtts)-1))] }
	mean := sum / pairs
	t.Logf("RTT over %d pairs: min %v, p1 %v, median %v, mean %v, p99 %v, max %v",
		pairs, rtts[0], pct(0.01), pct(0.5), mean, pct(0.99), rtts[len(rtts)-1])

	diag := 2 * math.Sqrt2 * PlaneSide / PlaneSpeed * float64(time.Millisecond)
	maxRTT := time.Duration(math.Ceil(diag)) + 2*PlaneAccessMax
	if maxRTT > 250*time.Millisecond {
		t.Errorf("the model's largest RTT is %v, documented below 250ms", maxRTT)
	}
	for _, c := range []struct {
		name     string
		got      time.Duration
		min, max time.Duration
	}{
		{"min", rtts[0], 2 * PlaneAccessMin, 10 * time.Millisecond},
		{"p1", pct(0.01), 20 * time.Millisecond, 30 * time.Millisecond},
		{"median", pct(0.5), 85 * time.Millisecond, 95 * time.Millisecond},
		{"mean", mean, 85 * time.Millisecond, 95 * time.Millisecond},
		{"p99", pct(0.99), 165 * time.Millisecond, 180 * time.Millisecond},
		{"max", rtts[len(rtts)-1], 210 * time.Millisecond, maxRTT},
	} {
		if c.got < c.min || c.got > c.max {
			t.Errorf("%s RTT = %v, want in [%v, %v]", c.name, c.got, c.min, c.max)
		}
	}
}

func TestPlane_LinkRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPlane(3)
		f := newFabric(t, Config{Latency: p})
		a, b := listen(t, f, 1), listen(t, f, 2)
		want := p.RTT(a.LocalAddr().Addr(), b.LocalAddr().Addr())
		start := time.Now()
		l, err := a.Dial(context.Background(), b.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != want || l.(*Link).RTT() != want {
			t.Errorf("Dial took %v, link RTT %v; want the plane's %v", got, l.(*Link).RTT(), want)
		}
	})
}
