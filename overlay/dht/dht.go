package dht

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
)

// Tuning that follows from Config rather than being part of it.
const (
	// inboxLen bounds the messages waiting for the worker; more are
	// dropped and counted (the requester retries, the next republish
	// round repeats a push).
	inboxLen = 1024
	// maxPending bounds the owner-side fetches under way; beyond it an
	// owner answers from its own store.
	maxPending = 256
	// handoffRounds is the grace period of a node that is no longer a
	// replica of an item: it pushes the item to the replica set for this
	// many republish rounds, then drops its copy.
	handoffRounds = 3
	// maxSkew is how far the writer's clock may run ahead of the storing
	// node's: an expiry up to max_ttl plus this from now is accepted.
	maxSkew = time.Minute
)

// DHT is the replicated key/value store on one ring node. Create it with
// New; its methods are safe for concurrent use.
type DHT struct {
	// immutable after New
	node      *overlay.Node
	self      overlay.Address
	cfg       Config
	verify    Verifier
	plainOK   bool // no Verifier was given: plain values are accepted
	fetchWait time.Duration
	log       *zap.Logger
	store     *store
	inbox     chan inbound
	closed    chan struct{}
	wg        sync.WaitGroup
	stats     counters

	// mu guards the following
	mu       sync.Mutex
	isClosed bool
	waiting  map[uint64]chan reply // client requests awaiting their reply
	rng      *rand.Rand
	nextID   uint64

	// owned by the worker goroutine
	pending map[uint64]*ownerOp
	fetchID uint64
	timer   *time.Timer
	armed   bool
}

// inbound is a message handed from a handler to the worker.
type inbound struct {
	typ     overlay.Type
	src     overlay.Address
	payload []byte // a copy, owned by the worker
}

// reply is a TypeReply delivered to a waiting request.
type reply struct {
	msg  message
	from overlay.Address
}

// ownerOp is a get or create at an owner that lacks the key: it asked its
// closest peers for their copy and waits for their answers.
type ownerOp struct {
	src      overlay.Address // the requester
	req      message
	asked    int
	answers  []*item
	deadline time.Time
}

// New starts a DHT on node and installs its handlers; node may be started
// already or not yet. verify checks signed records; nil (simulations)
// accepts plain values too and checks records without a trust bundle.
// There must be one DHT per node, and it must be closed with its node: it
// does not notice the node closing (its requests then fail with
// ErrClosed).
func New(node *overlay.Node, cfg Config, verify Verifier, log *zap.Logger) (*DHT, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if node == nil {
		return nil, errors.New("dht: no node")
	}
	if v, ok := verify.(*recordVerifier); ok && v.bundle == nil {
		return nil, errors.New("dht: VerifyWith needs a trust bundle (pass a nil Verifier to run without one)")
	}
	if log == nil {
		log = zap.NewNop()
	}
	self := node.Address()
	d := &DHT{
		node:      node,
		self:      self,
		cfg:       cfg,
		verify:    verify,
		fetchWait: cfg.RequestTimeout / 4,
		log:       log.Named("dht"),
		store:     newStore(cfg.MaxItems),
		inbox:     make(chan inbound, inboxLen),
		closed:    make(chan struct{}),
		waiting:   make(map[uint64]chan reply),
		rng:       rand.New(rand.NewPCG(binary.BigEndian.Uint64(self[:8]), uint64(time.Now().UnixNano()))),
		pending:   make(map[uint64]*ownerOp),
		timer:     time.NewTimer(time.Hour),
	}
	d.timer.Stop()
	if verify == nil {
		d.verify = &recordVerifier{claims: map[string]bool{NamespaceNode: true}}
		d.plainOK = true
	}
	for _, t := range []overlay.Type{TypeRequest, TypePush, TypeFetch, TypeFetchReply} {
		node.Handle(t, d.enqueue(t))
	}
	node.Handle(TypeReply, d.onReply)
	d.wg.Add(2)
	go d.work()
	go d.republishLoop()
	return d, nil
}

// Close removes the handlers and stops the DHT's goroutines; requests
// under way fail with ErrClosed. The node is not closed.
func (d *DHT) Close() error {
	d.mu.Lock()
	if d.isClosed {
		d.mu.Unlock()
		return nil
	}
	d.isClosed = true
	d.mu.Unlock()
	for _, t := range []overlay.Type{TypeRequest, TypeReply, TypePush, TypeFetch, TypeFetchReply} {
		d.node.Handle(t, nil)
	}
	close(d.closed)
	d.wg.Wait()
	return nil
}

