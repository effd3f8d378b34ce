package overlay

import (
	"bytes"
	"errors"
	"math/big"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/security"
)

// a is an address with the given leading bytes (the rest zero).
func a(b ...byte) Address {
	var x Address
	copy(x[:], b)
	return x
}

var maxAddr = func() Address {
	var x Address
	for i := range x {
		x[i] = 0xff
	}
	return x
}()

func TestSplitRange(t *testing.T) {
	type want struct{ to, end Address }
	for _, tc := range []struct {
		name      string
		self, end Address
		peers     []Address
		want      []want
	}{
		{"no peers", a(0x10), a(0x10), nil, nil},
		{
			"whole ring wraps past zero", a(0x10), a(0x10),
			[]Address{a(0x30), a(0x05), a(0x20), a(0xf0)},
			[]want{{a(0x20), a(0x30)}, {a(0x30), a(0xf0)}, {a(0xf0), a(0x05)}, {a(0x05), a(0x10)}},
		},
		{
			"sub-range: end excluded, peers behind excluded", a(0x10), a(0x40),
			[]Address{a(0x05), a(0x20), a(0x40), a(0x50), a(0x30), a(0x10, 0, 1)},
			[]want{{a(0x10, 0, 1), a(0x20)}, {a(0x20), a(0x30)}, {a(0x30), a(0x40)}},
		},
		{
			"range wraps past zero", a(0xf0), a(0x20),
			[]Address{a(0x10), a(0xf8), a(0x00), a(0x20), a(0x80), a(0xe0)},
			[]want{{a(0xf8), a(0x00)}, {a(0x00), a(0x10)}, {a(0x10), a(0x20)}},
		},
		{
			"range ending at zero", a(0xf0), a(),
			[]Address{a(), a(0xf8), maxAddr, a(0x01)},
			[]want{{a(0xf8), maxAddr}, {maxAddr, a()}},
		},
		{
			"self at the top of the ring", maxAddr, a(0x01),
			[]Address{a(0x01), a(), a(0x00, 1), a(0xfe)},
			[]want{{a(), a(0x00, 1)}, {a(0x00, 1), a(0x01)}},
		},
		{
			"empty range: end right after self", a(0x10), a(0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
			[]Address{a(0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), a(0x11)},
			nil,
		},
		{
			"end right before self: all but the end", a(0x10), a(0x0f),
			[]Address{a(0x0f), a(0x0e), a(0x11)},
			[]want{{a(0x11), a(0x0e)}, {a(0x0e), a(0x0f)}},
		},
		{
			"self and repeats ignored", a(0x10), a(0x10),
			[]Address{a(0x10), a(0x20), a(0x20), a(0x08)},
			[]want{{a(0x20), a(0x08)}, {a(0x08), a(0x10)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []want
			for _, k := range splitRange(nil, tc.self, tc.end, tc.peers) {
				got = append(got, want{tc.peers[k.idx], k.end})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// randAddr draws addresses that often collide in their leading bytes and
// sit at the ends of the ring, so wrap-around and ties get exercised.
func randAddr(rng *rand.Rand) Address {
	var x Address
	for i := range x {
		x[i] = byte(rng.Uint32())
	}
	switch rng.IntN(4) {
	case 0:
		x[0] = []byte{0x00, 0x7f, 0x80, 0xff}[rng.IntN(4)]
	case 1:
		if rng.IntN(2) == 0 {
			return Address{}
		}
		return maxAddr
	}
	return x
}

var ring = new(big.Int).Lsh(big.NewInt(1), 160)

func cwBig(from, to Address) *big.Int {
	d := new(big.Int).Sub(new(big.Int).SetBytes(to[:]), new(big.Int).SetBytes(from[:]))
	return d.Mod(d, ring)
}

// TestSplitRange_MatchesModel checks splitRange against a brute-force
// model in big integers: the children are exactly the peers strictly
// inside the range, each ends at the nearest other child clockwise (or at
// the range's end), and the children's ranges with [self, first child)
// partition the range.
func TestSplitRange_MatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 3000 {
		self := randAddr(rng)
		end := self
		if rng.IntN(3) > 0 {
			end = randAddr(rng)
		}
		peers := make([]Address, rng.IntN(12))
		for i := range peers {
			peers[i] = randAddr(rng)
		}
		size := cwBig(self, end)
		if size.Sign() == 0 {
			size = ring
		}
		inside := func(x Address) bool { d := cwBig(self, x); return d.Sign() > 0 && d.Cmp(size) < 0 }
		model := map[Address]Address{}
		for _, p := range peers {
			if !inside(p) {
				continue
			}
			e := end
			for _, q := range peers {
				if inside(q) && cwBig(self, q).Cmp(cwBig(self, p)) > 0 && cwBig(p, q).Cmp(cwBig(p, e)) < 0 {
					e = q
				}
			}
			model[p] = e
		}
		kids := splitRange(nil, self, end, peers)
		if len(kids) != len(model) {
			t.Fatalf("iter %d: %d children, model %d (self %s end %s peers %v)", iter, len(kids), len(model), self, end, peers)
		}
		for _, k := range kids {
			if e, ok := model[peers[k.idx]]; !ok || e != k.end {
				t.Fatalf("iter %d: child %s gets end %s, model %s (present %v)", iter, peers[k.idx], k.end, e, ok)
			}
		}
		// Partition: every point of the range is in exactly one part.
		for range 20 {
			x := randAddr(rng)
			if rng.IntN(2) == 0 && len(peers) > 0 {
				x = peers[rng.IntN(len(peers))]
			}
			if !inRange(x, self, end) {
				continue
			}
			parts := 0
			if len(kids) == 0 || inRange(x, self, peers[kids[0].idx]) {
				parts++ // the part this node keeps: [self, first child)
			}
			for _, k := range kids {
				if inRange(x, peers[k.idx], k.end) {
					parts++
				}
			}
			if parts != 1 {
				t.Fatalf("iter %d: %s lies in %d parts", iter, x, parts)
			}
		}
	}
}

// TestSplitRange_RingBroadcast runs the whole algorithm on random rings
// without a network: with every node linked to its successor (and
// predecessor) plus random long links, every node but the originator gets
// a broadcast exactly once; with random links only (a broken ring), none
// gets it twice.
func TestSplitRange_RingBroadcast(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range 200 {
		n := 2 + rng.IntN(150)
		seen := map[Address]bool{}
		var addrs []Address
		for len(addrs) < n {
			x := randAddr(rng)
			if !seen[x] {
				seen[x] = true
				addrs = append(addrs, x)
			}
		}
		slices.SortFunc(addrs, func(x, y Address) int { return x.Compare(y) })
		correct := iter%2 == 0
		links := map[Address]map[Address]bool{}
		link := func(x, y Address) {
			if x == y {
				return
			}
			for _, p := range [][2]Address{{x, y}, {y, x}} {
				if links[p[0]] == nil {
					links[p[0]] = map[Address]bool{}
				}
				links[p[0]][p[1]] = true
			}
		}
		for i, x := range addrs {
			if correct {
				link(x, addrs[(i+1)%n])
			}
			for range rng.IntN(4) {
				link(x, addrs[rng.IntN(n)])
			}
		}
		orig := addrs[rng.IntN(n)]
		got := map[Address]int{}
		type hop struct{ at, end Address }
		queue := []hop{{orig, orig}}
		for len(queue) > 0 {
			h := queue[0]
			queue = queue[1:]
			var peers []Address
			for p := range links[h.at] {
				peers = append(peers, p)
			}
			for _, k := range splitRange(nil, h.at, h.end, peers) {
				got[peers[k.idx]]++
				queue = append(queue, hop{peers[k.idx], k.end})
			}
		}
		for _, x := range addrs {
			want := 1
			if x == orig {
				want = 0
			}
			if got[x] > want || (correct && got[x] != want) {
				t.Fatalf("iter %d (n %d, correct ring %v): %s got it %d times, want %d", iter, n, correct, x, got[x], want)
			}
		}
	}
}

func TestSplitRange_NoAllocs(t *testing.T) {
	peers := []Address{a(0x30), a(0x05), a(0x20), a(0xf0), a(0x80), a(0x11), a(0x12)}
	var buf [16]bcastChild
	if n := testing.AllocsPerRun(100, func() { splitRange(buf[:0], a(0x10), a(0x10), peers) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestBroadcast_RoundTrip(t *testing.T) {
	b := broadcast{Inner: 0x80, End: a(1, 2, 3), ID: 0x0102030405060708, Payload: []byte("hello")}
	enc := b.append(nil)
	if len(enc) != broadcastHeaderLen+5 {
		t.Fatalf("encoded length %d", len(enc))
	}
	got, err := parseBroadcast(enc)
	if err != nil || got.Inner != b.Inner || got.End != b.End || got.ID != b.ID || string(got.Payload) != "hello" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for i := range broadcastHeaderLen {
		if _, err := parseBroadcast(enc[:i]); err == nil {
			t.Fatalf("truncated to %d bytes decoded", i)
		}
	}
	low := broadcast{Inner: 0x3f, End: a(1)}
	if _, err := parseBroadcast(low.append(nil)); err == nil {
		t.Fatal("an overlay inner type decoded")
	}
	huge := broadcast{Inner: 0x80, Payload: make([]byte, MaxBroadcastPayload+1)}
	if _, err := parseBroadcast(huge.append(nil)); err == nil {
		t.Fatal("an oversized payload decoded")
	}
}

func FuzzBroadcast_Parse_NoPanic(f *testing.F) {
	b := broadcast{Inner: 0x80, End: a(0xf0), ID: 7, Payload: []byte("payload")}
	f.Add(b.append(nil))
	b.Payload = nil
	f.Add(b.append(nil))
	f.Add([]byte{0x40})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := parseBroadcast(in)
		if err != nil {
			return
		}
		if m.Inner < firstExternalType {
			t.Fatalf("inner type %#x decoded", m.Inner)
		}
		if again := m.append(nil); !bytes.Equal(again, in) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, in)
		}
	})
}

// bcastPeer is a fake neighbour of the node under test: it records the
// broadcasts the node hands it.
type bcastPeer struct {
	m    *security.Member
	link *testLink // our end; the node has the other
	mu   sync.Mutex
	got  []bcastRecv
}

type bcastRecv struct {
	src, end Address
	hops     uint8
	payload  string
}

func (p *bcastPeer) take() []bcastRecv {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.got
	p.got = nil
	return g
}

func bcastMsg(src, dst, end Address, inner Type, id uint64, flags Flags, payload string) []byte {
	h := Header{Type: TypeBroadcast, Flags: flags, TTL: 1, Src: src, Dst: dst}
	b := broadcast{Inner: inner, End: end, ID: id, Payload: []byte(payload)}
	return appendMessage(nil, &h, b.append(nil))
}

// TestNode_Broadcast drives one node through fake neighbours: what it
// sends as originator and as forwarder, what its handler sees, and that
// duplicates, malformed and over-limit broadcasts are dropped and
// counted.
func TestNode_Broadcast(t *testing.T) {
	self := &security.Member{MemberSpec: security.MemberSpec{Name: "self"}, Address: a(0x10)}
	// Not started: no maintainer changes the kinds of the links.
	n, err := New(self, &testLinker{}, Default(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	peers := map[byte]*bcastPeer{}
	// 0x40 never says it keeps the link: an idle link, left out.
	for _, x := range []byte{0x05, 0x20, 0x30, 0x40, 0x80, 0xf0} {
		p := &bcastPeer{m: &security.Member{MemberSpec: security.MemberSpec{Name: "peer"}, Address: a(x)}}
		ours, theirs := linkPair(p.m, self)
		p.link = ours
		ours.SetHandler(func(pkt []byte) {
			h, payload, err := ParseHeader(pkt)
			if err != nil || h.Type != TypeBroadcast {
				return
			}
			b, err := parseBroadcast(payload)
			if err != nil || h.Dst != p.m.Address {
				t.Errorf("bad broadcast to %s: %v, dst %s", p.m.Address, err, h.Dst)
				return
			}
			p.mu.Lock()
			p.got = append(p.got, bcastRecv{h.Src, b.End, h.Hops, string(b.Payload)})
			p.mu.Unlock()
		})
		peers[x] = p
		kinds := KindNear
		if x == 0x40 {
			kinds = 0
		}
		n.addLink(theirs, kinds)
	}
	var mu sync.Mutex
	var delivered []Message
	n.Handle(0x77, func(m *Message) {
		mu.Lock()
		c := *m
		c.Payload = slices.Clone(m.Payload)
		delivered = append(delivered, c)
		mu.Unlock()
	})
	takeDelivered := func() []Message {
		mu.Lock()
		defer mu.Unlock()
		d := delivered
		delivered = nil
		return d
	}
	expect := func(step string, want map[byte][]bcastRecv) {
		t.Helper()
		for x, p := range peers {
			if got := p.take(); !slices.Equal(got, want[x]) {
				t.Errorf("%s: peer %#x got %+v, want %+v", step, x, got, want[x])
			}
		}
	}

	// As originator: the whole ring, split among all five neighbours.
	if err := n.Broadcast(0x77, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	me := self.Address
	expect("originate", map[byte][]bcastRecv{
		0x20: {{me, a(0x30), 0, "hi"}}, 0x30: {{me, a(0x80), 0, "hi"}}, 0x80: {{me, a(0xf0), 0, "hi"}},
		0xf0: {{me, a(0x05), 0, "hi"}}, 0x05: {{me, me, 0, "hi"}},
	})
	if d := takeDelivered(); len(d) != 0 {
		t.Fatalf("the originator delivered to itself: %+v", d)
	}

	// As forwarder of [self, 0xc0) from 0xc0's broadcast, handed over by 0x05.
	orig := a(0xc0)
	peers[0x05].link.Send(bcastMsg(orig, me, a(0xc0), 0x77, 1, 0, "relay"))
	expect("relay", map[byte][]bcastRecv{
		0x20: {{orig, a(0x30), 1, "relay"}}, 0x30: {{orig, a(0x80), 1, "relay"}}, 0x80: {{orig, a(0xc0), 1, "relay"}},
	})
	d := takeDelivered()
	if len(d) != 1 || d[0].Src != orig || d[0].From != a(0x05) || d[0].Dst != me || d[0].Type != 0x77 || string(d[0].Payload) != "relay" {
		t.Fatalf("delivered %+v", d)
	}

	// A duplicate is dropped and counted.
	before := n.Status().Counters
	peers[0x05].link.Send(bcastMsg(orig, me, a(0xc0), 0x77, 1, 0, "relay"))
	expect("duplicate", nil)
	if got := n.Status().Counters.BroadcastDropped; got != before.BroadcastDropped+1 {
		t.Errorf("duplicate: dropped %d, was %d", got, before.BroadcastDropped)
	}

	// Malformed ones are dropped and counted, nothing forwarded.
	for name, msg := range map[string][]byte{
		"for another node":    bcastMsg(orig, a(0x20), a(0xc0), 0x77, 2, 0, ""),
		"whole ring":          bcastMsg(orig, me, me, 0x77, 3, 0, ""),
		"originator in range": bcastMsg(a(0x50), me, a(0xc0), 0x77, 4, 0, ""),
		"sender in range":     bcastMsg(a(0x09), me, a(0x08), 0x77, 5, 0, ""),
		"overlay inner type":  bcastMsg(orig, me, a(0xc0), TypeEcho, 6, 0, ""),
		"routing flags":       bcastMsg(orig, me, a(0xc0), 0x77, 7, FlagClosest, ""),
		"via flag":            bcastMsg(orig, me, a(0xc0), 0x77, 8, FlagVia, ""),
		"truncated":           bcastMsg(orig, me, a(0xc0), 0x77, 9, 0, "")[:HeaderLen+20],
		"our own coming back": bcastMsg(me, me, a(0xc0), 0x77, 10, 0, ""),
	} {
		before := n.Status().Counters.Malformed
		peers[0x05].link.Send(msg)
		expect(name, nil)
		if got := n.Status().Counters.Malformed; got != before+1 {
			t.Errorf("%s: malformed %d, was %d", name, got, before)
		}
	}
	if d := takeDelivered(); len(d) != 0 {
		t.Fatalf("malformed broadcasts delivered: %+v", d)
	}

	// A dead link's range goes to the child before it.
	peers[0x30].link.Close()
	peers[0x05].link.Send(bcastMsg(orig, me, a(0xc0), 0x77, 11, 0, "x"))
	expect("dead link", map[byte][]bcastRecv{
		0x20: {{orig, a(0x80), 1, "x"}}, 0x80: {{orig, a(0xc0), 1, "x"}},
	})
	takeDelivered()

	// Relayed broadcasts beyond the per-neighbour limit are dropped.
	before = n.Status().Counters
	const burst = 3 * broadcastLinkRate
	for i := range burst {
		peers[0x05].link.Send(bcastMsg(a(0xc1), me, a(0xc0), 0x77, uint64(100+i), 0, ""))
	}
	dropped := n.Status().Counters.BroadcastDropped - before.BroadcastDropped
	if got := uint64(len(takeDelivered())); dropped == 0 || got+dropped != burst {
		t.Errorf("relayed %d: %d delivered, %d dropped", burst, got, dropped)
	}
	for _, p := range peers {
		p.take()
	}

	// The originator's own limit, and its argument checks.
	var ok int
	for err = nil; err == nil && ok < 10*broadcastBurst; ok++ {
		err = n.Broadcast(0x77, nil)
	}
	if !errors.Is(err, ErrBroadcastLimited) || ok < broadcastBurst {
		t.Errorf("after %d broadcasts: %v", ok, err)
	}
	if err := n.Broadcast(TypeEcho, nil); err == nil {
		t.Error("broadcast of an overlay type accepted")
	}
	if err := n.Broadcast(0x77, make([]byte, MaxBroadcastPayload+1)); err == nil {
		t.Error("oversized broadcast accepted")
	}
}
