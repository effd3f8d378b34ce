package revoke

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"strings"

	"github.com/ringvpn/ringvpn/overlay"
)

// Message types of the revocation lists, in the range overlay gives the
// services on the ring (0x40..0x7f: the DHT below 0x60).
const (
	// TypeBroadcast is a piece over a ring broadcast.
	TypeBroadcast overlay.Type = 0x60
	// TypePiece is a piece pushed over one link (SendTo).
	TypePiece overlay.Type = 0x61
	// TypeDigest tells a neighbour which lists the sender holds (SendTo).
	TypeDigest overlay.Type = 0x62
)

// WireVersion starts every message and DHT value; others are dropped.
const WireVersion = 1

// Namespace is the DHT namespace of the lists' records.
const Namespace = "crl"

// Sizes of the wire format.
const (
	// ChunkSize is the length of every chunk but a list's last.
	ChunkSize = 896
	// MaxChunks bounds the chunks of a list, so a DHT head with a hash
	// per chunk fits in 1,024 bytes.
	MaxChunks = 60
	// MaxListSize bounds a list that is spread (about 1,000 entries);
	// longer lists are applied where they are loaded but not spread.
	MaxListSize = ChunkSize * MaxChunks
	// InlineMax bounds a list carried in its DHT head.
	InlineMax = 960
	// MaxDigestEntries bounds the entries of a digest (CAs of a bundle).
	MaxDigestEntries = 16
	// MaxRecordValue is the longest value of a DHT record (a head with a
	// hash per chunk): dht.max_value_size must be at least this.
	MaxRecordValue = maxHeadLen

	hashLen      = sha256.Size
	chunkHashLen = 16
	caIDLen      = 16
	pieceHeader  = 1 + hashLen + 4 + 2
	headHeader   = 1 + hashLen + 4 + 2
	digestHeader = 1 + 1 + 1
	digestEntry  = caIDLen + 8 + hashLen
	// maxHeadLen is the longest head: a hash per chunk, or an inline list.
	maxHeadLen = headHeader + max(MaxChunks*chunkHashLen, InlineMax)
)

// errMalformed is what every decoder returns for bytes it does not take.
var errMalformed = errors.New("revoke: malformed message")

// hash is a list's SHA-256, which names it.
type hash [hashLen]byte

// caID names a CA in digests and DHT names.
type caID [caIDLen]byte

// caIDOf is the CA id of ca.
func caIDOf(ca *x509.Certificate) caID {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return caID(sum[:caIDLen])
}

// headName is the DHT name of a CA's head record.
func headName(id caID) string { return hex.EncodeToString(id[:]) }

// chunkName is the DHT name of a chunk record.
func chunkName(id caID, ch [chunkHashLen]byte) string {
	return hex.EncodeToString(id[:]) + "/" + hex.EncodeToString(ch[:])
}

// parseName tells a head name from a chunk name; ok is false for other
// names.
func parseName(name string) (id caID, ch [chunkHashLen]byte, isChunk, ok bool) {
	a, b, isChunk := strings.Cut(name, "/")
	if len(a) != 2*caIDLen || (isChunk && len(b) != 2*chunkHashLen) {
		return id, ch, false, false
	}
	if _, err := hex.Decode(id[:], []byte(a)); err != nil || hex.EncodeToString(id[:]) != a {
		return id, ch, false, false
	}
	if isChunk {
		if _, err := hex.Decode(ch[:], []byte(b)); err != nil || hex.EncodeToString(ch[:]) != b {
			return id, ch, false, false
		}
	}
	return id, ch, isChunk, true
}

// chunkHash is the first 16 bytes of a chunk's SHA-256.
func chunkHash(c []byte) [chunkHashLen]byte {
	sum := sha256.Sum256(c)
	return [chunkHashLen]byte(sum[:chunkHashLen])
}

// chunks is how many chunks a list of total bytes has.
func chunks(total int) int { return (total + ChunkSize - 1) / ChunkSize }

// chunkOf returns chunk i of list.
func chunkOf(list []byte, i int) []byte {
	return list[i*ChunkSize : min(len(list), (i+1)*ChunkSize)]
}

// chunkLen is the length of chunk i of a list of total bytes.
func chunkLen(total, i int) int { return min(total-i*ChunkSize, ChunkSize) }

// number is a CRL number as a digest carries it.
func number(crl *x509.RevocationList) uint64 {
	if crl.Number == nil || crl.Number.Sign() < 0 {
		return 0
	}
	if !crl.Number.IsUint64() {
		return math.MaxUint64
	}
	return crl.Number.Uint64()
}

// piece is one chunk of a list.
type piece struct {
	Hash  hash
	Total int
	Index int
	Chunk []byte // a sub-slice of the parsed bytes
}

