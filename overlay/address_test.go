package overlay

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

var ringSize = new(big.Int).Lsh(big.NewInt(1), 160)

func toBig(a Address) *big.Int { return new(big.Int).SetBytes(a[:]) }

func fromBig(x *big.Int) Address {
	var a Address
	x = new(big.Int).Mod(x, ringSize)
	x.FillBytes(a[:])
	return a
}

func randomAddress(r *rand.Rand) Address {
	var a Address
	for i := range a {
		a[i] = byte(r.Uint32())
	}
	// Edge values now and then: zero, all ones, neighbours.
	switch r.IntN(16) {
	case 0:
		a = Address{}
	case 1:
		for i := range a {
			a[i] = 0xff
		}
	}
	return a
}

func TestRingArithmetic_MatchesBigInt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		a, b := randomAddress(r), randomAddress(r)
		ba, bb := toBig(a), toBig(b)
		if got, want := Sub(a, b), fromBig(new(big.Int).Sub(ba, bb)); got != want {
			t.Fatalf("Sub(%s, %s) = %s, want %s", a, b, got, want)
		}
		if got, want := Add(a, b), fromBig(new(big.Int).Add(ba, bb)); got != want {
			t.Fatalf("Add(%s, %s) = %s, want %s", a, b, got, want)
		}
		cw := new(big.Int).Mod(new(big.Int).Sub(bb, ba), ringSize)
		ccw := new(big.Int).Mod(new(big.Int).Sub(ba, bb), ringSize)
		want := cw
		if ccw.Cmp(cw) < 0 {
			want = ccw
		}
		if got := Distance(a, b); got != fromBig(want) {
			t.Fatalf("Distance(%s, %s) = %s, want %x", a, b, got, want)
		}
		if Distance(a, b) != Distance(b, a) {
			t.Fatalf("Distance not symmetric for %s, %s", a, b)
		}
	}
}

func TestOffsetOf_Fraction_RoundTrip(t *testing.T) {
	for _, f := range []float64{0, 1e-9, 0.001, 0.25, 0.5, 0.999999} {
		got := Fraction(OffsetOf(f))
		if d := got - f; d > 1e-12 || d < -1e-12 {
			t.Errorf("Fraction(OffsetOf(%v)) = %v", f, got)
		}
	}
	if got := Fraction(OffsetOf(1)); got >= 1 {
		t.Errorf("OffsetOf(1) wraps: %v", got)
	}
}
