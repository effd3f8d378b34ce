package dht

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"

	"github.com/ringvpn/ringvpn/overlay"
)

// Message types of the DHT, in the range overlay reserves for it.
const (
	// TypeRequest is routed (FlagClosest) to the node closest to the key:
	// a put, create or get.
	TypeRequest overlay.Type = 0x40
	// TypeReply is routed (exact) back to the requester.
	TypeReply overlay.Type = 0x41
	// TypePush carries items one hop to replicas (SendTo).
	TypePush overlay.Type = 0x42
	// TypeFetch asks a linked peer (one hop) for its copy of a key: an
	// owner that lacks a key asks its neighbours before it answers.
	TypeFetch overlay.Type = 0x43
	// TypeFetchReply answers a fetch, one hop back.
	TypeFetchReply overlay.Type = 0x44
)

// WireVersion is the version byte that starts every DHT message and
// record; others are dropped (messages) or refused (records).
const WireVersion = 1

// Limits of the wire format. A message must fit in one link packet
// (security.MaxPayload, 9216 bytes) with the overlay header (68 bytes).
const (
	// MaxValueLimit bounds dht.max_value_size.
	MaxValueLimit = 4096
	// maxDataLen bounds an item's data: a plain value or an encoded
	// record (MaxValueLimit plus names, certificates and signature).
	maxDataLen = 8192
	// maxTextLen bounds the error text of a reply.
	maxTextLen = 512
	// maxPushLen is the budget of one push message; one item always fits.
	maxPushLen = 8900
	// maxPushEntries bounds the entries of one push.
	maxPushEntries = 1024
)

// op is the operation of a request, echoed in its reply.
type op uint8

const (
	opPut    op = 1
	opCreate op = 2
	opGet    op = 3
)

func (o op) String() string {
	switch o {
	case opPut:
		return "put"
	case opCreate:
		return "create"
	case opGet:
		return "get"
	default:
		return "op?"
	}
}

// status is the outcome carried in a reply.
type status uint8

const (
	statusOK         status = 0
	statusNotFound   status = 1
	statusExists     status = 2
	statusBadRecord  status = 3
	statusTooLarge   status = 4
	statusFull       status = 5
	statusUnsigned   status = 6
	statusBadRequest status = 7
	maxStatus               = statusBadRequest
)

// sentinels returns the errors a status wraps at the requester.
func (s status) sentinels() []error {
	switch s {
	case statusNotFound:
		return one(ErrNotFound)
	case statusExists:
		return one(ErrExists)
	case statusBadRecord:
		return []error{ErrRefused, ErrBadRecord}
	case statusTooLarge:
		return []error{ErrRefused, ErrTooLarge}
	case statusFull:
		return []error{ErrRefused, ErrFull}
	case statusUnsigned:
		return []error{ErrRefused, ErrUnsigned}
	default:
		return []error{ErrRefused, ErrBadRequest}
	}
}

// kind says what an item's data is.
type kind uint8

const (
	kindPlain  kind = 0 // opaque bytes
	kindRecord kind = 1 // an encoded SignedRecord
)

// version orders the writes of one key: the writer's wall clock (Unix
// nanoseconds), then a random tie-breaker. A retried write keeps its
// version, so it is recognised as the same write.
type version struct {
	Time uint64
	Tie  uint64
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v version) Compare(w version) int {
	switch {
	case v.Time < w.Time:
		return -1
	case v.Time > w.Time:
		return 1
	case v.Tie < w.Tie:
		return -1
	case v.Tie > w.Tie:
		return 1
	}
	return 0
}

// item is a stored value with its metadata. Items are immutable once
// built; a write replaces the item.
//
//	kind (1) | version time (8) | version tie (8) | expires (8) | len (2) | data
type item struct {
	Kind    kind
	Version version
	Expires int64 // absolute, Unix nanoseconds
	Data    []byte

	// set when the item is admitted, not on the wire
	signer overlay.Address // of a record: the signer's overlay address
}

const itemHeaderLen = 1 + 8 + 8 + 8 + 2

func (it *item) len() int { return itemHeaderLen + len(it.Data) }

func (it *item) append(b []byte) []byte {
	b = append(b, byte(it.Kind))
	b = binary.BigEndian.AppendUint64(b, it.Version.Time)
	b = binary.BigEndian.AppendUint64(b, it.Version.Tie)
	b = binary.BigEndian.AppendUint64(b, uint64(it.Expires))
	b = binary.BigEndian.AppendUint16(b, uint16(len(it.Data)))
	return append(b, it.Data...)
}

