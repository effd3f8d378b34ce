package revoke

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// Limits and periods that follow from the design rather than the
// configuration.
const (
	// inboxLen bounds the messages waiting for the Spreader's goroutine;
	// more are dropped (a list comes again by another way).
	inboxLen = 256
	// verifyRate bounds the signature checks per second (and their
	// burst): lists beyond it are dropped unchecked.
	verifyRate = 20
	// maxAssemblies bounds the lists being pieced together at once; a new
	// one evicts the least recently fed.
	maxAssemblies = 4
	// assemblyTimeout drops a list whose pieces stopped coming.
	assemblyTimeout = 30 * time.Second
	// seenLen is how many list hashes are remembered as taken or refused.
	seenLen = 1024
	// pushEvery: a list is pushed to one peer at most this often.
	pushEvery = 30 * time.Second
	// replyEvery: a digest is answered with ours at most this often per
	// peer.
	replyEvery = 10 * time.Second
	// peerPoll is how often new peers are looked for (they get a digest).
	peerPoll = time.Second
	// gossipDelay is the wait, drawn in [gossipDelay, 3*gossipDelay),
	// between a change of the lists and the digest to every peer: the
	// broadcast has usually done the work by then, so digests find their
	// peers up to date.
	gossipDelay = time.Second
	// fromNetFor is how long a list received from the network and being
	// added is known as such (not to be spread as a local one).
	fromNetFor = time.Minute
	// jobTimeout bounds one DHT check or write.
	jobTimeout = 2 * time.Minute
	// fetchParallel is how many chunk records are fetched at once.
	fetchParallel = 4
)

// Params are what a Spreader needs.
type Params struct {
	// Node is the ring member; the Spreader installs handlers for its
	// message types.
	Node *overlay.Node
	// Revocations are the lists the member applies: local ones are
	// spread, received ones are added to it.
	Revocations *security.Revocations
	// DHT, if not nil, keeps each CA's newest list for members that join
	// later; Identity signs the records written there (without one, the
	// member only reads them).
	DHT      *dht.DHT
	Identity *security.Identity
	Config   Config
	Log      *zap.Logger
}

// Spreader spreads a member's revocation lists and takes those of the
// others (see the package documentation). Create it with New; its
// methods are safe for concurrent use.
type Spreader struct {
	// immutable after New
	node     *overlay.Node
	revs     *security.Revocations
	dht      *dht.DHT
	id       *security.Identity
	cfg      Config
	log      *zap.Logger
	inbox    chan inbound
	changed  chan struct{}
	force    chan hash
	jobs     chan job
	closed   chan struct{}
	ctx      context.Context // ended by Close
	cancel   context.CancelFunc
	stopHook func()
	wg       sync.WaitGroup
	stats    counters

	// mu guards the following
	mu        sync.Mutex
	isClosed  bool
	seen      map[hash]bool // list hash -> taken (true) or refused
	seenOrder []hash        // ring of the keys of seen, oldest at seenNext
	seenNext  int
	fromNet   map[hash]arrival // lists being added from the network
	tokens    float64          // signature checks left
	tokensAt  time.Time
	lastWarn  time.Time

	// owned by the loop goroutine
	known    map[hash]bool // lists held at the last change
	asm      []*assembly
	spare    []byte // the buffer of an evicted assembly, for the next
	peers    map[overlay.Address]bool
	pushed   map[pushKey]time.Time
	replied  map[overlay.Address]time.Time
	checking bool // the periodic DHT checks have started
	rng      *rand.Rand
}

// arrival is when and how a list from the network came.
type arrival struct {
	at  time.Time
	via string // "broadcast", "peer" or "dht"
}

// inbound is a message handed from a handler to the loop.
type inbound struct {
	typ     overlay.Type
	from    overlay.Address // the neighbour that handed it over
	payload []byte          // a copy, owned by the loop
}

// assembly is a list being pieced together.
type assembly struct {
	hash    hash
	buf     []byte
	have    []bool
	left    int
	touched time.Time
	started time.Time
}

type pushKey struct {
	peer overlay.Address
	hash hash
}

// job is work for the DHT goroutine.
type job struct {
	check bool // read every CA's list (first: the first time; a repair is broadcast too)
	first bool
	put   *security.HeldList // write this list
}