// enqueue returns the handler of type t: it copies the message to the
// worker's inbox, or drops it when the inbox is full. Handlers run on
// link readers and must not block.
func (d *DHT) enqueue(t overlay.Type) overlay.Handler {
	return func(m *overlay.Message) {
		in := inbound{typ: t, src: m.Src, payload: bytes.Clone(m.Payload)}
		select {
		case d.inbox <- in:
		default:
			d.stats.dropped.Add(1)
		}
	}
}

// Put stores value under key for ttl (at most dht.max_ttl), replacing
// what is there: the newest write wins.
func (d *DHT) Put(ctx context.Context, key overlay.Address, value []byte, ttl time.Duration) error {
	it, err := d.plainItem(opPut, key, value, ttl)
	if err != nil {
		return err
	}
	return d.write(ctx, opPut, key, it)
}

// Create stores value under key for ttl if no live value is there;
// otherwise it returns an error wrapping ErrExists and the stored value
// is unchanged.
func (d *DHT) Create(ctx context.Context, key overlay.Address, value []byte, ttl time.Duration) error {
	it, err := d.plainItem(opCreate, key, value, ttl)
	if err != nil {
		return err
	}
	return d.write(ctx, opCreate, key, it)
}

// PutRecord stores rec under its key (KeyOf(rec.Namespace, rec.Name))
// until rec.Expires, which must be within dht.max_ttl. The record is
// verified here and again by the storing node; a bad record is refused
// with an error wrapping ErrBadRecord.
func (d *DHT) PutRecord(ctx context.Context, rec *SignedRecord) error {
	return d.putRecord(ctx, opPut, rec)
}

// CreateRecord is PutRecord if no live value is under the record's key;
// a live record of the same signer is renewed; anything else is left as
// it is, with an error wrapping ErrExists.
func (d *DHT) CreateRecord(ctx context.Context, rec *SignedRecord) error {
	return d.putRecord(ctx, opCreate, rec)
}

func (d *DHT) putRecord(ctx context.Context, o op, rec *SignedRecord) error {
	if rec == nil {
		return errorf(one(ErrBadRequest), "dht: %s: no record", o)
	}
	key := rec.Key()
	it, err := d.recordItem(o, key, rec)
	if err != nil {
		return err
	}
	return d.write(ctx, o, key, it)
}

// Get returns the live value under key: the plain value, or the encoded
// SignedRecord (verified; ParseRecord decodes it). Without one it returns
// an error wrapping ErrNotFound.
func (d *DHT) Get(ctx context.Context, key overlay.Address) ([]byte, error) {
	it, _, err := d.get(ctx, key)
	if err != nil {
		return nil, err
	}
	return it.Data, nil
}

// GetRecord returns the verified record stored under namespace/name.
func (d *DHT) GetRecord(ctx context.Context, namespace, name string) (*SignedRecord, error) {
	key := KeyOf(namespace, name)
	_, rec, err := d.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errorf(one(ErrBadRecord), "dht: get %s (%s/%s): the value is not a signed record", key, namespace, name)
	}
	return rec, nil
}

// Holds reports whether this node stores a live value under key, as
// owner or replica (for status and tests).
func (d *DHT) Holds(key overlay.Address) bool {
	return d.store.get(key, time.Now().UnixNano()) != nil
}

// newVersion returns the version of a write made now.
func (d *DHT) newVersion(now time.Time) version {
	d.mu.Lock()
	defer d.mu.Unlock()
	return version{Time: uint64(now.UnixNano()), Tie: d.rng.Uint64()}
}

func (d *DHT) plainItem(o op, key overlay.Address, value []byte, ttl time.Duration) (*item, error) {
	if !d.plainOK {
		return nil, errorf(one(ErrUnsigned), "dht: %s %s: this DHT stores only signed records; use %sRecord", o, key, map[op]string{opPut: "Put", opCreate: "Create"}[o])
	}
	if len(value) > d.cfg.MaxValueSize {
		return nil, errorf(one(ErrTooLarge), "dht: %s %s: value of %d bytes exceeds dht.max_value_size (%d)", o, key, len(value), d.cfg.MaxValueSize)
	}
	if ttl <= 0 || ttl > d.cfg.MaxTTL {
		return nil, errorf(one(ErrBadRequest), "dht: %s %s: ttl %v not in (0, dht.max_ttl = %v]", o, key, ttl, d.cfg.MaxTTL)
	}
	now := time.Now()
	return &item{Kind: kindPlain, Version: d.newVersion(now), Expires: now.Add(ttl).UnixNano(), Data: slices.Clone(value)}, nil
}

