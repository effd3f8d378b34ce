package vpn

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap/frame"
)

// mapping is what we know of one virtual IP.
type mapping struct {
	// guarded by VPN.mu
	remote    *remote   // nil: unknown, or nobody claims it
	expires   time.Time // when to look it up again
	resolving bool
	queue     [][]byte // frames (with headroom) waiting for the lookup
}

// remote is one member we exchange packets with.
type remote struct {
	addr overlay.Address

	// session is the end-to-end session over a routed pipe, used while
	// there is no direct link.
	session atomic.Pointer[security.Link]
	// member is r's certificate, once known: from the DHT record that
	// mapped an IP to r, then from r's latest packet. It is set before
	// any IP maps to r, so the outbound firewall always has it.
	member atomic.Pointer[security.Member]
	// Traffic, read and reset by the housekeeper.
	sent, heard atomic.Uint64
	packetsOut  atomic.Uint64
	packetsIn   atomic.Uint64
	lastActive  atomic.Int64 // unix ns of the last packet either way

	mu       sync.Mutex
	opening  bool
	queue    [][]byte
	failedAt time.Time
	shortcut bool // we asked the ring for a shortcut
	// previous is the session a newer one replaced (both sides opened
	// one); it keeps receiving until previousUntil, then closes.
	previous      *security.Link
	previousUntil time.Time
	learnedUntil  time.Time // when to take the member's IPs in again
}

// sessionDrain is how long a replaced session still receives.
const sessionDrain = 10 * time.Second

// maxResolving bounds the DHT lookups of virtual IPs in flight: every
// new destination starts one, and local programs choose destinations.
const maxResolving = 64

func (r *remote) touch(now time.Time) { r.lastActive.Store(now.UnixNano()) }

// close closes every session to r.
func (r *remote) close() {
	if l := r.session.Swap(nil); l != nil {
		l.Close()
	}
	r.mu.Lock()
	prev := r.previous
	r.previous = nil
	r.queue = nil
	r.mu.Unlock()
	if prev != nil {
		prev.Close()
	}
}

// remoteLocked returns the state for addr, creating it; v.mu held.
func (v *VPN) remoteLocked(addr overlay.Address) *remote {
	r := v.byAddr[addr]
	if r == nil {
		r = &remote{addr: addr}
		r.touch(time.Now())
		v.byAddr[addr] = r
	}
	return r
}

// route finds where a packet to ip goes: the remote, or nil when the
// caller must queue it (resolving) or drop it (nobody claims ip).
func (v *VPN) route(ip netip.Addr, pkt []byte) *remote {
	now := time.Now()
	v.mu.Lock()
	m := v.byIP[ip]
	if m != nil && m.remote != nil && now.Before(m.expires) {
		r := m.remote
		v.mu.Unlock()
		return r
	}
	if m == nil {
		if len(v.byIP) >= v.cfg.MaxPeers || v.resolving.Load() >= maxResolving {
			// Full (the housekeeper makes room), or too many lookups
			// under way: drop rather than hold state for every address.
			v.mu.Unlock()
			v.stats.dropUnresolved.Add(1)
			return nil
		}
		m = &mapping{}
		v.byIP[ip] = m
	}
	switch {
	case m.remote != nil:
		// Stale: keep using it while a fresh lookup runs.
		if !m.resolving && v.resolving.Load() < maxResolving {
			m.resolving = true
			v.resolving.Add(1)
			v.spawn(func() { v.resolve(ip) })
		}
		r := m.remote
		v.mu.Unlock()
		return r
	case m.resolving:
		if len(m.queue) < v.cfg.QueueLen {
			m.queue = append(m.queue, slices.Clone(pkt))
		} else {
			v.stats.dropQueueFull.Add(1)
		}
	case now.Before(m.expires): // nobody claims it, recently
		v.stats.dropUnresolved.Add(1)
	case v.resolving.Load() >= maxResolving:
		v.stats.dropUnresolved.Add(1)
	default:
		m.resolving = true
		m.queue = append(m.queue, slices.Clone(pkt))
		v.resolving.Add(1)
		v.spawn(func() { v.resolve(ip) })
	}
	v.mu.Unlock()
	return nil
}