func (p *piece) append(b []byte) []byte {
	b = append(b, WireVersion)
	b = append(b, p.Hash[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(p.Total))
	b = binary.BigEndian.AppendUint16(b, uint16(p.Index))
	return append(b, p.Chunk...)
}

// parsePiece decodes a piece; its chunk is a sub-slice of b.
func parsePiece(b []byte) (piece, error) {
	if len(b) < pieceHeader || b[0] != WireVersion {
		return piece{}, errMalformed
	}
	p := piece{
		Hash:  hash(b[1 : 1+hashLen]),
		Total: int(binary.BigEndian.Uint32(b[1+hashLen:])),
		Index: int(binary.BigEndian.Uint16(b[1+hashLen+4:])),
		Chunk: b[pieceHeader:],
	}
	if p.Total < 1 || p.Total > MaxListSize || p.Index >= chunks(p.Total) || len(p.Chunk) != chunkLen(p.Total, p.Index) {
		return piece{}, errMalformed
	}
	return p, nil
}

// pieces cuts list into its pieces, encoded.
func pieces(list []byte) [][]byte {
	h := hash(sha256.Sum256(list))
	n := chunks(len(list))
	out := make([][]byte, n)
	for i := range n {
		p := piece{Hash: h, Total: len(list), Index: i, Chunk: chunkOf(list, i)}
		out[i] = p.append(make([]byte, 0, pieceHeader+len(p.Chunk)))
	}
	return out
}

// head is the value of a CA's head record in the DHT.
type head struct {
	Hash   hash
	Total  int
	Inline []byte               // the list, when it is carried here
	Chunks [][chunkHashLen]byte // else the hash of each chunk
}

func (h head) append(b []byte) []byte {
	b = append(b, WireVersion)
	b = append(b, h.Hash[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Total))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Chunks)))
	if len(h.Chunks) == 0 {
		return append(b, h.Inline...)
	}
	for _, c := range h.Chunks {
		b = append(b, c[:]...)
	}
	return b
}

// headOf is the head of list.
func headOf(list []byte) head {
	h := head{Hash: hash(sha256.Sum256(list)), Total: len(list)}
	if len(list) <= InlineMax {
		h.Inline = list
		return h
	}
	for i := range chunks(len(list)) {
		h.Chunks = append(h.Chunks, chunkHash(chunkOf(list, i)))
	}
	return h
}

// parseHead decodes a head; Inline is a sub-slice of b. An inline list
// must hash to the head's hash.
func parseHead(b []byte) (head, error) {
	if len(b) < headHeader || len(b) > maxHeadLen || b[0] != WireVersion {
		return head{}, errMalformed
	}
	h := head{Hash: hash(b[1 : 1+hashLen]), Total: int(binary.BigEndian.Uint32(b[1+hashLen:]))}
	count := int(binary.BigEndian.Uint16(b[1+hashLen+4:]))
	rest := b[headHeader:]
	switch {
	case h.Total < 1 || h.Total > MaxListSize:
		return head{}, errMalformed
	case count == 0:
		if len(rest) != h.Total || h.Total > InlineMax || sha256.Sum256(rest) != h.Hash {
			return head{}, errMalformed
		}
		h.Inline = rest
	default:
		if count != chunks(h.Total) || h.Total <= InlineMax || len(rest) != count*chunkHashLen {
			return head{}, errMalformed
		}
		h.Chunks = make([][chunkHashLen]byte, count)
		for i := range h.Chunks {
			h.Chunks[i] = [chunkHashLen]byte(rest[i*chunkHashLen:])
		}
	}
	return h, nil
}

// entry is one list a digest says the sender holds.
type entry struct {
	CA     caID
	Number uint64
	Hash   hash
}

// digest lists what a member holds.
type digest struct {
	Reply   bool
	Entries []entry
}

const flagReply = 1

func (d *digest) append(b []byte) []byte {
	var flags byte
	if d.Reply {
		flags |= flagReply
	}
	b = append(b, WireVersion, flags, byte(len(d.Entries)))
	for _, e := range d.Entries {
		b = append(b, e.CA[:]...)
		b = binary.BigEndian.AppendUint64(b, e.Number)
		b = append(b, e.Hash[:]...)
	}
	return b
}

func parseDigest(b []byte) (digest, error) {
	if len(b) < digestHeader || b[0] != WireVersion || b[1]&^flagReply != 0 {
		return digest{}, errMalformed
	}
	count := int(b[2])
	rest := b[digestHeader:]
	if count > MaxDigestEntries || len(rest) != count*digestEntry {
		return digest{}, errMalformed
	}
	d := digest{Reply: b[1]&flagReply != 0, Entries: make([]entry, count)}
	for i := range d.Entries {
		e := rest[i*digestEntry:]
		d.Entries[i] = entry{
			CA:     caID(e[:caIDLen]),
			Number: binary.BigEndian.Uint64(e[caIDLen:]),
			Hash:   hash(e[caIDLen+8 : digestEntry]),
		}
	}
	return d, nil
}

// find returns the entry of CA id, or nil.
func (d *digest) find(id caID) *entry {
	for i := range d.Entries {
		if d.Entries[i].CA == id {
			return &d.Entries[i]
		}
	}
	return nil
}