// New starts a Spreader on p.Node, which may be started already or not
// yet. Lists p.Revocations holds already (from files, at start) are not
// broadcast: they are compared with the DHT's once the node is in the
// ring, and told to every new peer.
func New(p Params) (*Spreader, error) {
	if err := p.Config.Validate(); err != nil {
		return nil, err
	}
	if p.Node == nil || p.Revocations == nil {
		return nil, errors.New("revoke: a Spreader needs a node and revocations")
	}
	log := p.Log
	if log == nil {
		log = zap.NewNop()
	}
	self := p.Node.Address()
	s := &Spreader{
		node:    p.Node,
		revs:    p.Revocations,
		dht:     p.DHT,
		id:      p.Identity,
		cfg:     p.Config,
		log:     log.Named("revoke"),
		inbox:   make(chan inbound, inboxLen),
		changed: make(chan struct{}, 1),
		force:   make(chan hash, 4),
		jobs:    make(chan job, 16),
		closed:  make(chan struct{}),
		seen:    make(map[hash]bool),
		fromNet: make(map[hash]arrival),
		tokens:  verifyRate,
		known:   make(map[hash]bool),
		peers:   make(map[overlay.Address]bool),
		pushed:  make(map[pushKey]time.Time),
		replied: make(map[overlay.Address]time.Time),
		rng:     rand.New(rand.NewPCG(uint64(self[0])<<56|uint64(self[1])<<48|uint64(self[2])<<40, uint64(time.Now().UnixNano()))),
	}
	s.tokensAt = time.Now()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, h := range s.revs.Held() {
		s.known[hashOf(h.List)] = true
	}
	s.stopHook = s.revs.OnChange(func() {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	})
	for _, t := range []overlay.Type{TypeBroadcast, TypePiece, TypeDigest} {
		s.node.Handle(t, s.enqueue(t))
	}
	s.wg.Add(1)
	go s.loop()
	if s.dht != nil {
		s.wg.Add(1)
		go s.worker()
	}
	return s, nil
}

// Close removes the handlers and stops the Spreader's goroutines. The
// node, the DHT and the Revocations are not closed.
func (s *Spreader) Close() error {
	s.mu.Lock()
	if s.isClosed {
		s.mu.Unlock()
		return nil
	}
	s.isClosed = true
	s.mu.Unlock()
	s.stopHook()
	for _, t := range []overlay.Type{TypeBroadcast, TypePiece, TypeDigest} {
		s.node.Handle(t, nil)
	}
	close(s.closed)
	s.cancel()
	s.wg.Wait()
	return nil
}

// Publish adds one list (DER) to the member's Revocations and spreads it:
// over a ring broadcast, into the DHT and to the neighbours. A list held
// already is spread again. It returns whether the list is new here, and an
// error if Revocations refuse it (wrapping security.ErrStaleRevocationList
// for a list older than the one held, which is not spread) or if it is
// too large to spread (it is applied here all the same).
func (s *Spreader) Publish(der []byte) (bool, error) {
	changed, err := s.revs.Add(der)
	if err != nil {
		return false, err
	}
	if len(der) > MaxListSize {
		return changed, fmt.Errorf("revoke: the list is %d bytes; lists of up to %d bytes (about 1,000 entries) are spread: it is applied on this member only (start a new CA for more)", len(der), MaxListSize)
	}
	if !changed {
		// Held already (the same bytes): spread it again.
		select {
		case s.force <- hash(sha256.Sum256(der)):
		case <-s.closed:
		}
	}
	return changed, nil
}

// enqueue returns the handler of type t: it copies the message to the
// loop's inbox, or drops it when the inbox is full.
func (s *Spreader) enqueue(t overlay.Type) overlay.Handler {
	return func(m *overlay.Message) {
		if t != TypeBroadcast && m.From != m.Src {
			s.stats.dropped.Add(1) // pieces and digests come over one link
			return
		}
		select {
		case s.inbox <- inbound{typ: t, from: m.From, payload: bytes.Clone(m.Payload)}:
		default:
			s.stats.dropped.Add(1)
		}
	}
}