func (d *DHT) recordItem(o op, key overlay.Address, rec *SignedRecord) (*item, error) {
	data, err := rec.MarshalBinary()
	if err != nil {
		return nil, errorf(one(ErrBadRecord), "dht: %s %s: %w", o, key, err)
	}
	if len(rec.Value) > d.cfg.MaxValueSize {
		return nil, errorf(one(ErrTooLarge), "dht: %s %s: record value of %d bytes exceeds dht.max_value_size (%d)", o, key, len(rec.Value), d.cfg.MaxValueSize)
	}
	now := time.Now()
	if ttl := rec.Expires.Sub(now); ttl > d.cfg.MaxTTL {
		return nil, errorf(one(ErrBadRequest), "dht: %s %s: record expires in %v, beyond dht.max_ttl (%v)", o, key, ttl.Round(time.Second), d.cfg.MaxTTL)
	}
	if _, err := d.verify.Verify(key, rec, now); err != nil {
		d.stats.refused.Add(1)
		return nil, fmt.Errorf("dht: %s %s: %w", o, key, err)
	}
	return &item{Kind: kindRecord, Version: d.newVersion(now), Expires: rec.Expires.UnixNano(), Data: data}, nil
}

// write sends a put or create to the owner of key and maps its answer to
// an error.
func (d *DHT) write(ctx context.Context, o op, key overlay.Address, it *item) error {
	r, err := d.call(ctx, o, key, it)
	if err != nil {
		return err
	}
	return replyError(o, key, r)
}

// get asks the owner of key and checks what it returns.
func (d *DHT) get(ctx context.Context, key overlay.Address) (*item, *SignedRecord, error) {
	r, err := d.call(ctx, opGet, key, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := replyError(opGet, key, r); err != nil {
		return nil, nil, err
	}
	it := r.msg.Item
	if it == nil {
		return nil, nil, errorf(one(ErrMalformed), "dht: get %s: %s answered without a value", key, r.from)
	}
	now := time.Now()
	if it.Expires <= now.UnixNano() {
		return nil, nil, errorf(one(ErrNotFound), "dht: get %s: not found (the value %s returned has expired)", key, r.from)
	}
	switch it.Kind {
	case kindRecord:
		rec, err := ParseRecord(it.Data)
		if err == nil {
			_, err = d.verify.Verify(key, rec, now)
		}
		if err != nil {
			d.stats.refused.Add(1)
			return nil, nil, errorf(one(ErrBadRecord), "dht: get %s: %s returned a bad record: %w", key, r.from, err)
		}
		return it, rec, nil
	default:
		if !d.plainOK {
			d.stats.refused.Add(1)
			return nil, nil, errorf(one(ErrUnsigned), "dht: get %s: %s returned a plain value; only signed records are accepted", key, r.from)
		}
		if len(it.Data) > d.cfg.MaxValueSize {
			return nil, nil, errorf(one(ErrTooLarge), "dht: get %s: %s returned %d bytes, more than dht.max_value_size (%d)", key, r.from, len(it.Data), d.cfg.MaxValueSize)
		}
		return it, nil, nil
	}
}

// replyError maps a reply's status to an error.
func replyError(o op, key overlay.Address, r reply) error {
	switch r.msg.Status {
	case statusOK:
		return nil
	case statusNotFound:
		return errorf(one(ErrNotFound), "dht: %s %s: not found (owner %s)", o, key, r.from)
	case statusExists:
		return errorf(one(ErrExists), "dht: %s %s: a live value is already stored (owner %s): %s", o, key, r.from, r.msg.Text)
	default:
		text := r.msg.Text
		if text == "" {
			text = "no reason given"
		}
		return errorf(r.msg.Status.sentinels(), "dht: %s %s: refused by %s: %s", o, key, r.from, text)
	}
}

// call routes a request to the node closest to key and waits for its
// reply, retrying after each request_timeout. Every attempt carries the
// same ID and the same version, so a retry of a write that did land is
// recognised as the same write.
func (d *DHT) call(ctx context.Context, o op, key overlay.Address, it *item) (reply, error) {
	ch := make(chan reply, 1)
	d.mu.Lock()
	if d.isClosed {
		d.mu.Unlock()
		return reply{}, ErrClosed
	}
	d.nextID++
	id := d.nextID<<20 | uint64(d.rng.Uint32()&0xfffff)
	d.waiting[id] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.waiting, id)
		d.mu.Unlock()
	}()
	req := message{Op: o, ID: id, Key: key, Item: it}
	attempts := 1 + d.cfg.Retries
	t := time.NewTimer(d.cfg.RequestTimeout)
	defer t.Stop()
	for a := range attempts {
		if a > 0 {
			d.stats.retries.Add(1)
			t.Reset(d.cfg.RequestTimeout)
		}
		req.Via = d.replyVia(key)
		if err := d.node.Route(key, overlay.FlagClosest, TypeRequest, req.append(nil)); err != nil {
			if errors.Is(err, overlay.ErrClosed) {
				return reply{}, fmt.Errorf("dht: %s %s: %w", o, key, ErrClosed)
			}
			d.log.Debug("request not sent", zap.Stringer("key", key), zap.Error(err))
		}
		for timedOut := false; !timedOut; {
			select {
			case r := <-ch:
				if r.msg.Op != o || r.msg.Key != key {
					d.stats.malformed.Add(1)
					continue // not an answer to this request
				}
				return r, nil
			case <-t.C:
				timedOut = true
			case <-ctx.Done():
				return reply{}, fmt.Errorf("dht: %s %s: %w", o, key, ctx.Err())
			case <-d.closed:
				return reply{}, fmt.Errorf("dht: %s %s: %w", o, key, ErrClosed)
			}
		}
	}
	return reply{}, errorf(one(ErrTimeout), "dht: %s %s: no answer after %d attempts of %v", o, key, attempts, d.cfg.RequestTimeout)
}

