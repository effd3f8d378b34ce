package simnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringvpn/ringvpn/security"
)

// Stats counts what a Fabric did. Every packet Send accepted ends up in
// exactly one of Delivered, Lost, Dropped and Unhandled, or is still
// InFlight.
type Stats struct {
	// Sent counts packets accepted by Link.Send.
	Sent uint64
	// Delivered counts packets a handler returned from.
	Delivered uint64
	// Lost counts packets dropped by Config.Loss.
	Lost uint64
	// Dropped counts packets that arrived at a link end that had ended:
	// closed, crashed, or shut down with the fabric.
	Dropped uint64
	// Unhandled counts packets that arrived at a link end with no handler.
	Unhandled uint64
	// InFlight is how many packets are on their way or being handled.
	InFlight uint64
	// Dials counts handshakes started by Dial; DialsFailed those that did
	// not return a link (nobody answered, context done, dialer closed).
	Dials, DialsFailed uint64
	// Refused counts handshakes refused for a revoked certificate (part of
	// DialsFailed).
	Refused uint64
	// Links is how many links have at least one end open.
	Links int
	// Nodes is how many Linkers are listening.
	Nodes int
}

// Fabric is an in-memory fabric of plain links between nodes. Its methods
// may be called concurrently.
type Fabric struct {
	// immutable after New
	cfg     Config
	epoch   time.Time
	workers []*worker
	quit    chan struct{} // closed by Close: workers exit

	wg sync.WaitGroup // the workers

	// fireMu lets one fire at a time run, so that the batches of due
	// events reach the workers in time order. mu nests inside it.
	fireMu sync.Mutex
	batch  []event // owned under fireMu: the events fire is dispatching
	// dispatching is set under mu while fire hands a batch to the workers
	// outside mu; events due at once must not overtake the batch.
	dispatching atomic.Bool

	// mu guards the following. Worker and free-list mutexes nest inside it.
	mu          sync.Mutex
	closed      bool
	rng         *rand.Rand
	nodes       map[netip.AddrPort]*Linker
	events      eventHeap
	seq         uint64
	timer       *time.Timer // created on the first delayed event
	timerAt     int64       // when timer fires; valid when armed
	armed       bool
	nextShard   int
	sent, lost  uint64
	dials       uint64
	dialsFailed uint64
	refused     uint64
	links       int

	delivered, dropped, unhandled atomic.Uint64

	free freeLists
}

// New returns a Fabric and starts its workers; zero fields of cfg take
// their defaults. It panics if cfg is invalid: check configuration from
// users with Config.Validate first. Inside a testing/synctest bubble, a
// Fabric must be created and used within the bubble, and closed before
// the bubble ends.
func New(cfg Config) *Fabric {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	n := cfg.Workers
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	f := &Fabric{
		cfg:     cfg,
		epoch:   time.Now(),
		workers: make([]*worker, n),
		quit:    make(chan struct{}),
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		nodes:   make(map[netip.AddrPort]*Linker),
	}
	f.wg.Add(n)
	for i := range f.workers {
		w := &worker{f: f, wake: make(chan struct{}, 1), used: make([][]byte, 0, recycleBatch)}
		f.workers[i] = w
		go w.run()
	}
	return f
}

// Listen registers a node at addr: self is the Member its peers see from
// Link.Peer. addr needs a specific IP address (IPv4-mapped IPv6 addresses
// are unmapped) and a port; an address a live node listens at is an error
// wrapping ErrAddrInUse. The address is free again once that node closes or
// crashes.
func (f *Fabric) Listen(self *security.Member, addr netip.AddrPort) (*Linker, error) {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || addr.Port() == 0 {
		return nil, fmt.Errorf("simnet: listen %v: need a specific IP address and a port", addr)
	}
	if self == nil {
		return nil, fmt.Errorf("simnet: listen %v: no member", addr)
	}
	addr = netip.AddrPortFrom(ip, addr.Port())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("simnet: listen %v: %w", addr, errClosed)
	}
	if f.nodes[addr] != nil {
		return nil, fmt.Errorf("simnet: listen %v: %w", addr, ErrAddrInUse)
	}
	l := &Linker{
		f:     f,
		self:  self,
		addr:  addr,
		shard: uint32(f.nextShard),
		done:  make(chan struct{}),
		wake:  make(chan struct{}, 1),
		state: nodeOpen,
	}
	f.nextShard = (f.nextShard + 1) % len(f.workers)
	f.nodes[addr] = l
	return l, nil
}

// Stats returns the counters so far.
func (f *Fabric) Stats() Stats {
	// Read the receivers' counters first: whatever they count was sent
	// before, so InFlight can't go negative.
	s := Stats{
		Delivered: f.delivered.Load(),
		Dropped:   f.dropped.Load(),
		Unhandled: f.unhandled.Load(),
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s.Sent, s.Lost = f.sent, f.lost
	s.InFlight = s.Sent - s.Lost - s.Delivered - s.Dropped - s.Unhandled
	s.Dials, s.DialsFailed, s.Refused = f.dials, f.dialsFailed, f.refused
	s.Links, s.Nodes = f.links, len(f.nodes)
	return s
}

// Close ends every link and node at once (peers are not told: there is
// nobody left), fails pending dials, drops the packets in flight and waits
// for the workers to exit. It must not be called from a handler. Listen on
// a closed Fabric fails; a second Close returns an error.
func (f *Fabric) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return errClosed
	}
	f.closed = true
	for _, l := range f.nodes {
		f.shutdownLocked(l, nodeClosed, false)
	}
	if f.timer != nil {
		f.timer.Stop()
		f.armed = false
	}
	for f.events.len() > 0 {
		e := f.events.pop()
		switch e.kind {
		case evPacket:
			f.dropped.Add(1)
			f.free.put(e.data)
		case evDial, evDialFail:
			f.finishDialLocked(e.dial, nil, errClosed)
		}
	}
	f.mu.Unlock()
	close(f.quit)
	f.wg.Wait()
	return nil
}

