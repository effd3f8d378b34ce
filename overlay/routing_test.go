package overlay

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

// bruteClosest returns, by big-integer arithmetic, the node of nodes
// closest to key (ties: the smaller address, as never happens with
// random addresses).
func bruteClosest(nodes []Address, key Address) Address {
	best := nodes[0]
	bestD := bigDistance(best, key)
	for _, a := range nodes[1:] {
		if d := bigDistance(a, key); d.Cmp(bestD) < 0 {
			best, bestD = a, d
		}
	}
	return best
}

func bigDistance(a, b Address) *big.Int {
	cw := new(big.Int).Mod(new(big.Int).Sub(toBig(b), toBig(a)), ringSize)
	ccw := new(big.Int).Mod(new(big.Int).Sub(toBig(a), toBig(b)), ringSize)
	if ccw.Cmp(cw) < 0 {
		return ccw
	}
	return cw
}

// routingNode builds a node whose routing table holds exactly peers. With
// r, proximity route selection is on and links get random RTTs.
func routingNode(self Address, peers []Address, r *rand.Rand) *Node {
	n := &Node{addr: self}
	s := make([]*peer, len(peers))
	for i, a := range peers {
		s[i] = &peer{addr: a}
		if r != nil {
			s[i].rtt.Store(int64(1 + r.IntN(200_000_000)))
		}
	}
	if r != nil {
		n.cfg.Proximity = true
		n.typicalRTT.Store(50_000_000)
		n.sizeBits.Store(math.Float64bits(float64(1 + r.IntN(1000))))
	}
	n.routes.Store(&s)
	return n
}

// TestRouting_MatchesBruteForce builds rings of random addresses where
// each node links to its true ring neighbours plus random long links, and
// routes from every node to random keys with the real nextHop. Greedy
// routing must reach the node the brute-force model says is closest
// (closest mode) without revisiting a node, and exact mode must deliver
// to existing addresses only.
func TestRouting_MatchesBruteForce(t *testing.T) {
	for _, proximity := range []bool{false, true} {
		t.Run(fmt.Sprintf("proximity=%v", proximity), func(t *testing.T) { testRoutingMatchesBruteForce(t, proximity) })
	}
}

func testRoutingMatchesBruteForce(t *testing.T, proximity bool) {
	r := rand.New(rand.NewPCG(7, 11))
	for trial := range 20 {
		size := 2 + r.IntN(200)
		addrs := make([]Address, size)
		for i := range addrs {
			addrs[i] = randomAddress(r)
		}
		slices.SortFunc(addrs, func(a, b Address) int { return a.Compare(b) })
		addrs = slices.Compact(addrs)
		size = len(addrs)
		links := make(map[Address]map[Address]bool)
		link := func(a, b Address) {
			if a == b {
				return
			}
			if links[a] == nil {
				links[a] = map[Address]bool{}
			}
			if links[b] == nil {
				links[b] = map[Address]bool{}
			}
			links[a][b], links[b][a] = true, true
		}
		near := 1 + r.IntN(3)
		for i := range addrs {
			for d := 1; d <= near; d++ {
				link(addrs[i], addrs[(i+d)%size])
			}
			for range r.IntN(5) {
				link(addrs[i], addrs[r.IntN(size)])
			}
		}
		nodes := make(map[Address]*Node, size)
		for _, a := range addrs {
			var ps []Address
			for p := range links[a] {
				ps = append(ps, p)
			}
			var rr *rand.Rand
			if proximity {
				rr = r
			}
			nodes[a] = routingNode(a, ps, rr)
		}
		for range 200 {
			src := addrs[r.IntN(size)]
			key := randomAddress(r)
			if r.IntN(3) == 0 {
				key = addrs[r.IntN(size)] // an existing node, for exact mode
			}
			want := bruteClosest(addrs, key)
			cur, seen := src, map[Address]bool{}
			for hops := 0; ; hops++ {
				if seen[cur] {
					t.Fatalf("trial %d: route %s -> %s loops at %s", trial, src, key, cur)
				}
				seen[cur] = true
				next := nodes[cur].nextHop(key, src, false, cur == src, false)
				if next == nil {
					break
				}
				if !Closer(next.addr, cur, key) {
					t.Fatalf("trial %d: hop %s -> %s does not near %s", trial, cur, next.addr, key)
				}
				cur = next.addr
			}
			if cur != want {
				t.Fatalf("trial %d (%d nodes): route %s -> key %s ended at %s, brute force says %s", trial, size, src, key, cur, want)
			}
		}
		// Exclude-source (joining): the route ends at the closest node
		// other than the source.
		for range 50 {
			if size < 2 {
				break
			}
			src := addrs[r.IntN(size)]
			others := slices.DeleteFunc(slices.Clone(addrs), func(a Address) bool { return a == src })
			want := bruteClosest(others, src)
			cur := src
			for {
				next := nodes[cur].nextHop(src, src, true, cur == src, false)
				if next == nil {
					break
				}
				cur = next.addr
			}
			if cur != want {
				t.Fatalf("trial %d: join lookup from %s ended at %s, want %s", trial, src, cur, want)
			}
		}
	}
}