// replyVia names the neighbour a request to key leaves through, so the
// reply can come back through it even while this node's place in the
// ring is not yet right.
func (d *DHT) replyVia(key overlay.Address) overlay.Address {
	return d.node.ReplyVia(key)
}

// onReply hands a reply to the request waiting for it. It runs on a link
// reader (or on the worker, for replies to this node's own requests).
func (d *DHT) onReply(m *overlay.Message) {
	r, err := parseMessage(m.Payload)
	if err != nil {
		d.stats.malformed.Add(1)
		return
	}
	d.mu.Lock()
	ch := d.waiting[r.ID]
	d.mu.Unlock()
	if ch == nil {
		return // a late answer to a request that gave up or succeeded
	}
	select {
	case ch <- reply{msg: r, from: m.Src}:
	default:
	}
}

// work is the worker: it serves requests, pushes and fetches one at a
// time, so handlers never wait for verification or storage.
func (d *DHT) work() {
	defer d.wg.Done()
	defer d.timer.Stop()
	for {
		var expire <-chan time.Time
		if d.armed {
			expire = d.timer.C
		}
		select {
		case <-d.closed:
			return
		case in := <-d.inbox:
			d.handle(in)
		case <-expire:
			d.armed = false
			d.expireOps(time.Now())
		}
	}
}

func (d *DHT) handle(in inbound) {
	switch in.typ {
	case TypeRequest:
		d.onRequest(in)
	case TypePush:
		d.onPush(in)
	case TypeFetch:
		d.onFetch(in)
	case TypeFetchReply:
		d.onFetchReply(in)
	}
}

// onRequest serves a put, create or get routed to this node as the owner
// of its key.
func (d *DHT) onRequest(in inbound) {
	m, err := parseMessage(in.payload)
	if err != nil || m.Status != statusOK {
		d.stats.malformed.Add(1)
		return
	}
	now := time.Now()
	switch m.Op {
	case opGet:
		d.stats.gets.Add(1)
		if it := d.store.get(m.Key, now.UnixNano()); it != nil {
			d.stats.hits.Add(1)
			d.respond(in.src, &m, statusOK, it, "")
			return
		}
		d.startFetch(in.src, m, now)
	case opPut, opCreate:
		d.stats.puts.Add(1)
		if m.Item == nil {
			d.stats.malformed.Add(1)
			return
		}
		if st, why := d.admit(m.Key, m.Item, now); st != statusOK {
			d.refuse(in.src, &m, st, why)
			return
		}
		if m.Op == opCreate && d.store.get(m.Key, now.UnixNano()) == nil {
			d.startFetch(in.src, m, now) // a new owner may not have the key yet
			return
		}
		d.finishWrite(in.src, &m, now)
	}
}