// goRun runs f on a goroutine the Spreader waits for, unless it is
// closed.
func (s *Spreader) goRun(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// loop serves the inbox, the changes of the lists and the timers.
func (s *Spreader) loop() {
	defer s.wg.Done()
	tick := time.NewTicker(peerPoll)
	defer tick.Stop()
	check := time.NewTimer(time.Hour)
	check.Stop()
	defer check.Stop()
	gossip := time.NewTimer(time.Hour)
	gossip.Stop()
	defer gossip.Stop()
	first := true
	for {
		select {
		case <-s.closed:
			return
		case in := <-s.inbox:
			s.handle(in)
		case <-s.changed:
			switch s.onChange() {
			case gossipSoon:
				gossip.Reset(time.Duration(s.rng.Int64N(int64(gossipSoonWithin))))
			case gossipLater:
				gossip.Reset(gossipDelay + time.Duration(s.rng.Int64N(int64(2*gossipDelay))))
			}
		case h := <-s.force:
			for _, held := range s.revs.Held() {
				if hashOf(held.List) == h {
					s.publish(held, true)
				}
			}
		case now := <-tick.C:
			s.pollPeers()
			s.expire(now)
			if !s.checking && s.dht != nil && s.node.InRing() {
				s.checking = true
				check.Reset(time.Duration(s.rng.Int64N(int64(2 * time.Second))))
			}
		case <-check.C:
			s.queue(job{check: true, first: first})
			first = false
			d := s.cfg.CheckInterval
			check.Reset(d*3/4 + time.Duration(s.rng.Int64N(int64(d/2)+1)))
		case <-gossip.C:
			s.gossip()
		}
	}
}

// handle serves one message.
func (s *Spreader) handle(in inbound) {
	switch in.typ {
	case TypeBroadcast, TypePiece:
		p, err := parsePiece(in.payload)
		if err != nil {
			s.stats.dropped.Add(1)
			return
		}
		via := "broadcast"
		if in.typ == TypePiece {
			via = "peer"
		}
		s.onPiece(p, via, in.from)
	case TypeDigest:
		d, err := parseDigest(in.payload)
		if err != nil {
			s.stats.dropped.Add(1)
			return
		}
		s.onDigest(d, in.from)
	}
}

// onPiece adds a piece to its list's assembly, and considers the list
// once it is whole.
func (s *Spreader) onPiece(p piece, via string, from overlay.Address) {
	if s.isSeen(p.Hash) {
		s.stats.duplicate.Add(1)
		return
	}
	if p.Total <= ChunkSize {
		s.whole(p.Hash, p.Chunk, via, from)
		return
	}
	now := time.Now()
	a := s.assembly(p, now)
	if a == nil {
		s.stats.dropped.Add(1)
		return
	}
	if a.have[p.Index] {
		s.stats.duplicate.Add(1)
		return
	}
	copy(a.buf[p.Index*ChunkSize:], p.Chunk)
	a.have[p.Index] = true
	a.left--
	a.touched = now
	if a.left > 0 {
		return
	}
	s.drop(a)
	s.whole(a.hash, a.buf, via, from)
	s.spare = a.buf
}

// whole considers a list whose pieces are all in: it must hash to its
// name.
func (s *Spreader) whole(h hash, der []byte, via string, from overlay.Address) {
	if sha256.Sum256(der) != h {
		s.stats.dropped.Add(1) // a forged piece spoiled it; it may come again
		return
	}
	s.consider(der, h, via, from)
}

// assembly returns the assembly of p's list, starting one if needed; nil
// if p does not match the one under way.
func (s *Spreader) assembly(p piece, now time.Time) *assembly {
	for _, a := range s.asm {
		if a.hash == p.Hash {
			if len(a.buf) != p.Total {
				return nil
			}
			return a
		}
	}
	if len(s.asm) >= maxAssemblies {
		oldest := s.asm[0]
		for _, a := range s.asm[1:] {
			if a.touched.Before(oldest.touched) {
				oldest = a
			}
		}
		s.drop(oldest)
		s.stats.dropped.Add(1)
		s.spare = oldest.buf
	}
	var buf []byte
	if cap(s.spare) >= p.Total {
		buf, s.spare = s.spare[:p.Total], nil
	} else {
		buf = make([]byte, p.Total)
	}
	n := chunks(p.Total)
	a := &assembly{hash: p.Hash, buf: buf, have: make([]bool, n), left: n, touched: now, started: now}
	s.asm = append(s.asm, a)
	return a
}

func (s *Spreader) drop(a *assembly) {
	for i, b := range s.asm {
		if b == a {
			s.asm = append(s.asm[:i], s.asm[i+1:]...)
			return
		}
	}
}

// expire drops assemblies that stalled and forgets old rate-limit state.
func (s *Spreader) expire(now time.Time) {
	for i := 0; i < len(s.asm); {
		if a := s.asm[i]; now.Sub(a.started) > assemblyTimeout {
			s.drop(a)
			s.stats.dropped.Add(1)
			continue
		}
		i++
	}
	for k, t := range s.pushed {
		if now.Sub(t) > pushEvery {
			delete(s.pushed, k)
		}
	}
	for k, t := range s.replied {
		if now.Sub(t) > replyEvery {
			delete(s.replied, k)
		}
	}
	s.mu.Lock()
	for k, a := range s.fromNet {
		if now.Sub(a.at) > fromNetFor {
			delete(s.fromNet, k)
		}
	}
	s.mu.Unlock()
}

// consider hands a whole list from the network to Revocations, unless
// its hash was seen, it is older than the list held for its CA, or the
// signature-check budget is spent. It is called from the loop and from
// the DHT goroutine.
func (s *Spreader) consider(der []byte, h hash, via string, from overlay.Address) {
	if s.isSeen(h) {
		s.stats.duplicate.Add(1)
		return
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		s.remember(h, false)
		s.stats.refused.Add(1)
		s.warn("revocation list refused", zap.String("via", via), zap.Stringer("from", from), zap.Error(err))
		return
	}
	if s.olderThanHeld(crl) {
		s.remember(h, false)
		s.stats.refused.Add(1)
		s.log.Debug("revocation list older than the one held; ignored", zap.String("via", via), zap.Stringer("from", from),
			zap.String("ca", crl.Issuer.CommonName), zap.Stringer("number", crl.Number))
		return
	}
	if !s.takeToken() {
		s.stats.dropped.Add(1)
		return
	}
	// Revocations keeps the list, whose Raw would alias der.
	der = bytes.Clone(der)
	s.mu.Lock()
	s.fromNet[h] = arrival{at: time.Now(), via: via}
	s.mu.Unlock()
	s.stats.checked.Add(1)
	changed, err := s.revs.Add(der)
	s.remember(h, err == nil)
	if !changed {
		s.mu.Lock()
		delete(s.fromNet, h)
		s.mu.Unlock()
	}
	switch {
	case changed:
		s.stats.received.Add(1)
		switch via {
		case "broadcast":
			s.stats.viaBroadcast.Add(1)
		case "peer":
			s.stats.viaPeer.Add(1)
		case "dht":
			s.stats.viaDHT.Add(1)
		}
		s.log.Info("revocation list received", zap.String("via", via), zap.Stringer("from", from),
			zap.String("ca", crl.Issuer.CommonName), zap.Stringer("number", crl.Number),
			zap.Int("revoked", len(crl.RevokedCertificateEntries)))
	case err == nil:
		s.stats.duplicate.Add(1)
	case errors.Is(err, security.ErrStaleRevocationList):
		s.stats.refused.Add(1)
		s.log.Debug("revocation list not taken", zap.String("via", via), zap.Stringer("from", from), zap.Error(err))
	default:
		s.stats.refused.Add(1)
		s.warn("revocation list refused", zap.String("via", via), zap.Stringer("from", from), zap.Error(err))
	}
}

// warn logs at most one warning every 10 seconds: refused lists may come
// in floods.
func (s *Spreader) warn(msg string, fields ...zap.Field) {
	now := time.Now()
	s.mu.Lock()
	ok := now.Sub(s.lastWarn) >= 10*time.Second
	if ok {
		s.lastWarn = now
	}
	s.mu.Unlock()
	if ok {
		s.log.Warn(msg, fields...)
	} else {
		s.log.Debug(msg, fields...)
	}
}

// olderThanHeld reports whether crl is older than the list held for
// every CA that could have signed it, so it can be refused without
// checking its signature.
func (s *Spreader) olderThanHeld(crl *x509.RevocationList) bool {
	b := s.revs.TrustBundle()
	if b == nil || crl.Number == nil {
		return false
	}
	held := s.revs.Held()
	named := false
	for _, ca := range b.CAs() {
		if !bytes.Equal(ca.RawSubject, crl.RawIssuer) {
			continue
		}
		named = true
		older := false
		for _, h := range held {
			if h.CA.Equal(ca) {
				older = crl.Number.Cmp(h.List.Number) < 0
			}
		}
		if !older {
			return false
		}
	}
	return named
}

// takeToken takes a signature check from the budget.
func (s *Spreader) takeToken() bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = min(verifyRate, s.tokens+now.Sub(s.tokensAt).Seconds()*verifyRate)
	s.tokensAt = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

func (s *Spreader) isSeen(h hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seen[h]
	return ok
}

// seenAs reports whether h was seen, and if so whether it was taken.
func (s *Spreader) seenAs(h hash) (seen, taken bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	taken, seen = s.seen[h]
	return seen, taken
}

// remember records that the list h was taken or refused.
func (s *Spreader) remember(h hash, taken bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[h]; ok {
		s.seen[h] = taken
		return
	}
	if len(s.seenOrder) < seenLen {
		s.seenOrder = append(s.seenOrder, h)
	} else {
		delete(s.seen, s.seenOrder[s.seenNext])
		s.seenOrder[s.seenNext] = h
		s.seenNext = (s.seenNext + 1) % seenLen
	}
	s.seen[h] = taken
}

// gossipWhen says when the neighbours hear of a change.
type gossipWhen int

const (
	gossipNone  gossipWhen = iota // nothing new
	gossipLater                   // after gossipDelay: the broadcast covered them
	gossipSoon                    // within gossipSoonWithin: the broadcast missed us
)

// gossipSoonWithin bounds the wait before the digest that follows a list
// that came from a neighbour or the DHT: the broadcast missed this part
// of the ring, so the neighbours probably lack it too.
const gossipSoonWithin = 100 * time.Millisecond

// onChange notes the lists held now and spreads those that came from a
// local source. It says when to tell the neighbours.
func (s *Spreader) onChange() gossipWhen {
	held := s.revs.Held()
	next := make(map[hash]bool, len(held))
	when := gossipNone
	for _, h := range held {
		k := hashOf(h.List)
		next[k] = true
		s.remember(k, true)
		if s.known[k] {
			continue
		}
		when = max(when, gossipLater)
		s.mu.Lock()
		a, remote := s.fromNet[k]
		delete(s.fromNet, k)
		s.mu.Unlock()
		switch {
		case !remote:
			s.publish(h, true)
		case a.via != "broadcast":
			when = gossipSoon
		}
	}
	s.known = next
	return when
}

// publish spreads a list held: a ring broadcast (if bcast) and a DHT
// write; the neighbours hear of it by gossip.
func (s *Spreader) publish(h security.HeldList, bcast bool) {
	raw := h.List.Raw
	if len(raw) > MaxListSize {
		s.log.Warn("revocation list too large to spread; applied on this member only", zap.String("ca", h.CA.Subject.CommonName),
			zap.Stringer("number", h.List.Number), zap.Int("bytes", len(raw)), zap.Int("limit", MaxListSize))
		return
	}
	s.stats.published.Add(1)
	s.log.Info("spreading revocation list", zap.String("ca", h.CA.Subject.CommonName), zap.Stringer("number", h.List.Number),
		zap.Int("revoked", len(h.List.RevokedCertificateEntries)), zap.Int("bytes", len(raw)), zap.Bool("broadcast", bcast))
	if bcast {
		s.goRun(func() { s.broadcast(raw) })
	}
	s.queue(job{put: &h})
}

// broadcast sends the pieces of a list over the ring, waiting out the
// ring's broadcast rate limit if a long list meets it.
func (s *Spreader) broadcast(list []byte) {
	for _, p := range pieces(list) {
		for try := 0; ; try++ {
			err := s.node.Broadcast(TypeBroadcast, p)
			if !errors.Is(err, overlay.ErrBroadcastLimited) || try >= 50 {
				if err != nil {
					s.log.Debug("revocation broadcast not sent", zap.Error(err))
				}
				break
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-s.closed:
				return
			}
		}
	}
}

// queue hands a job to the DHT goroutine; a job that does not fit is
// dropped (the next check does its work).
func (s *Spreader) queue(j job) {
	if s.dht == nil {
		return
	}
	select {
	case s.jobs <- j:
	default:
		s.stats.dhtErrors.Add(1)
	}
}

// myDigest is the digest of the lists held.
func (s *Spreader) myDigest(reply bool) digest {
	d := digest{Reply: reply}
	for _, h := range s.revs.Held() {
		if len(d.Entries) == MaxDigestEntries {
			break
		}
		d.Entries = append(d.Entries, entry{CA: caIDOf(h.CA), Number: number(h.List), Hash: hashOf(h.List)})
	}
	return d
}

// pollPeers sends a digest to each peer linked since the last poll.
func (s *Spreader) pollPeers() {
	peers := s.node.Peers()
	next := make(map[overlay.Address]bool, len(peers))
	var msg []byte
	for _, p := range peers {
		next[p] = true
		if s.peers[p] {
			continue
		}
		if msg == nil {
			d := s.myDigest(false)
			msg = d.append(nil)
		}
		s.node.SendTo(p, TypeDigest, msg)
	}
	s.peers = next
}

// gossip sends a digest to every peer.
func (s *Spreader) gossip() {
	d := s.myDigest(false)
	msg := d.append(nil)
	for _, p := range s.node.Peers() {
		s.node.SendTo(p, TypeDigest, msg)
	}
}

// onDigest pushes to a peer the lists it lacks or holds older, and
// answers with our digest if the peer holds newer ones.
func (s *Spreader) onDigest(d digest, from overlay.Address) {
	now := time.Now()
	held := s.revs.Held()
	mine := make(map[caID]entry, len(held))
	for _, h := range held {
		e := entry{CA: caIDOf(h.CA), Number: number(h.List), Hash: hashOf(h.List)}
		mine[e.CA] = e
		t := d.find(e.CA)
		if t == nil || t.Number < e.Number || (t.Number == e.Number && t.Hash != e.Hash) {
			s.push(from, h.List.Raw, e.Hash, now)
		}
	}
	if d.Reply || now.Sub(s.replied[from]) < replyEvery {
		return
	}
	b := s.revs.TrustBundle()
	if b == nil {
		return
	}
	trusted := make(map[caID]bool)
	for _, ca := range b.CAs() {
		trusted[caIDOf(ca)] = true
	}
	for _, t := range d.Entries {
		if !trusted[t.CA] {
			continue
		}
		o, ok := mine[t.CA]
		if seen, _ := s.seenAs(t.Hash); seen {
			continue
		}
		if !ok || o.Number < t.Number || (o.Number == t.Number && o.Hash != t.Hash) {
			s.replied[from] = now
			r := s.myDigest(true)
			s.node.SendTo(from, TypeDigest, r.append(nil))
			return
		}
	}
}

// push sends a list's pieces to a peer, at most once per pushEvery.
func (s *Spreader) push(to overlay.Address, list []byte, h hash, now time.Time) {
	if len(list) > MaxListSize {
		return
	}
	k := pushKey{to, h}
	if t, ok := s.pushed[k]; ok && now.Sub(t) < pushEvery {
		return
	}
	s.pushed[k] = now
	s.stats.pushed.Add(1)
	for _, p := range pieces(list) {
		if err := s.node.SendTo(to, TypePiece, p); err != nil {
			return
		}
	}
}

func hashOf(crl *x509.RevocationList) hash { return sha256.Sum256(crl.Raw) }

// counters are the Spreader's statistics.
type counters struct {
	received, refused, duplicate, dropped, checked, published, pushed atomic.Uint64
	checks, dhtStored, dhtFetched, dhtErrors                          atomic.Uint64
	viaBroadcast, viaPeer, viaDHT                                     atomic.Uint64
}