// resolve looks ip up in the DHT and sends what waited for it.
func (v *VPN) resolve(ip netip.Addr) {
	defer v.resolving.Add(-1)
	ctx, cancel := context.WithTimeout(v.ctx, v.cfg.ResolveTimeout)
	defer cancel()
	member, err := v.lookup(ctx, ip)
	now := time.Now()
	v.mu.Lock()
	m := v.byIP[ip]
	if m == nil || v.closed {
		v.mu.Unlock()
		return
	}
	m.resolving = false
	queue := m.queue
	m.queue = nil
	var r *remote
	switch {
	case err == nil:
		v.stats.resolved.Add(1)
		r = v.remoteLocked(member.Address)
		r.member.Store(member)
		m.remote, m.expires = r, now.Add(v.cfg.CacheTTL)
	case (errors.Is(err, dht.ErrNotFound) || errors.Is(err, dht.ErrBadRecord)) && m.remote == nil:
		v.stats.resolveFailed.Add(1)
		m.expires = now.Add(v.cfg.NegativeTTL)
	default:
		// No answer (the ring is healing, say), or an answer that takes
		// back what we knew (one storing node can be wrong or lie): keep
		// the old mapping and ask again soon.
		v.stats.resolveFailed.Add(1)
		if m.remote != nil {
			m.expires = now.Add(v.cfg.NegativeTTL)
		}
		r = m.remote
	}
	v.mu.Unlock()
	if err != nil {
		v.log.Debug("virtual IP not resolved", zap.Stringer("ip", ip), zap.Error(err))
	}
	if r != nil {
		for _, pkt := range queue {
			v.send(r, pkt)
		}
		return
	}
	v.stats.dropUnresolved.Add(uint64(len(queue)))
}

// lookup returns the member that owns ip, from its signed record.
func (v *VPN) lookup(ctx context.Context, ip netip.Addr) (*security.Member, error) {
	rec, err := v.dht.GetRecord(ctx, NamespaceVIP, ip.String())
	if err != nil {
		return nil, err
	}
	return v.verify.Verify(rec.Key(), rec, time.Now())
}

// learn records that member, who just sent us an authentic packet, owns
// the IPs of its certificate: replies need no lookup.
func (v *VPN) learn(r *remote, member *security.Member) {
	now := time.Now()
	r.mu.Lock()
	learned := now.Before(r.learnedUntil)
	if !learned {
		r.learnedUntil = now.Add(v.cfg.CacheTTL / 2)
	}
	r.mu.Unlock()
	if r.member.Load() != member {
		// The certificate it sends with now (a renewed one, say) is the
		// one the firewall's rules go by.
		r.member.Store(member)
	}
	if learned {
		return
	}
	exp := now.Add(v.cfg.CacheTTL)
	v.mu.Lock()
	for _, p := range member.IPs {
		if security.IsPool(p) {
			continue // a lease is mapped from its record, not the certificate
		}
		ip := p.Addr()
		m := v.byIP[ip]
		if m == nil {
			if len(v.byIP) >= v.cfg.MaxPeers {
				continue
			}
			m = &mapping{}
			v.byIP[ip] = m
		}
		if m.remote == nil || m.remote == r {
			m.remote, m.expires = r, exp
		}
	}
	v.mu.Unlock()
}

// send sends one frame (pkt: headroom, then the frame) to r: over the
// direct link if there is one, else over the session, else queued while
// the session opens; unless the firewall drops it. Frames that waited for
// r's lookup come here too, once r's member is known.
func (v *VPN) send(r *remote, pkt []byte) {
	if v.fw.Enabled() && !v.allowOut(r, pkt) {
		return // counted by the firewall
	}
	r.packetsOut.Add(1)
	r.sent.Add(1)
	r.touch(time.Now())
	err := v.node.SendData(r.addr, pkt)
	if err == nil {
		v.countOut(pkt)
		return
	}
	if !errors.Is(err, overlay.ErrNoLink) {
		v.stats.dropSendFailed.Add(1)
		return
	}
	if l := r.session.Load(); l != nil {
		pkt[0] = sessionFrame
		if err := l.Send(pkt); err == nil {
			v.countOut(pkt)
			return
		}
		select {
		case <-l.Done():
			r.session.CompareAndSwap(l, nil)
		default:
			v.stats.dropSendFailed.Add(1)
			return
		}
	}
	v.queueForSession(r, pkt)
}

// allowOut reports whether the firewall lets pkt (headroom, then an IP
// frame that outbound checked) go to r's member.
func (v *VPN) allowOut(r *remote, pkt []byte) bool {
	eth, err := frame.ParseEthernet(pkt[headroom:])
	if err != nil {
		v.stats.dropMalformed.Add(1) // not reached: outbound parsed it
		return false
	}
	return v.fw.Outbound(eth.Payload, r.member.Load()) == firewall.Accept
}

func (v *VPN) countOut(pkt []byte) {
	v.stats.framesOut.Add(1)
	v.stats.bytesOut.Add(uint64(len(pkt) - headroom))
}