// refuse answers a write with why it was refused, and counts it.
func (d *DHT) refuse(src overlay.Address, m *message, st status, why string) {
	d.stats.refused.Add(1)
	if ce := d.log.Check(zap.DebugLevel, "value refused"); ce != nil {
		ce.Write(zap.Stringer("key", m.Key), zap.Stringer("peer", src), zap.String("error", why))
	}
	d.respond(src, m, st, nil, why)
}

// admit checks an item offered under key (by a writer, a push or a
// fetch) and, for a record, notes its signer. It returns statusOK or why
// the item is refused.
func (d *DHT) admit(key overlay.Address, it *item, now time.Time) (status, string) {
	if it.Expires <= now.UnixNano() {
		return statusBadRequest, fmt.Sprintf("the value expired at %s", time.Unix(0, it.Expires).UTC().Format(time.RFC3339Nano))
	}
	if ttl := time.Duration(it.Expires - now.UnixNano()); ttl > d.cfg.MaxTTL+maxSkew {
		return statusBadRequest, fmt.Sprintf("the value expires in %v, beyond dht.max_ttl (%v) of %s", ttl.Round(time.Second), d.cfg.MaxTTL, d.self)
	}
	switch it.Kind {
	case kindPlain:
		if !d.plainOK {
			return statusUnsigned, fmt.Sprintf("%s stores only signed records", d.self)
		}
		if len(it.Data) > d.cfg.MaxValueSize {
			return statusTooLarge, fmt.Sprintf("value of %d bytes exceeds dht.max_value_size (%d) of %s", len(it.Data), d.cfg.MaxValueSize, d.self)
		}
	case kindRecord:
		rec, err := ParseRecord(it.Data)
		if err != nil {
			return statusBadRecord, err.Error()
		}
		if len(rec.Value) > d.cfg.MaxValueSize {
			return statusTooLarge, fmt.Sprintf("record value of %d bytes exceeds dht.max_value_size (%d) of %s", len(rec.Value), d.cfg.MaxValueSize, d.self)
		}
		if rec.Expires.UnixNano() != it.Expires {
			return statusBadRecord, fmt.Sprintf("record %s: the stored expiry differs from the signed one", rec.label())
		}
		m, err := d.verify.Verify(key, rec, now)
		if err != nil {
			return statusBadRecord, err.Error()
		}
		it.signer = m.Address
	default:
		return statusBadRequest, "unknown kind of value"
	}
	return statusOK, ""
}

// finishWrite stores an admitted put or create, replicates it and
// answers the writer.
func (d *DHT) finishWrite(src overlay.Address, m *message, now time.Time) {
	out, cur := d.store.apply(m.Key, m.Item, m.Op == opCreate, now.UnixNano())
	switch out {
	case stored:
		d.replicate(m.Key, m.Item)
		d.respond(src, m, statusOK, nil, "")
	case unchanged:
		d.respond(src, m, statusOK, nil, "")
	case exists:
		d.stats.conflicts.Add(1)
		d.respond(src, m, statusExists, nil, fmt.Sprintf("written %s, expires %s",
			time.Unix(0, int64(cur.Version.Time)).UTC().Format(time.RFC3339Nano),
			time.Unix(0, cur.Expires).UTC().Format(time.RFC3339Nano)))
	case full:
		d.refuse(src, m, statusFull, fmt.Sprintf("%s holds dht.max_items (%d) values", d.self, d.cfg.MaxItems))
	}
}

// respond routes a reply to the requester, exact, through its via if it
// named one.
func (d *DHT) respond(dst overlay.Address, req *message, st status, it *item, text string) {
	r := message{Op: req.Op, Status: st, ID: req.ID, Key: req.Key, Item: it, Text: text}
	h := overlay.Header{Type: TypeReply, Dst: dst}
	if !req.Via.IsZero() {
		h.Flags |= overlay.FlagVia
		h.Via = req.Via
	}
	d.node.Send(h, r.append(nil))
}

