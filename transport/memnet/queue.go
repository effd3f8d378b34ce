package memnet

import (
	"net/netip"
	"time"

	"github.com/ringvpn/ringvpn/transport"
)

// buffer holds one datagram. Buffers move between the free list, the
// in-flight heap and receive queues; exactly one of them owns a buffer.
type buffer = [transport.MaxPacket]byte

// maxFree bounds the free list: about 9.5 MiB of idle buffers per Network.
const maxFree = 1024

// packet is a datagram on its way: buf[:n] from the public address from.
type packet struct {
	buf  *buffer
	n    int
	from netip.AddrPort
}

// ring is a FIFO of packets that grows on demand up to the caller's limit,
// so an idle endpoint costs a few words.
type ring struct {
	buf  []packet
	head int
	n    int
}

func (r *ring) len() int { return r.n }

// push appends p, growing the ring to at most limit entries; the caller
// checks r.len() < limit first.
func (r *ring) push(p packet, limit int) {
	if r.n == len(r.buf) {
		nb := make([]packet, min(max(8, 2*len(r.buf)), limit))
		for i := range r.n {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = p
	r.n++
}

func (r *ring) pop() packet {
	p := r.buf[r.head]
	r.buf[r.head] = packet{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return p
}

// flight is a datagram waiting for its arrival time.
type flight struct {
	at      time.Time
	seq     uint64 // send order: breaks ties in at
	realm   *NAT   // where to is: see NAT.route
	to      netip.AddrPort
	pkt     packet
	inOrder bool // counted in its path's pathState
}

func (f *flight) before(g *flight) bool {
	if f.at.Equal(g.at) {
		return f.seq < g.seq
	}
	return f.at.Before(g.at)
}

// flightHeap is a min-heap by (at, seq). It is written out rather than
// using container/heap, whose interface boxes every element.
type flightHeap []flight

func (h *flightHeap) push(f flight) {
	*h = append(*h, f)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s[i].before(&s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *flightHeap) pop() flight {
	s := *h
	f := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = flight{}
	s = s[:last]
	*h = s
	i := 0
	for {
		l := 2*i + 1
		if l >= len(s) {
			break
		}
		m := l
		if r := l + 1; r < len(s) && s[r].before(&s[l]) {
			m = r
		}
		if !s[m].before(&s[i]) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	return f
}
