package overlay

import (
	"encoding/binary"
	"math"

	"github.com/ringvpn/ringvpn/security"
)

// Address is a position on the ring: a node's overlay address (the hash of
// its public key) or a key of the DHT. The ring is the integers modulo
// 2^160, read as big-endian numbers.
type Address = security.Address

// Sub returns a-b modulo 2^160.
func Sub(a, b Address) Address {
	var d Address
	borrow := 0
	for i := len(a) - 1; i >= 0; i-- {
		v := int(a[i]) - int(b[i]) - borrow
		borrow = 0
		if v < 0 {
			v += 256
			borrow = 1
		}
		d[i] = byte(v)
	}
	return d
}

// Add returns a+b modulo 2^160.
func Add(a, b Address) Address {
	var s Address
	carry := 0
	for i := len(a) - 1; i >= 0; i-- {
		v := int(a[i]) + int(b[i]) + carry
		s[i] = byte(v)
		carry = v >> 8
	}
	return s
}

// Clockwise returns the distance from a to b going clockwise (increasing
// addresses, wrapping at 2^160): b-a.
func Clockwise(a, b Address) Address { return Sub(b, a) }

// Distance returns the ring distance between a and b: the shorter of the
// two ways round.
func Distance(a, b Address) Address {
	cw, ccw := Sub(b, a), Sub(a, b)
	if cw.Compare(ccw) <= 0 {
		return cw
	}
	return ccw
}

// Closer reports whether a is strictly closer to key than b is.
func Closer(a, b, key Address) bool {
	return Distance(a, key).Compare(Distance(b, key)) < 0
}

// Fraction returns d as a fraction of the whole ring, in [0, 1).
func Fraction(d Address) float64 {
	return float64(binary.BigEndian.Uint64(d[:8])) / (1 << 64)
}

// OffsetOf returns the distance that is fraction f of the ring, f in
// [0, 1); precision is 64 bits, plenty for placing long links.
func OffsetOf(f float64) Address {
	var d Address
	if f <= 0 {
		return d
	}
	if f >= 1 {
		f = math.Nextafter(1, 0)
	}
	binary.BigEndian.PutUint64(d[:8], uint64(f*(1<<64)))
	return d
}