// replicate pushes a newly stored item to the other members of its
// replica set.
func (d *DHT) replicate(key overlay.Address, it *item) {
	set := replicaSet(nil, d.self, d.node.ClosestPeers(key, d.cfg.Replicas), key, d.cfg.Replicas)
	for _, a := range set {
		if a == d.self {
			continue
		}
		b := d.pusher(a)
		b.add(entry{Key: key, Item: it})
		b.flush()
	}
}

// startFetch asks the owner's closest peers for key before a get or
// create is answered: right after churn the owner may be new and not
// have the key yet, while its neighbours, the replicas, have it.
func (d *DHT) startFetch(src overlay.Address, req message, now time.Time) {
	op := &ownerOp{src: src, req: req, deadline: now.Add(d.fetchWait)}
	if len(d.pending) >= maxPending {
		d.finishOp(op, now)
		return
	}
	d.fetchID++
	id := d.fetchID
	q := (&message{Op: opGet, ID: id, Key: req.Key}).append(nil)
	for _, p := range d.node.ClosestPeers(req.Key, d.cfg.Replicas) {
		if d.node.SendTo(p, TypeFetch, q) == nil {
			op.asked++
		}
	}
	if op.asked == 0 {
		d.finishOp(op, now)
		return
	}
	d.pending[id] = op
	if !d.armed {
		d.timer.Reset(d.fetchWait)
		d.armed = true
	}
}

// onFetch answers a neighbour's fetch with this node's copy, one hop.
func (d *DHT) onFetch(in inbound) {
	m, err := parseMessage(in.payload)
	if err != nil || m.Op != opGet || m.Item != nil {
		d.stats.malformed.Add(1)
		return
	}
	r := message{Op: opGet, Status: statusNotFound, ID: m.ID, Key: m.Key}
	if it := d.store.get(m.Key, time.Now().UnixNano()); it != nil {
		r.Status, r.Item = statusOK, it
	}
	d.node.SendTo(in.src, TypeFetchReply, r.append(nil))
}

// onFetchReply collects a neighbour's answer to a fetch.
func (d *DHT) onFetchReply(in inbound) {
	m, err := parseMessage(in.payload)
	if err != nil || m.Op != opGet {
		d.stats.malformed.Add(1)
		return
	}
	op := d.pending[m.ID]
	if op == nil || op.req.Key != m.Key {
		return // late, or not ours
	}
	if m.Status == statusOK && m.Item != nil {
		op.answers = append(op.answers, m.Item)
	}
	op.asked--
	if op.asked == 0 {
		delete(d.pending, m.ID)
		d.finishOp(op, time.Now())
	}
}

// expireOps finishes the fetches whose neighbours did not all answer in
// time, and re-arms the timer for the rest.
func (d *DHT) expireOps(now time.Time) {
	var next time.Time
	for id, op := range d.pending {
		if !now.Before(op.deadline) {
			delete(d.pending, id)
			d.finishOp(op, now)
			continue
		}
		if next.IsZero() || op.deadline.Before(next) {
			next = op.deadline
		}
	}
	if !next.IsZero() {
		d.timer.Reset(next.Sub(now))
		d.armed = true
	}
}

// finishOp takes the newest copy the neighbours returned that passes the
// checks, stores it, and serves the waiting get or create.
func (d *DHT) finishOp(op *ownerOp, now time.Time) {
	slices.SortFunc(op.answers, func(a, b *item) int { return b.Version.Compare(a.Version) })
	for _, it := range op.answers {
		if st, _ := d.admit(op.req.Key, it, now); st != statusOK {
			d.stats.refused.Add(1)
			continue
		}
		if out, _ := d.store.apply(op.req.Key, it, false, now.UnixNano()); out == stored {
			d.stats.recovered.Add(1)
		}
		break
	}
	switch op.req.Op {
	case opGet:
		if it := d.store.get(op.req.Key, now.UnixNano()); it != nil {
			d.stats.hits.Add(1)
			d.respond(op.src, &op.req, statusOK, it, "")
			return
		}
		d.stats.misses.Add(1)
		d.respond(op.src, &op.req, statusNotFound, nil, "")
	default:
		d.finishWrite(op.src, &op.req, now)
	}
}