// now is the fabric's clock. It is read under mu, so that events scheduled
// later never get an earlier time.
func (f *Fabric) now() int64 { return int64(time.Since(f.epoch)) }

// scheduleLocked makes e happen delay from now. A packet or an end due at
// once goes straight to its worker unless it would overtake events that
// are due and not yet with their workers. f.mu is held.
func (f *Fabric) scheduleLocked(e event, delay time.Duration, now int64) {
	w := when{now + int64(delay), f.seq}
	f.seq++
	if delay <= 0 && e.to != nil && !f.dispatching.Load() && (f.events.len() == 0 || f.events.next() > now) {
		f.workers[e.shard].enqueue(&e)
		return
	}
	f.events.push(w, e)
	if !f.armed || w.at < f.timerAt {
		f.arm(w.at, now)
	}
}

// arm sets the timer to fire at at. f.mu is held.
func (f *Fabric) arm(at, now int64) {
	d := time.Duration(at - now)
	if f.timer == nil {
		f.timer = time.AfterFunc(d, f.fire)
	} else {
		f.timer.Reset(d)
	}
	f.timerAt, f.armed = at, true
}

// fire runs every event that is due and re-arms the timer for the next.
// Dials complete under mu; packets and ends are handed to their workers
// after mu is released, so that senders are not held up. A late or extra
// call is harmless.
func (f *Fabric) fire() {
	f.fireMu.Lock()
	defer f.fireMu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.armed = false
	now := f.now()
	batch := f.batch
	for f.events.len() > 0 && f.events.next() <= now {
		e := f.events.pop()
		switch e.kind {
		case evPacket, evEnd:
			batch = append(batch, e)
		case evDial:
			f.completeDialLocked(e.dial, now)
		case evDialFail:
			f.failDialLocked(e.dial)
		}
	}
	if f.events.len() > 0 {
		f.arm(f.events.next(), now)
	}
	if len(batch) == 0 {
		f.mu.Unlock()
		return
	}
	f.dispatching.Store(true)
	f.mu.Unlock()
	for i := range batch {
		f.workers[batch[i].shard].enqueue(&batch[i])
	}
	f.dispatching.Store(false)
	clear(batch)
	f.batch = batch[:0]
}

// recycleBatch is how many used buffers a worker gathers before it returns
// them to the free lists.
const recycleBatch = 64

// worker runs the handlers of the nodes assigned to it, one event at a
// time, in the order the events became due.
type worker struct {
	// immutable after New
	f    *Fabric
	wake chan struct{} // a token when q becomes non-empty

	// mu guards the following; it nests inside Fabric.mu and
	// Fabric.fireMu.
	mu    sync.Mutex
	q     []event
	spare []event // the slice run last drained, for q to reuse

	// owned by run
	used [][]byte // buffers to return to the free lists
}

// enqueue appends e to the worker's queue and wakes it.
func (w *worker) enqueue(e *event) {
	w.mu.Lock()
	wasEmpty := len(w.q) == 0
	w.q = append(w.q, *e)
	w.mu.Unlock()
	if wasEmpty {
		signal(w.wake)
	}
}

func (w *worker) run() {
	defer w.f.wg.Done()
	for {
		select {
		case <-w.wake:
		case <-w.f.quit:
			w.mu.Lock()
			q := w.q
			w.q = nil
			w.mu.Unlock()
			for i := range q {
				if q[i].kind == evPacket {
					w.f.dropped.Add(1)
				}
			}
			return
		}
		w.mu.Lock()
		q := w.q
		w.q, w.spare = w.spare, nil
		w.mu.Unlock()
		for i := range q {
			w.handle(&q[i])
			q[i] = event{}
			if len(w.used) == cap(w.used) {
				w.recycle()
			}
		}
		w.recycle()
		w.mu.Lock()
		w.spare = q[:0]
		w.mu.Unlock()
	}
}

// recycle returns the buffers of the packets handled so far to the free
// lists, a batch per lock.
func (w *worker) recycle() {
	if len(w.used) == 0 {
		return
	}
	w.f.free.put(w.used...)
	clear(w.used)
	w.used = w.used[:0]
}

// handle delivers a packet or ends a link. No lock is held.
func (w *worker) handle(e *event) {
	f := w.f
	switch e.kind {
	case evPacket:
		to := e.to
		switch h := to.handler.Load(); {
		case to.ended.Load():
			f.dropped.Add(1)
		case h == nil:
			f.unhandled.Add(1)
		default:
			(*h)(e.data)
			f.delivered.Add(1)
		}
		w.used = append(w.used, e.data)
	case evEnd:
		f.mu.Lock()
		f.endLocked(e.to)
		f.mu.Unlock()
	}
}
