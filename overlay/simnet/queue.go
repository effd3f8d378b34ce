package simnet

import (
	"sync"

	"github.com/ringvpn/ringvpn/security"
)

// MaxPacket is the longest packet a Link carries, as security.Link.
const MaxPacket = security.MaxPayload

// eventKind says what an event does when it is due.
type eventKind uint8

const (
	// evPacket hands data to the handler of link to.
	evPacket eventKind = iota
	// evEnd ends link to: its peer closed it, or crashed DeadAfter ago.
	evEnd
	// evDial finishes the handshake of dial.
	evDial
	// evDialFail fails dial: nobody answered within the timeout.
	evDialFail
)

// when is the time of an event: nanoseconds since Fabric.epoch, with the
// scheduling order breaking ties, so that events due at the same instant
// happen in the order they were scheduled.
type when struct {
	at  int64
	seq uint64
}

func (w when) before(v when) bool {
	return w.at < v.at || (w.at == v.at && w.seq < v.seq)
}

// event is something that happens at a point of simulated time: in the
// heap until it is due, then, for evPacket and evEnd, in the queue of the
// worker of the destination node.
type event struct {
	to   *Link  // evPacket, evEnd
	data []byte // evPacket: the packet, in a buffer from the free lists
	dial *dialing
	kind eventKind
	// shard is the worker of to's node, copied from the sending end, whose
	// cache lines are warm, so that fire need not chase pointers to the
	// destination under the fabric's lock.
	shard uint32
}

// eventHeap is a 4-ary min-heap of events by when. The times are kept
// apart from the events so that the comparisons of a sift read one cache
// line per level; sifts move a hole instead of swapping. It is written out
// rather than using container/heap, whose interface boxes every element.
type eventHeap struct {
	whens  []when
	events []event
}

func (h *eventHeap) len() int { return len(h.whens) }

// next returns the time of the earliest event; the heap is not empty.
func (h *eventHeap) next() int64 { return h.whens[0].at }

func (h *eventHeap) push(w when, e event) {
	h.whens = append(h.whens, w)
	h.events = append(h.events, e)
	ws, es := h.whens, h.events
	i := len(ws) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !w.before(ws[p]) {
			break
		}
		ws[i], es[i] = ws[p], es[p]
		i = p
	}
	ws[i], es[i] = w, e
}

func (h *eventHeap) pop() event {
	e := h.events[0]
	last := len(h.whens) - 1
	w, x := h.whens[last], h.events[last]
	h.events[last] = event{}
	h.whens, h.events = h.whens[:last], h.events[:last]
	ws, es := h.whens, h.events
	if last == 0 {
		return e
	}
	i := 0
	for {
		c := 4*i + 1
		if c >= last {
			break
		}
		m := c
		for k := c + 1; k < min(c+4, last); k++ {
			if ws[k].before(ws[m]) {
				m = k
			}
		}
		if !ws[m].before(w) {
			break
		}
		ws[i], es[i] = ws[m], es[m]
		i = m
	}
	ws[i], es[i] = w, x
	return e
}

// Buffer size classes. Most overlay messages are a header and a few
// addresses, so a simulation with tens of thousands of packets in flight
// holds small buffers rather than MaxPacket bytes each.
var sizeClasses = [...]int{256, 2048, MaxPacket}

// maxFreeBytes bounds the idle buffers of each size class.
const maxFreeBytes = 8 << 20

// freeLists holds idle packet buffers by size class. Every buffer has the
// capacity of its class; a buffer is owned by exactly one of the free
// lists, an event, or the handler it is passed to.
type freeLists struct {
	mu    sync.Mutex
	lists [len(sizeClasses)][][]byte
}

// class returns the smallest size class that holds n bytes; n is at most
// MaxPacket.
func class(n int) int {
	for c, size := range sizeClasses {
		if n <= size {
			return c
		}
	}
	return len(sizeClasses) - 1
}

// get returns a buffer of length n from the free lists, or a new one.
func (fl *freeLists) get(n int) []byte {
	c := class(n)
	fl.mu.Lock()
	if l := fl.lists[c]; len(l) > 0 {
		b := l[len(l)-1]
		l[len(l)-1] = nil
		fl.lists[c] = l[:len(l)-1]
		fl.mu.Unlock()
		return b[:n]
	}
	fl.mu.Unlock()
	return make([]byte, n, sizeClasses[c])
}

// put returns bufs to the free lists, or leaves them to the garbage
// collector when their class is full.
func (fl *freeLists) put(bufs ...[]byte) {
	fl.mu.Lock()
	for _, b := range bufs {
		c := class(cap(b))
		if len(fl.lists[c])*sizeClasses[c] < maxFreeBytes {
			fl.lists[c] = append(fl.lists[c], b[:0])
		}
	}
	fl.mu.Unlock()
}