func (r *reader) item() *item {
	it := &item{
		Kind:    kind(r.u8()),
		Version: version{Time: r.u64(), Tie: r.u64()},
		Expires: int64(r.u64()),
	}
	n := int(r.u16())
	if n > maxDataLen {
		r.fail()
		return nil
	}
	it.Data = slices.Clone(r.take(n))
	if it.Kind > kindRecord {
		r.fail()
	}
	if r.err != nil {
		return nil
	}
	return it
}

// message is the payload of TypeRequest, TypeReply, TypeFetch and
// TypeFetchReply.
//
//	version (1) | op (1) | status (1) | flags (1) | id (8) | key (20)
//	[via (20)] [item] [text len (2) | text]       (present as flags say)
type message struct {
	Op     op
	Status status
	ID     uint64
	Key    overlay.Address
	Via    overlay.Address // requests: where replies go first (zero: none)
	Item   *item
	Text   string // replies: why the request failed
}

// Flags of a message: which optional fields follow.
const (
	msgVia  = 1 << 0
	msgItem = 1 << 1
	msgText = 1 << 2
	msgAll  = msgVia | msgItem | msgText
)

func (m *message) append(b []byte) []byte {
	var flags byte
	if !m.Via.IsZero() {
		flags |= msgVia
	}
	if m.Item != nil {
		flags |= msgItem
	}
	text := m.Text
	if len(text) > maxTextLen {
		n := maxTextLen
		for n > 0 && !utf8.RuneStart(text[n]) {
			n-- // cut between runes
		}
		text = text[:n]
	}
	if text != "" {
		flags |= msgText
	}
	b = append(b, WireVersion, byte(m.Op), byte(m.Status), flags)
	b = binary.BigEndian.AppendUint64(b, m.ID)
	b = append(b, m.Key[:]...)
	if flags&msgVia != 0 {
		b = append(b, m.Via[:]...)
	}
	if flags&msgItem != 0 {
		b = m.Item.append(b)
	}
	if flags&msgText != 0 {
		b = binary.BigEndian.AppendUint16(b, uint16(len(text)))
		b = append(b, text...)
	}
	return b
}

// parseMessage decodes a message. The result shares no memory with b.
func parseMessage(b []byte) (message, error) {
	r := reader{b: b}
	var m message
	if r.u8() != WireVersion {
		return m, ErrMalformed
	}
	m.Op = op(r.u8())
	m.Status = status(r.u8())
	flags := r.u8()
	m.ID = r.u64()
	m.Key = r.address()
	if flags&^msgAll != 0 || m.Op < opPut || m.Op > opGet || m.Status > maxStatus {
		return message{}, ErrMalformed
	}
	if flags&msgVia != 0 {
		m.Via = r.address()
		if m.Via.IsZero() {
			r.fail()
		}
	}
	if flags&msgItem != 0 {
		m.Item = r.item()
	}
	if flags&msgText != 0 {
		n := int(r.u16())
		if n == 0 || n > maxTextLen {
			r.fail()
		}
		m.Text = string(r.take(n))
	}
	if err := r.done(); err != nil {
		return message{}, err
	}
	return m, nil
}

// entry is one key and its item in a push.
type entry struct {
	Key  overlay.Address
	Item *item
}

// push is the payload of TypePush: items for a replica.
//
//	version (1) | count (2) | count x ( key (20) | item )
type push struct {
	Entries []entry
}

const pushHeaderLen = 1 + 2

func (p *push) append(b []byte) []byte {
	b = append(b, WireVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.Entries)))
	for _, e := range p.Entries {
		b = append(b, e.Key[:]...)
		b = e.Item.append(b)
	}
	return b
}

// parsePush decodes a push. The result shares no memory with b.
func parsePush(b []byte) (push, error) {
	r := reader{b: b}
	if r.u8() != WireVersion {
		return push{}, ErrMalformed
	}
	n := int(r.u16())
	if n == 0 || n > maxPushEntries {
		return push{}, ErrMalformed
	}
	p := push{Entries: make([]entry, 0, min(n, len(r.b)/(20+itemHeaderLen)+1))}
	for range n {
		e := entry{Key: r.address(), Item: r.item()}
		if r.err != nil {
			return push{}, r.err
		}
		p.Entries = append(p.Entries, e)
	}
	if err := r.done(); err != nil {
		return push{}, err
	}
	return p, nil
}

// reader decodes big-endian fields; any truncation or misuse becomes one
// ErrMalformed, so every decoder fails cleanly.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() { r.err = ErrMalformed }

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail()
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) address() overlay.Address {
	var a overlay.Address
	copy(a[:], r.take(len(a)))
	return a
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		return ErrMalformed
	}
	return r.err
}
