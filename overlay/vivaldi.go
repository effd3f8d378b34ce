package overlay

import (
	"math"
	"math/rand/v2"
)

// Vivaldi coordinates (Dabek et al., SIGCOMM 2004) predict the RTT between
// two nodes that have never exchanged a packet. The far maintainer uses
// them to pick, among the candidates near a long link's target, the one
// closest to us in the network, without a handshake to each.
const (
	vivaldiCE        = 0.25 // error weight
	vivaldiCC        = 0.25 // movement weight
	vivaldiMinHeight = 0.1  // ms
)

// Estimate predicts the RTT between c and o, in milliseconds.
func (c Coord) Estimate(o Coord) float64 {
	dx, dy := c.X-o.X, c.Y-o.Y
	return math.Sqrt(dx*dx+dy*dy) + c.H + o.H
}

func newCoord() Coord { return Coord{H: vivaldiMinHeight, Err: 1} }

// update moves c after measuring rtt (ms) to a node at o.
func (c Coord) update(rttMS float64, o Coord, rng *rand.Rand) Coord {
	if rttMS <= 0 || math.IsNaN(rttMS) || math.IsInf(rttMS, 0) {
		return c
	}
	oErr := math.Max(o.Err, 0.01)
	w := c.Err / (c.Err + oErr)
	predicted := c.Estimate(o)
	es := math.Abs(predicted-rttMS) / rttMS
	c.Err = math.Min(1, es*vivaldiCE*w+c.Err*(1-vivaldiCE*w))
	delta := vivaldiCC * w
	force := delta * (rttMS - predicted)
	// Unit vector from o to c; random when they coincide.
	dx, dy := c.X-o.X, c.Y-o.Y
	plane := math.Sqrt(dx*dx + dy*dy)
	if plane < 1e-6 {
		a := rng.Float64() * 2 * math.Pi
		dx, dy, plane = math.Cos(a), math.Sin(a), 1
	}
	length := plane + c.H + o.H
	c.X += force * dx / length
	c.Y += force * dy / length
	c.H = math.Max(vivaldiMinHeight, c.H+force*(c.H+o.H)/length)
	if math.IsNaN(c.X) || math.IsNaN(c.Y) || math.IsNaN(c.H) {
		return newCoord()
	}
	return c
}
