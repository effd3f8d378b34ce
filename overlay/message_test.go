package overlay

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"
)

func sampleConnect() connect {
	return connect{
		ID: 42, Kinds: KindNear | KindFar, Via: Address{9},
		Sender: NodeInfo{Address: Address{1, 2, 3}, Coord: Coord{X: 1.5, Y: -2, H: 0.25, Err: 0.5},
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4242"), netip.MustParseAddrPort("[2001:db8::1]:4242")}},
		Near: []NodeInfo{{Address: Address{7}, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:1")}}},
	}
}

func TestHeader_RoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Type: TypeEcho, TTL: 64, Src: Address{1}, Dst: Address{2}},
		{Type: TypeConnectReply, Flags: FlagVia | FlagClosest, TTL: 3, Hops: 9, Src: Address{3}, Dst: Address{4}, Via: Address{5}},
	} {
		b := appendMessage(nil, &h, []byte("payload"))
		got, payload, err := ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != h || string(payload) != "payload" {
			t.Fatalf("round trip: got %+v %q, want %+v", got, payload, h)
		}
	}
}

func TestParseHeader_RejectsBadInput(t *testing.T) {
	good := appendMessage(nil, &Header{Type: TypeEcho, TTL: 1}, nil)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"short":     good[:HeaderLen-1],
		"version":   append([]byte{2}, good[1:]...),
		"flags":     append(append([]byte{}, good[:2]...), append([]byte{0x80}, good[3:]...)...),
		"short via": append(append([]byte{}, good[:2]...), append([]byte{byte(FlagVia)}, good[3:]...)...),
	} {
		if _, _, err := ParseHeader(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestPayloads_RoundTrip(t *testing.T) {
	c := sampleConnect()
	got, err := parseConnect(c.append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("connect round trip:\n got %+v\nwant %+v", got, c)
	}
	p := ping{Sent: 12345, Kinds: KindLeaf, Coord: Coord{X: 3, Y: 4, H: 1, Err: 0.75}}
	if gp, err := parsePing(p.append(nil)); err != nil || gp != p {
		t.Fatalf("ping round trip: %+v, %v", gp, err)
	}
	for _, obs := range []string{"198.51.100.7:4820", "[2001:db8::7]:61000"} {
		p.Observed = netip.MustParseAddrPort(obs)
		if gp, err := parsePing(p.append(nil)); err != nil || gp != p {
			t.Fatalf("ping with observed %s: %+v, %v", obs, gp, err)
		}
	}
	two := append(p.append(nil)[:8+1+16], putEndpoints(nil, []netip.AddrPort{p.Observed, p.Observed})...)
	if _, err := parsePing(two); err == nil {
		t.Fatal("a ping with two observed endpoints parsed")
	}
	nb := neighbors{Nodes: []NodeInfo{c.Sender, c.Near[0]}}
	if gn, err := parseNeighbors(nb.append(nil)); err != nil || !reflect.DeepEqual(gn, nb) {
		t.Fatalf("neighbors round trip: %+v, %v", gn, err)
	}
	// Any truncation is an error, never a panic or a partial value.
	full := c.append(nil)
	for i := range len(full) {
		if _, err := parseConnect(full[:i]); err == nil {
			t.Fatalf("connect truncated to %d bytes decoded", i)
		}
	}
	if _, err := parseConnect(append(full, 0)); err == nil {
		t.Fatal("connect with a trailing byte decoded")
	}
}

func FuzzParseHeader_NoPanic(f *testing.F) {
	f.Add(appendMessage(nil, &Header{Type: TypeEcho, TTL: 64}, []byte("x")))
	f.Add(appendMessage(nil, &Header{Type: TypeConnect, Flags: FlagVia, TTL: 2}, nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := ParseHeader(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes (reserved bytes aside).
		again := appendMessage(nil, &h, payload)
		if !bytes.Equal(again[8:], b[8:]) || !bytes.Equal(again[:5], b[:5]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
		}
	})
}

func FuzzPayloads_NoPanic(f *testing.F) {
	c := sampleConnect()
	f.Add(c.append(nil))
	p := ping{Sent: 1, Kinds: KindNear}
	f.Add(p.append(nil))
	nb := neighbors{Nodes: []NodeInfo{c.Sender}}
	f.Add(nb.append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := parseConnect(b); err == nil {
			if again := c.append(nil); !bytes.Equal(again, b) {
				// Only non-canonical encodings may differ (IPv4-mapped
				// IPv6 endpoints are unmapped); they must decode the same.
				c2, err := parseConnect(again)
				if err != nil || !reflect.DeepEqual(c2, c) {
					t.Fatalf("connect does not re-decode: %v", err)
				}
			}
		}
		if pg, err := parsePing(b); err == nil {
			if again := pg.append(nil); !bytes.Equal(again, b) {
				// As for connect: only an IPv4-mapped observed endpoint
				// may encode differently, and it must decode the same.
				if pg2, err := parsePing(again); err != nil || pg2 != pg {
					t.Fatalf("ping does not re-decode: %v", err)
				}
			}
		}
		parseNeighbors(b)
	})
}
