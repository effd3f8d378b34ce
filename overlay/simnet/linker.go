package simnet

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/security"
)

// nodeState is where a Linker is in its life.
type nodeState uint8

const (
	nodeOpen   nodeState = iota
	nodeClosed           // Close or Fabric.Close
	nodeKilled           // Kill
)

// Linker is one node of a Fabric: it dials and accepts plain links. It
// implements overlay.Linker; its methods may be called concurrently, from
// handlers too.
type Linker struct {
	// immutable after Listen
	f     *Fabric
	self  *security.Member
	addr  netip.AddrPort
	shard uint32        // index of the worker running this node's handlers
	done  chan struct{} // closed when the node closes or crashes
	wake  chan struct{} // a token when accq grows

	revs atomic.Pointer[security.Revocations] // what SetRevocations set

	// Fabric.mu guards the following.
	state nodeState
	links []*Link // open ends at this node; Link.idx is the index
	accq  []*Link // ends waiting for Accept
	// revStop unregisters the revocation hook (SetRevocations).
	revStop func()
}

var _ overlay.Linker = (*Linker)(nil)

// Self returns the member this node was registered as.
func (l *Linker) Self() *security.Member { return l.self }

// LocalAddr returns the address the node listens at.
func (l *Linker) LocalAddr() netip.AddrPort { return l.addr }

// dialing is a Dial waiting for its handshake.
type dialing struct {
	from   *Linker
	target *Linker // nil when nobody listened at the address
	remote netip.AddrPort
	rtt    time.Duration
	failAt int64 // when the handshake times out, on the fabric's clock
	done   chan struct{}

	// Fabric.mu guards the following.
	finished bool
	noAnswer bool // the target was missing or gone
	link     *Link
	err      error
}

