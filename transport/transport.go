package transport

import (
	"net/netip"
)

// MaxPacket is the largest datagram a PacketConn reads or writes. It covers
// an Ethernet jumbo frame plus every ringvpn header.
const MaxPacket = 9216 + 256

// Wire constants shared with the record layer in package security.
const (
	// ConnIDLen is the length of every ringvpn connection ID (RFC 9146).
	ConnIDLen = 8
	// SealedRecordType is the first byte of a sealed data record.
	SealedRecordType byte = 0xE1
	// SealedHeaderLen is the length of the sealed record header.
	SealedHeaderLen = 16
)

// ConnID is a connection ID chosen by the receiving side of a session. Both
// DTLS records (RFC 9146) and sealed data records carry the receiver's ID,
// so a session survives its peer's address changing.
type ConnID = [ConnIDLen]byte

// PacketConn is one datagram socket, batched.
//
// ReadBatch is called from one goroutine at a time; WriteTo and WriteBatch
// may be called concurrently. After Close every method returns net.ErrClosed.
type PacketConn interface {
	// ReadBatch blocks until at least one datagram arrives, then fills
	// up to len(bufs) of them: bufs[i][:sizes[i]] came from from[i].
	// len(sizes) and len(from) must be at least len(bufs). A datagram
	// longer than its buffer is truncated.
	ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (n int, err error)
	// WriteTo sends one datagram. b is not retained.
	WriteTo(b []byte, to netip.AddrPort) error
	// WriteBatch sends bufs[i] to to[i] and reports how many were handed
	// to the network. A datagram the network drops is not an error.
	WriteBatch(bufs [][]byte, to []netip.AddrPort) (n int, err error)
	// LocalAddr is the address the socket is bound to.
	LocalAddr() netip.AddrPort
	// BatchSize is the most datagrams one ReadBatch or WriteBatch moves.
	BatchSize() int
	Close() error
}

// ConnID is an alias, not a defined type, so that packages which must not
// import transport (security) can name the same type as [8]byte.
