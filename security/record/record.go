package record

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Wire constants. TypeByte, ConnIDLen and HeaderLen must match
// transport.SealedRecordType, transport.ConnIDLen and
// transport.SealedHeaderLen: this package may not import transport.
const (
	// TypeByte is the first byte of every sealed record.
	TypeByte byte = 0xE1
	// ConnIDLen is the length of a connection ID.
	ConnIDLen = 8
	// HeaderLen is the length of the clear header, which is also the
	// additional data.
	HeaderLen = 16
	// TagLen is the length of the AES-GCM tag that ends a record.
	TagLen = 16
	// Overhead is how much longer a record is than its payload.
	Overhead = HeaderLen + TagLen
	// MaxSeq is the last sequence number a Sealer uses.
	MaxSeq uint64 = 1<<48 - 1
)

// Key material lengths and the RFC 5705 exporter parameters.
const (
	// KeyLen is the length of an AES-128 key.
	KeyLen = 16
	// IVLen is the length of a per-direction IV, the GCM nonce length.
	IVLen = 12
	// ExporterLabel is the label the caller passes to the DTLS exporter.
	ExporterLabel = "EXTRACTOR-ringvpn-record-v1"
	// ExporterLen is how many bytes the caller exports: a key and an IV
	// for each direction.
	ExporterLen = 2 * (KeyLen + IVLen)
)

// Header field offsets.
const (
	offConnID = 1
	offKind   = offConnID + ConnIDLen
	offSeq    = offKind + 1
)

// KeysFromExporter splits ExporterLen bytes exported from the DTLS session
// under ExporterLabel into this side's send and receive keys and IVs. The
// DTLS client sends with the first half (key, then IV) and the server with
// the second, so each side's send pair is the other's receive pair.
//
// The results alias material; NewSealer and NewOpener copy them, so the
// caller may clear material once both are built.
func KeysFromExporter(material []byte, isClient bool) (sendKey, sendIV, recvKey, recvIV []byte, err error) {
	if len(material) != ExporterLen {
		return nil, nil, nil, nil, fmt.Errorf("record: exporter output is %d bytes, want %d: %w", len(material), ExporterLen, ErrKey)
	}
	const half = KeyLen + IVLen
	client := material[:half:half]
	server := material[half:]
	if !isClient {
		client, server = server, client
	}
	return client[:KeyLen:KeyLen], client[KeyLen:half:half], server[:KeyLen:KeyLen], server[KeyLen:half:half], nil
}

// direction is the AEAD state of one direction of a link.
type direction struct {
	aead cipher.AEAD
	ivHi uint32 // IV bytes 0..3
	ivLo uint64 // IV bytes 4..11, XORed with the sequence number
}