// queueForSession holds pkt until a session to r is open, opening one.
func (v *VPN) queueForSession(r *remote, pkt []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) >= v.cfg.QueueLen {
		v.stats.dropQueueFull.Add(1)
		return
	}
	if !r.opening && time.Since(r.failedAt) < time.Second {
		v.stats.dropSendFailed.Add(1) // the last attempt just failed
		return
	}
	r.queue = append(r.queue, slices.Clone(pkt))
	if !r.opening {
		r.opening = true
		v.spawn(func() { v.open(r) })
	}
}

// open opens an end-to-end session to r over a routed pipe, then sends
// what waited for it.
func (v *VPN) open(r *remote) {
	ctx, cancel := context.WithTimeout(v.ctx, v.cfg.OpenTimeout)
	defer cancel()
	var l *security.Link
	var err error
	if _, linked := v.node.Linked(r.addr); !linked {
		l, err = v.pipes.Dial(ctx, r.addr, overlay.Address{})
	}
	if l != nil {
		// Adopted before the queue is taken: a packet arriving meanwhile
		// finds the session rather than opening another.
		v.stats.sessionsOpened.Add(1)
		v.adopt(r, l)
	}
	r.mu.Lock()
	queue := r.queue
	r.queue, r.opening = nil, false
	if err != nil {
		r.failedAt = time.Now()
	}
	r.mu.Unlock()
	if err != nil {
		v.stats.openFailed.Add(1)
		v.stats.dropSendFailed.Add(uint64(len(queue)))
		if v.ctx.Err() == nil {
			v.log.Info("no session to member", zap.Stringer("member", r.addr), zap.Error(err))
		}
		return
	}
	for _, pkt := range queue {
		// Straight to the link or session: not back into the queue.
		if v.node.SendData(r.addr, pkt) == nil {
			v.countOut(pkt)
			continue
		}
		if s := r.session.Load(); s != nil {
			pkt[0] = sessionFrame
			if s.Send(pkt) == nil {
				v.countOut(pkt)
				continue
			}
		}
		v.stats.dropSendFailed.Add(1)
	}
}

// adopt makes l (a session with r's member, opened by either side) r's
// session. A session replaced by a newer one (both sides opened one at
// once) keeps receiving until it idles out, so nothing in flight is lost.
func (v *VPN) adopt(r *remote, l *security.Link) {
	member := l.Peer()
	l.SetHandler(func(pkt []byte) {
		if len(pkt) < 1 || pkt[0] != sessionFrame {
			v.stats.dropMalformed.Add(1)
			return
		}
		v.receiveFrom(r, member, pkt[1:])
	})
	old := r.session.Swap(l)
	if old != nil && old != l {
		r.mu.Lock()
		prev := r.previous
		r.previous, r.previousUntil = old, time.Now().Add(sessionDrain)
		r.mu.Unlock()
		if prev != nil && prev != l {
			prev.Close() // at most one session drains: a peer can't pile them up
		}
	}
	v.spawn(func() {
		select {
		case <-l.Done():
			r.session.CompareAndSwap(l, nil)
		case <-v.ctx.Done():
			l.Close()
		}
	})
}

// acceptLoop takes the sessions other members open to us.
func (v *VPN) acceptLoop() {
	for {
		l, err := v.pipes.Accept(v.ctx)
		if err != nil {
			return
		}
		m := l.Peer()
		v.stats.sessionsAccepted.Add(1)
		v.mu.Lock()
		if v.closed {
			v.mu.Unlock()
			l.Close()
			return
		}
		r := v.remoteLocked(m.Address)
		v.mu.Unlock()
		v.adopt(r, l)
	}
}

// publishLoop publishes a signed record for each of our virtual IPs and
// renews them.
func (v *VPN) publishLoop() {
	for {
		wait := v.cfg.RecordTTL / 3
		if !v.publish() {
			wait = 2 * time.Second // the ring may not be there yet
		}
		select {
		case <-time.After(wait):
		case <-v.ctx.Done():
			return
		}
	}
}

// publish writes our records; false if any failed.
func (v *VPN) publish() bool {
	ok := true
	addr := v.node.Address()
	for _, p := range v.fixed {
		ip := p.Addr()
		rec, err := dht.Sign(v.id, NamespaceVIP, ip.String(), addr[:], time.Now().Add(v.cfg.RecordTTL))
		if err == nil {
			ctx, cancel := context.WithTimeout(v.ctx, v.cfg.ResolveTimeout)
			err = v.dht.CreateRecord(ctx, rec)
			cancel()
		}
		switch {
		case err == nil:
		case errors.Is(err, dht.ErrExists) && v.reclaim(ip):
		case errors.Is(err, dht.ErrExists):
			ok = false
			v.log.Error("another member claims our virtual IP; the group CA issued it twice", zap.Stringer("ip", ip), zap.Error(err))
		case errors.Is(err, dht.ErrTimeout) || errors.Is(err, dht.ErrNotFound) || errors.Is(err, dht.ErrClosed):
			ok = false
			if v.ctx.Err() == nil {
				v.log.Debug("virtual IP not published yet", zap.Stringer("ip", ip), zap.Error(err))
			}
		default:
			// Refused, too large, bad: retrying won't help by itself.
			ok = false
			v.log.Warn("virtual IP not published: other members can't reach this one by it", zap.Stringer("ip", ip), zap.Error(err))
		}
	}
	return ok
}

