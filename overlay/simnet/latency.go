package simnet

import (
	"encoding/binary"
	"math"
	"net/netip"
	"time"
)

// LatencyModel gives the round-trip time between two hosts. A Fabric asks
// it once per link, when the link is dialled; the packets of the link take
// half of it each way. Implementations must be safe for concurrent use,
// cheap, and symmetric: RTT(a, b) == RTT(b, a).
type LatencyModel interface {
	RTT(a, b netip.Addr) time.Duration
}

// Constant is a LatencyModel where every pair of hosts, a host with itself
// included, has the same round-trip time.
type Constant time.Duration

// RTT returns c.
func (c Constant) RTT(_, _ netip.Addr) time.Duration { return time.Duration(c) }

// The Plane model's parameters. The RTT between two distinct hosts is at
// least 5ms (two access delays) and below 250ms (opposite corners, two of
// the slowest access links). Between random pairs of hosts its mean and
// median are about 92ms, 1% of pairs are below 25ms and 1% above 170ms
// (TestPlane_RTTRange measures this).
const (
	// PlaneSide is the side of the square hosts are placed on, in km:
	// about the distance from Lisbon to Tokyo. Hosts are spread uniformly.
	PlaneSide = 12_000
	// PlaneSpeed is how fast a signal travels, in km per millisecond:
	// light in fibre, about two thirds of c. Hosts PlaneSide apart have a
	// propagation round trip of 120ms; across the diagonal, 170ms.
	PlaneSpeed = 200
	// PlaneAccessMin and PlaneAccessMax bound the access delay of a host:
	// the round trip over its last mile, added to every RTT it is part of.
	// It is PlaneAccessMin + (PlaneAccessMax-PlaneAccessMin)×u² for a u
	// uniform in [0,1): most hosts are well connected (median 12ms, mean
	// 15ms), a few are slow.
	PlaneAccessMin = 2500 * time.Microsecond
	PlaneAccessMax = 40 * time.Millisecond
	// PlaneLoopback is the RTT between a host and itself: two nodes at
	// the same IP address talk over loopback.
	PlaneLoopback = 100 * time.Microsecond
)

// Plane is a LatencyModel that places hosts at points on a square
// PlaneSide km wide. A host's point and access delay are derived from a
// hash of the seed and its IP address alone, so they do not depend on
// which other hosts exist or on the order of calls. The RTT between hosts
// a and b is
//
//	2 × distance(a, b) / PlaneSpeed + Access(a) + Access(b)
//
// and PlaneLoopback when a == b. IPv4-mapped IPv6 addresses are the IPv4
// host. A Plane is immutable and safe for concurrent use.
type Plane struct {
	seed uint64
}

var _ LatencyModel = (*Plane)(nil)

// NewPlane returns the plane of seed: the same seed places every host at
// the same point.
func NewPlane(seed uint64) *Plane {
	return &Plane{seed: seed}
}

// RTT returns the round-trip time between hosts a and b.
func (p *Plane) RTT(a, b netip.Addr) time.Duration {
	a, b = a.Unmap(), b.Unmap()
	if a == b {
		return PlaneLoopback
	}
	ha, hb := p.host(a), p.host(b)
	d := math.Hypot(ha.x-hb.x, ha.y-hb.y)
	prop := time.Duration(2 * d / PlaneSpeed * float64(time.Millisecond))
	return prop + ha.access + hb.access
}

// Point returns where host a sits, in km from the corner of the square:
// x and y are in [0, PlaneSide).
func (p *Plane) Point(a netip.Addr) (x, y float64) {
	h := p.host(a.Unmap())
	return h.x, h.y
}

// Access returns host a's access delay, in [PlaneAccessMin,
// PlaneAccessMax).
func (p *Plane) Access(a netip.Addr) time.Duration {
	return p.host(a.Unmap()).access
}

// planeHost is where a host sits and how slow its last mile is.
type planeHost struct {
	x, y   float64
	access time.Duration
}

// host derives a's place from the seed and the 16 bytes of a.
func (p *Plane) host(a netip.Addr) planeHost {
	b := a.As16()
	h := splitmix(p.seed ^ splitmix(binary.BigEndian.Uint64(b[:8])^splitmix(binary.BigEndian.Uint64(b[8:]))))
	x := unit(h)
	h = splitmix(h)
	y := unit(h)
	h = splitmix(h)
	u := unit(h)
	span := float64(PlaneAccessMax - PlaneAccessMin)
	return planeHost{
		x:      x * PlaneSide,
		y:      y * PlaneSide,
		access: PlaneAccessMin + time.Duration(u*u*span),
	}
}

// splitmix is the SplitMix64 step: a bijective mix whose outputs for
// consecutive inputs look independent.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// unit maps h to [0, 1) with 53 bits of precision.
func unit(h uint64) float64 {
	return float64(h>>11) / (1 << 53)
}