func newDirection(key, iv []byte) (direction, error) {
	if len(key) != KeyLen {
		return direction{}, fmt.Errorf("record: key is %d bytes, want %d: %w", len(key), KeyLen, ErrKey)
	}
	if len(iv) != IVLen {
		return direction{}, fmt.Errorf("record: iv is %d bytes, want %d: %w", len(iv), IVLen, ErrKey)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return direction{}, fmt.Errorf("record: %w: %w", ErrKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return direction{}, fmt.Errorf("record: %w: %w", ErrKey, err)
	}
	return direction{
		aead: aead,
		ivHi: binary.BigEndian.Uint32(iv[0:4]),
		ivLo: binary.BigEndian.Uint64(iv[4:12]),
	}, nil
}

// nonce is GCM nonce scratch. A nonce passed to the cipher.AEAD interface
// escapes, so a stack array would cost an allocation per record; a pooled
// one costs none in steady state and, unlike a per-Sealer field, lets any
// number of goroutines seal at once. It holds a pointer, not a slice, so
// Put does not allocate either.
type nonce = [IVLen]byte

var noncePool = sync.Pool{New: func() any { return new(nonce) }}

// nonce writes the nonce for seq: IV XOR (4 zero bytes || seq, big endian).
func (d *direction) nonce(n *nonce, seq uint64) {
	binary.BigEndian.PutUint32(n[0:4], d.ivHi)
	binary.BigEndian.PutUint64(n[4:12], d.ivLo^seq)
}

func putSeq(b []byte, seq uint64) {
	_ = b[5]
	b[0] = byte(seq >> 40)
	b[1] = byte(seq >> 32)
	b[2] = byte(seq >> 24)
	b[3] = byte(seq >> 16)
	b[4] = byte(seq >> 8)
	b[5] = byte(seq)
}

func getSeq(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// A Sealer seals the records one side of a link sends. It is safe for
// concurrent use: each Seal takes the next sequence number atomically.
type Sealer struct {
	// immutable after NewSealer
	dir      direction
	receiver [ConnIDLen]byte

	_ [64]byte // keeps next off the cache line of the fields above

	// next is the sequence number the next Seal takes, at most MaxSeq+1
	// (exhausted).
	next atomic.Uint64
}

// NewSealer returns a Sealer that encrypts with the KeyLen-byte key and
// IVLen-byte iv and addresses records to the receiver's connection ID.
// It copies key and iv.
func NewSealer(key, iv []byte, receiverID [ConnIDLen]byte) (*Sealer, error) {
	dir, err := newDirection(key, iv)
	if err != nil {
		return nil, err
	}
	return &Sealer{dir: dir, receiver: receiverID}, nil
}

// Seal writes the record carrying payload under the next sequence number
// into dst[:len(payload)+Overhead] and returns that slice; len(dst) is
// ignored. If cap(dst) is too small, Seal returns io.ErrShortBuffer without
// using a sequence number. After MaxSeq, it returns ErrExhausted.
//
// payload may be exactly dst[HeaderLen:HeaderLen+len(payload)] (sealing in
// place: the caller leaves HeaderLen bytes of room before the payload and
// TagLen after it); otherwise payload must not overlap
// dst[:len(payload)+Overhead]. Neither slice is retained.
func (s *Sealer) Seal(dst []byte, kind byte, payload []byte) ([]byte, error) {
	n := len(payload)
	if cap(dst)-Overhead < n {
		return nil, io.ErrShortBuffer
	}
	seq, err := s.take()
	if err != nil {
		return nil, err
	}

	rec := dst[:HeaderLen+n+TagLen]
	rec[0] = TypeByte
	copy(rec[offConnID:offKind], s.receiver[:])
	rec[offKind] = kind
	putSeq(rec[offSeq:HeaderLen], seq)

	nc := noncePool.Get().(*nonce)
	s.dir.nonce(nc, seq)
	s.dir.aead.Seal(rec[HeaderLen:HeaderLen], nc[:], payload, rec[:HeaderLen])
	noncePool.Put(nc)
	return rec, nil
}

// take returns the next sequence number, each exactly once. Unlike an
// atomic Add it never moves next past MaxSeq+1, so a spent Sealer stays
// spent however often it is called.
func (s *Sealer) take() (uint64, error) {
	for {
		seq := s.next.Load()
		if seq > MaxSeq {
			return 0, ErrExhausted
		}
		if s.next.CompareAndSwap(seq, seq+1) {
			return seq, nil
		}
	}
}

// Sent reports how many sequence numbers the Sealer has used, which is the
// number of records sealed (at most MaxSeq+1). The caller rekeys the link
// well before the AES-GCM limit (see the package documentation).
func (s *Sealer) Sent() uint64 {
	return s.next.Load()
}

// An Opener authenticates, decrypts and replay-checks the records one side
// of a link receives. It is safe for concurrent use: a mutex guards the
// replay window for two short sections per record, and decryption runs
// outside it, so several readers may open records of one link at once.
type Opener struct {
	// immutable after NewOpener
	dir   direction
	local [ConnIDLen]byte

	// highest mirrors window.Highest() for Highest, which does not lock.
	highest atomic.Uint64

	// mu guards the following.
	mu     sync.Mutex
	window ReplayWindow
}

// NewOpener returns an Opener that decrypts with the KeyLen-byte key and
// IVLen-byte iv, accepts only records addressed to localID, and keeps a
// replay window of windowSize sequence numbers (see NewReplayWindow;
// DefaultWindow suits most links). It copies key and iv.
func NewOpener(key, iv []byte, localID [ConnIDLen]byte, windowSize int) (*Opener, error) {
	dir, err := newDirection(key, iv)
	if err != nil {
		return nil, err
	}
	o := &Opener{dir: dir, local: localID}
	if err := o.window.init(windowSize); err != nil {
		return nil, err
	}
	return o, nil
}

// Open authenticates and decrypts record, writes the payload into
// dst[:len(record)-Overhead] and returns the record's kind, its sequence
// number and that payload; len(dst) is ignored. dst may be
// record[HeaderLen:] (opening in place); otherwise it must not overlap
// record. If cap(dst) is too small, Open returns io.ErrShortBuffer.
//
// Open checks, in this order and before decrypting anything: the length
// (ErrShort), the type byte (ErrType), the connection ID (ErrConnID) and
// the replay window (ErrReplay, ErrTooOld). Then it verifies the tag
// (ErrAuth) and only then marks the sequence number seen. Errors are
// returned unwrapped, with zero kind and seq, and dst's contents are
// unspecified (a failed in-place Open clears the ciphertext).
func (o *Opener) Open(dst, record []byte) (kind byte, seq uint64, plaintext []byte, err error) {
	if len(record) < Overhead {
		return 0, 0, nil, ErrShort
	}
	if record[0] != TypeByte {
		return 0, 0, nil, ErrType
	}
	if [ConnIDLen]byte(record[offConnID:offKind]) != o.local {
		return 0, 0, nil, ErrConnID
	}
	if cap(dst) < len(record)-Overhead {
		return 0, 0, nil, io.ErrShortBuffer
	}
	seq = getSeq(record[offSeq:HeaderLen])

	o.mu.Lock()
	err = o.window.Check(seq)
	o.mu.Unlock()
	if err != nil {
		return 0, 0, nil, err
	}

	nc := noncePool.Get().(*nonce)
	o.dir.nonce(nc, seq)
	plaintext, err = o.dir.aead.Open(dst[:0], nc[:], record[HeaderLen:], record[:HeaderLen])
	noncePool.Put(nc)
	if err != nil {
		return 0, 0, nil, ErrAuth
	}

	// Another goroutine may have accepted the same record meanwhile;
	// Accept checks again, so exactly one of them succeeds.
	o.mu.Lock()
	err = o.window.Accept(seq)
	if err == nil {
		o.highest.Store(o.window.Highest())
	}
	o.mu.Unlock()
	if err != nil {
		return 0, 0, nil, err
	}
	return record[offKind], seq, plaintext, nil
}

// Highest reports the highest sequence number Open has authenticated, or 0
// before the first. A caller that updates its peer's address from the
// record's source (roaming) does so only when Open's seq equals Highest,
// so a replayed or delayed record cannot move the peer back.
func (o *Opener) Highest() uint64 {
	return o.highest.Load()
}