// houseLoop asks for shortcuts where traffic warrants one, releases idle
// ones, forgets idle members, and moves the firewall's clock.
func (v *VPN) houseLoop() {
	const tick = time.Second
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			v.housekeep(time.Now(), tick)
		case <-v.ctx.Done():
			return
		}
	}
}

func (v *VPN) housekeep(now time.Time, tick time.Duration) {
	// The firewall's clock: flows idle past their timeout are forgotten.
	v.fw.Sweep(now)
	v.mu.Lock()
	v.evictLocked(now)
	remotes := make([]*remote, 0, len(v.byAddr))
	shortcuts := 0
	for _, r := range v.byAddr {
		remotes = append(remotes, r)
		r.mu.Lock()
		if r.shortcut {
			shortcuts++
		}
		r.mu.Unlock()
	}
	v.mu.Unlock()
	perTick := max(1, uint64(v.cfg.ShortcutPackets)*uint64(tick)/uint64(time.Second))
	for _, r := range remotes {
		packets := r.sent.Swap(0) + r.heard.Swap(0)
		idle := now.Sub(time.Unix(0, r.lastActive.Load()))
		_, linked := v.node.Linked(r.addr)

		r.mu.Lock()
		ask, release := false, false
		switch {
		case !r.shortcut && v.cfg.ShortcutPackets > 0 && packets >= perTick && shortcuts < v.cfg.MaxShortcuts:
			r.shortcut, ask = true, true
			shortcuts++
		case r.shortcut && idle > v.cfg.ShortcutIdle:
			r.shortcut, release = false, true
		case r.shortcut && !linked && packets > 0:
			ask = true // keep asking until the link is there
		}
		var drained *security.Link
		if r.previous != nil && now.After(r.previousUntil) {
			drained, r.previous = r.previous, nil
		}
		r.mu.Unlock()

		if drained != nil {
			drained.Close()
		}
		switch {
		case ask:
			v.stats.shortcutsAsked.Add(1)
			v.log.Debug("asking for a shortcut", zap.Stringer("member", r.addr), zap.Uint64("packets", packets))
			v.node.Shortcut(r.addr)
		case release:
			v.node.DropShortcut(r.addr)
		}
		if l := r.session.Load(); l != nil && linked && idle > v.cfg.ShortcutIdle {
			// The direct link carries everything: the session can go.
			if r.session.CompareAndSwap(l, nil) {
				l.Close()
			}
		}
	}
}

// evictLocked keeps the tables within vpn.max_peers: expired negative
// entries go, then the mappings of the longest idle members; members no
// mapping names and idle past vpn.shortcut_idle are forgotten. v.mu held.
func (v *VPN) evictLocked(now time.Time) {
	for ip, m := range v.byIP {
		if m.remote == nil && !m.resolving && now.After(m.expires) {
			delete(v.byIP, ip)
		}
	}
	if over := len(v.byIP) - v.cfg.MaxPeers*9/10; over > 0 {
		type aged struct {
			ip  netip.Addr
			age time.Duration
		}
		all := make([]aged, 0, len(v.byIP))
		for ip, m := range v.byIP {
			if m.remote != nil && !m.resolving {
				all = append(all, aged{ip, now.Sub(time.Unix(0, m.remote.lastActive.Load()))})
			}
		}
		slices.SortFunc(all, func(a, b aged) int { return cmp.Compare(b.age, a.age) })
		for _, a := range all[:min(over, len(all))] {
			delete(v.byIP, a.ip)
		}
	}
	used := make(map[*remote]bool, len(v.byIP))
	for _, m := range v.byIP {
		used[m.remote] = true
	}
	for addr, r := range v.byAddr {
		if !used[r] && now.Sub(time.Unix(0, r.lastActive.Load())) > v.cfg.ShortcutIdle {
			delete(v.byAddr, addr)
			v.spawn(func() {
				r.mu.Lock()
				asked := r.shortcut
				r.mu.Unlock()
				if asked {
					v.node.DropShortcut(r.addr)
				}
				r.close()
			})
		}
	}
}