// Dial opens a link to the node at remote. The simulated handshake takes
// one RTT of the fabric's latency model, after which Dial returns this
// side's end and the remote's Accept the other. Dial to an address where
// no live node listens waits for Config.DialTimeout, or until ctx's
// deadline if that is earlier, and returns an error wrapping ErrNoAnswer
// (and the context's error if that came first). Dial to the node's own
// address is an error wrapping ErrSelfDial; on a closed or crashed node,
// one wrapping net.ErrClosed.
func (l *Linker) Dial(ctx context.Context, remote netip.AddrPort) (overlay.Link, error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if remote == l.addr {
		return nil, fmt.Errorf("simnet: dial %v: %w", remote, ErrSelfDial)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("simnet: dial %v: %w", remote, err)
	}
	f := l.f
	rtt := min(max(f.cfg.Latency.RTT(l.addr.Addr(), remote.Addr()), 0), maxDelay)
	d := &dialing{from: l, remote: remote, rtt: rtt, done: make(chan struct{})}

	f.mu.Lock()
	if l.state != nodeOpen {
		f.mu.Unlock()
		return nil, fmt.Errorf("simnet: dial %v: %w", remote, errClosed)
	}
	f.dials++
	now := f.now()
	d.failAt = now + int64(f.cfg.DialTimeout)
	if t := f.nodes[remote]; t != nil {
		d.target = t
		f.scheduleLocked(event{kind: evDial, dial: d}, rtt, now)
	} else {
		d.noAnswer = true
		f.scheduleLocked(event{kind: evDialFail, dial: d}, f.cfg.DialTimeout, now)
	}
	f.mu.Unlock()

	select {
	case <-d.done:
	case <-ctx.Done():
	case <-l.done:
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if d.finished {
		if d.err != nil {
			return nil, d.err
		}
		return d.link, nil
	}
	// Cut short: the handshake's events find d finished and do nothing.
	var err error
	switch {
	case l.state != nodeOpen:
		err = fmt.Errorf("simnet: dial %v: %w", remote, errClosed)
	case d.noAnswer:
		err = fmt.Errorf("simnet: dial %v: %w (%w)", remote, ErrNoAnswer, ctx.Err())
	default:
		err = fmt.Errorf("simnet: dial %v: %w", remote, ctx.Err())
	}
	f.finishDialLocked(d, nil, err)
	return nil, err
}

// completeDialLocked ends d's handshake: both ends of a new link if the
// target is still there, else a wait for the timeout. f.mu is held.
func (f *Fabric) completeDialLocked(d *dialing, now int64) {
	switch {
	case d.finished:
	case d.from.state != nodeOpen:
		f.finishDialLocked(d, nil, fmt.Errorf("simnet: dial %v: %w", d.remote, errClosed))
	case d.target.state != nodeOpen:
		d.noAnswer = true
		f.scheduleLocked(event{kind: evDialFail, dial: d}, time.Duration(max(d.failAt-now, 0)), now)
	case refusedLocked(d.from, d.target) != nil:
		f.refused++
		f.finishDialLocked(d, nil, fmt.Errorf("simnet: dial %v: %w", d.remote, refusedLocked(d.from, d.target)))
	default:
		t := d.target
		a := &Link{owner: d.from, peerShard: t.shard, rtt: d.rtt, dialed: true, done: make(chan struct{})}
		b := &Link{owner: t, peerShard: d.from.shard, rtt: d.rtt, done: make(chan struct{})}
		a.peer, b.peer = b, a
		d.from.addLocked(a)
		t.addLocked(b)
		f.links++
		t.accq = append(t.accq, b)
		signal(t.wake)
		f.finishDialLocked(d, a, nil)
	}
}

// failDialLocked fails d: nobody answered. f.mu is held.
func (f *Fabric) failDialLocked(d *dialing) {
	if d.finished {
		return
	}
	f.finishDialLocked(d, nil, fmt.Errorf("simnet: dial %v: %w within %v", d.remote, ErrNoAnswer, f.cfg.DialTimeout))
}

// finishDialLocked records d's outcome and wakes its Dial. f.mu is held.
func (f *Fabric) finishDialLocked(d *dialing, link *Link, err error) {
	if d.finished {
		return
	}
	if err != nil {
		f.dialsFailed++
	}
	d.finished, d.link, d.err = true, link, err
	close(d.done)
}

// Accept returns the next link a peer opened. Ends that closed while they
// waited are skipped. It fails once the node is closed or crashed, or when
// ctx is done.
func (l *Linker) Accept(ctx context.Context) (overlay.Link, error) {
	f := l.f
	for {
		f.mu.Lock()
		for len(l.accq) > 0 {
			k := l.accq[0]
			l.accq[0] = nil
			l.accq = l.accq[1:]
			if k.ended.Load() {
				continue
			}
			if len(l.accq) > 0 {
				signal(l.wake) // for another Accept
			}
			f.mu.Unlock()
			return k, nil
		}
		open := l.state == nodeOpen
		f.mu.Unlock()
		if !open {
			return nil, fmt.Errorf("simnet: accept at %v: %w", l.addr, errClosed)
		}
		select {
		case <-l.wake:
		case <-l.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("simnet: accept at %v: %w", l.addr, ctx.Err())
		}
	}
}

// Close is a clean shutdown of the node: it stops accepting, fails its
// pending dials, and closes its links; each peer's end ends one one-way
// latency later, as if told. The address is free again at once. Close
// after Close or Kill does nothing and returns nil.
func (l *Linker) Close() error {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	if l.state == nodeOpen {
		l.f.shutdownLocked(l, nodeClosed, true)
	}
	return nil
}

// Kill crashes the node: from now on it sends and receives nothing, its
// own link ends are done and its pending dials fail. Peers are not told:
// their ends stay open, swallowing what they send, until Config.DeadAfter
// after the crash. The address is free again at once, so a new node can
// take it (a restart).
func (l *Linker) Kill() {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	if l.state == nodeOpen {
		l.f.shutdownLocked(l, nodeKilled, true)
	}
}

// shutdownLocked ends node l and its links. With notify, the peers' ends
// end one one-way latency later (closed) or DeadAfter later (killed). f.mu
// is held.
func (f *Fabric) shutdownLocked(l *Linker, how nodeState, notify bool) {
	l.state = how
	if l.revStop != nil {
		l.revStop()
		l.revStop = nil
	}
	if f.nodes[l.addr] == l {
		delete(f.nodes, l.addr)
	}
	close(l.done)
	clear(l.accq)
	l.accq = nil
	now := f.now()
	for len(l.links) > 0 {
		k := l.links[len(l.links)-1]
		f.endLocked(k)
		if notify && !k.peer.ended.Load() {
			delay := k.oneWay()
			if how == nodeKilled {
				delay = f.cfg.DeadAfter
			}
			f.scheduleLocked(event{kind: evEnd, to: k.peer, shard: k.peerShard}, delay, now)
		}
	}
}

// addLocked records the open end k. Fabric.mu is held.
func (l *Linker) addLocked(k *Link) {
	k.idx = len(l.links)
	l.links = append(l.links, k)
}

// endLocked ends link end k, once: Send fails, nothing more is delivered,
// Done is closed. It reports whether k was open. f.mu is held.
func (f *Fabric) endLocked(k *Link) bool {
	if k.ended.Load() {
		return false
	}
	k.ended.Store(true)
	close(k.done)
	o := k.owner
	last := len(o.links) - 1
	o.links[k.idx] = o.links[last]
	o.links[k.idx].idx = k.idx
	o.links[last] = nil
	o.links = o.links[:last]
	if k.peer.ended.Load() {
		f.links--
	}
	return true
}

// signal leaves a token in c unless one is there.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