// onPush stores the items a neighbour pushed, newest version winning.
// Items this node already has are skipped without verifying them again.
func (d *DHT) onPush(in inbound) {
	p, err := parsePush(in.payload)
	if err != nil {
		d.stats.malformed.Add(1)
		return
	}
	now := time.Now()
	for _, e := range p.Entries {
		if !d.store.needs(e.Key, e.Item.Version, now.UnixNano()) {
			continue
		}
		if st, why := d.admit(e.Key, e.Item, now); st != statusOK {
			d.stats.refused.Add(1)
			if ce := d.log.Check(zap.DebugLevel, "pushed value refused"); ce != nil {
				ce.Write(zap.Stringer("key", e.Key), zap.Stringer("peer", in.src), zap.String("error", why))
			}
			continue
		}
		switch out, _ := d.store.apply(e.Key, e.Item, false, now.UnixNano()); out {
		case stored:
			d.stats.replicated.Add(1)
		case full:
			d.stats.refused.Add(1)
		}
	}
}

// batcher packs items for one neighbour into push messages of at most
// maxPushLen bytes.
type batcher struct {
	send func(pkt []byte, n int) // sends a push of n items; pkt is reused after
	buf  []byte
	n    int
}

// pusher returns a batcher whose pushes go one hop to the peer to.
func (d *DHT) pusher(to overlay.Address) *batcher {
	return &batcher{send: func(pkt []byte, n int) {
		if d.node.SendTo(to, TypePush, pkt) == nil {
			d.stats.pushed.Add(uint64(n))
		}
	}}
}

func (b *batcher) add(e entry) {
	if b.n > 0 && (len(b.buf)+len(e.Key)+e.Item.len() > maxPushLen || b.n == maxPushEntries) {
		b.flush()
	}
	if b.n == 0 {
		b.buf = append(b.buf[:0], WireVersion, 0, 0)
	}
	b.buf = append(b.buf, e.Key[:]...)
	b.buf = e.Item.append(b.buf)
	b.n++
}

func (b *batcher) flush() {
	if b.n == 0 {
		return
	}
	binary.BigEndian.PutUint16(b.buf[1:pushHeaderLen], uint16(b.n))
	b.send(b.buf, b.n)
	b.n = 0
}

// counters are the DHT's statistics.
type counters struct {
	puts, gets, hits, misses, conflicts, refused, replicated, pushed, recovered,
	handedOff, expired, retries, dropped, malformed atomic.Uint64
}

// Stats counts what the DHT did since New.
type Stats struct {
	// Puts and Gets count the writes (puts and creates) and reads this
	// node served as the owner of their key.
	Puts, Gets uint64
	// Hits and Misses split Gets: answered with a value, or not found.
	Hits, Misses uint64
	// Conflicts counts creates answered with ErrExists.
	Conflicts uint64
	// Refused counts values refused: bad records (offered, pushed or
	// read), oversize, expired, over max_items, plain where only signed
	// records are accepted.
	Refused uint64
	// Replicated counts items stored from neighbours' pushes; Pushed the
	// items this node pushed; Recovered the items an owner fetched from
	// its neighbours; HandedOff the items dropped after the grace period
	// by a node no longer among their replicas; Expired the items swept.
	Replicated, Pushed, Recovered, HandedOff, Expired uint64
	// Retries counts request attempts that timed out and were repeated.
	Retries uint64
	// Dropped counts messages dropped because the worker was behind;
	// Malformed those that did not decode.
	Dropped, Malformed uint64
	// Items is the number of values stored now (as owner or replica).
	Items int
}

// Stats returns the counters.
func (d *DHT) Stats() Stats {
	s := &d.stats
	return Stats{
		Puts: s.puts.Load(), Gets: s.gets.Load(), Hits: s.hits.Load(), Misses: s.misses.Load(),
		Conflicts: s.conflicts.Load(), Refused: s.refused.Load(), Replicated: s.replicated.Load(),
		Pushed: s.pushed.Load(), Recovered: s.recovered.Load(), HandedOff: s.handedOff.Load(),
		Expired: s.expired.Load(), Retries: s.retries.Load(), Dropped: s.dropped.Load(),
		Malformed: s.malformed.Load(), Items: d.store.len(),
	}
}
