package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
)

// Version is the routed-message format version; a message with another
// version is dropped and counted.
const Version = 1

// HeaderLen is the length of the fixed header; ViaLen more follow when
// FlagVia is set.
const (
	HeaderLen = 48
	ViaLen    = 20
)

// DefaultTTL bounds the hops of a routed message. Greedy routing cannot
// loop (every hop strictly nears the destination), so the TTL only guards
// against a peer that forwards badly.
const DefaultTTL = 64

// Type says what a message's payload is. Types below 0x10 are link-local
// (never forwarded); 0x40..0x7f belong to the services on the ring (the
// DHT 0x40..0x5f, revocation lists 0x60..0x67), 0x80 and above to the
// VPN.
type Type uint8

// Message types of the overlay itself.
const (
	TypePing      Type = 0x01 // link-local: RTT, coordinates, the kinds the sender keeps the link for
	TypePong      Type = 0x02 // link-local: answer to a ping
	TypeNeighbors Type = 0x03 // link-local: the sender's near neighbours

	TypeLookup         Type = 0x10 // routed: who is closest to dst, and who is near it?
	TypeLookupReply    Type = 0x11
	TypeConnect        Type = 0x12 // routed: connect to me (carries my endpoints)
	TypeConnectReply   Type = 0x13 // answer: the responder's endpoints; it is dialing too
	TypeEcho           Type = 0x14 // routed: answer me (reachability and hop counts)
	TypeEchoReply      Type = 0x15
	TypeUnreachable    Type = 0x16 // an exact-mode message found no node at its destination
	TypePipe           Type = 0x20 // routed pipe datagram (a DTLS or sealed record)
	TypeBroadcast      Type = 0x21 // one link of a broadcast (see Broadcast)
	firstRoutedType    Type = 0x10
	firstExternalType  Type = 0x40
	maxOverlayType     Type = 0x3f
	maxLinkLocalType   Type = 0x0f
	defaultNeighborCap      = 16
)

// LinkLocal reports whether messages of type t stay on one link.
func (t Type) LinkLocal() bool { return t <= maxLinkLocalType }

// Flags modify routing.
type Flags uint8

const (
	// FlagClosest delivers to the node closest to the destination;
	// without it delivery is exact: to that address or nowhere.
	FlagClosest Flags = 1 << 0
	// FlagExcludeSource routes as if the source were not on the ring: a
	// joining node finds the node closest to its own address.
	FlagExcludeSource Flags = 1 << 1
	// FlagVia routes to the via address first, then on to the destination.
	FlagVia Flags = 1 << 2
	// FlagViaReached marks that the via node has been passed.
	FlagViaReached Flags = 1 << 3

	knownFlags = FlagClosest | FlagExcludeSource | FlagVia | FlagViaReached
)

// Header is a decoded routed-message header.
type Header struct {
	Type  Type
	Flags Flags
	TTL   uint8
	Hops  uint8
	Src   Address
	Dst   Address
	Via   Address // meaningful only with FlagVia
}

// Len is the encoded length of h.
func (h *Header) Len() int {
	if h.Flags&FlagVia != 0 {
		return HeaderLen + ViaLen
	}
	return HeaderLen
}

// Header decoding errors.
var (
	ErrShortMessage = errors.New("overlay: message shorter than its header")
	ErrBadVersion   = errors.New("overlay: unknown message version")
	ErrBadFlags     = errors.New("overlay: unknown message flags")
)

// Put encodes h into the front of b, which must hold h.Len() bytes.
func (h *Header) Put(b []byte) {
	b[0] = Version
	b[1] = byte(h.Type)
	b[2] = byte(h.Flags)
	b[3] = h.TTL
	b[4] = h.Hops
	b[5], b[6], b[7] = 0, 0, 0
	copy(b[8:28], h.Src[:])
	copy(b[28:48], h.Dst[:])
	if h.Flags&FlagVia != 0 {
		copy(b[48:68], h.Via[:])
	}
}

// ParseHeader decodes the header at the front of b and returns it with
// the payload (a sub-slice of b).
func ParseHeader(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, nil, ErrShortMessage
	}
	if b[0] != Version {
		return h, nil, fmt.Errorf("%w %d", ErrBadVersion, b[0])
	}
	h.Type = Type(b[1])
	h.Flags = Flags(b[2])
	if h.Flags&^knownFlags != 0 {
		return h, nil, ErrBadFlags
	}
	h.TTL = b[3]
	h.Hops = b[4]
	copy(h.Src[:], b[8:28])
	copy(h.Dst[:], b[28:48])
	n := HeaderLen
	if h.Flags&FlagVia != 0 {
		if len(b) < HeaderLen+ViaLen {
			return h, nil, ErrShortMessage
		}
		copy(h.Via[:], b[48:68])
		n += ViaLen
	}
	return h, b[n:], nil
}

// appendMessage encodes h and payload into a new message.
func appendMessage(dst []byte, h *Header, payload []byte) []byte {
	n := h.Len()
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	h.Put(dst[start:])
	return append(dst, payload...)
}

// Payload codecs. They share a tiny reader that turns any truncation into
// one error, so every decoder of network bytes fails cleanly.

// ErrBadPayload is returned for a payload that does not decode.
var ErrBadPayload = errors.New("overlay: malformed payload")

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.err = ErrBadPayload
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

func (r *reader) f32() float64 {
	if v := r.take(4); v != nil {
		f := float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
		if math.IsNaN(f) || math.IsInf(f, 0) {
			r.err = ErrBadPayload
			return 0
		}
		return f
	}
	return 0
}

func (r *reader) address() Address {
	var a Address
	copy(a[:], r.take(len(a)))
	return a
}

// endpoints reads a count and that many endpoints (family-tagged
// addresses with ports).
func (r *reader) endpoints() []netip.AddrPort {
	n := int(r.u8())
	if n > maxEndpoints {
		r.err = ErrBadPayload
		return nil
	}
	var eps []netip.AddrPort
	for range n {
		var ip netip.Addr
		switch r.u8() {
		case 4:
			if v := r.take(4); v != nil {
				ip = netip.AddrFrom4([4]byte(v))
			}
		case 6:
			if v := r.take(16); v != nil {
				ip = netip.AddrFrom16([16]byte(v)).Unmap()
			}
		default:
			r.err = ErrBadPayload
		}
		port := r.u16()
		if r.err != nil {
			return nil
		}
		eps = append(eps, netip.AddrPortFrom(ip, port))
	}
	return eps
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		return ErrBadPayload
	}
	return r.err
}

const maxEndpoints = 8

func putU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func putU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func putF32(b []byte, v float64) []byte {
	return binary.BigEndian.AppendUint32(b, math.Float32bits(float32(v)))
}

func putEndpoints(b []byte, eps []netip.AddrPort) []byte {
	eps = eps[:min(len(eps), maxEndpoints)]
	b = append(b, byte(len(eps)))
	for _, ep := range eps {
		ip := ep.Addr().Unmap()
		if ip.Is4() {
			a := ip.As4()
			b = append(b, 4)
			b = append(b, a[:]...)
		} else {
			a := ip.As16()
			b = append(b, 6)
			b = append(b, a[:]...)
		}
		b = putU16(b, ep.Port())
	}
	return b
}

// Coord is a Vivaldi network coordinate: a point on a plane plus a
// height (the access delay), in milliseconds.
type Coord struct {
	X, Y, H float64
	// Err is the node's confidence in its coordinate, 0 (sure) to 1.
	Err float64
}

func putCoord(b []byte, c Coord) []byte {
	b = putF32(b, c.X)
	b = putF32(b, c.Y)
	b = putF32(b, c.H)
	return putF32(b, c.Err)
}

func (r *reader) coord() Coord {
	return Coord{X: r.f32(), Y: r.f32(), H: r.f32(), Err: r.f32()}
}

// NodeInfo describes a node to another: its address, where to reach it
// and its network coordinate.
type NodeInfo struct {
	Address   Address
	Endpoints []netip.AddrPort
	Coord     Coord
}

func putNodeInfo(b []byte, n *NodeInfo) []byte {
	b = append(b, n.Address[:]...)
	b = putCoord(b, n.Coord)
	return putEndpoints(b, n.Endpoints)
}

func (r *reader) nodeInfo() NodeInfo {
	return NodeInfo{Address: r.address(), Coord: r.coord(), Endpoints: r.endpoints()}
}

func putNodeInfos(b []byte, ns []NodeInfo) []byte {
	ns = ns[:min(len(ns), defaultNeighborCap)]
	b = append(b, byte(len(ns)))
	for i := range ns {
		b = putNodeInfo(b, &ns[i])
	}
	return b
}

func (r *reader) nodeInfos() []NodeInfo {
	n := int(r.u8())
	if n > defaultNeighborCap {
		r.err = ErrBadPayload
		return nil
	}
	var ns []NodeInfo
	for range n {
		ni := r.nodeInfo()
		if r.err != nil {
			return nil
		}
		ns = append(ns, ni)
	}
	return ns
}

// ping is the payload of TypePing and TypePong.
//
//	sent (8, sender's clock, echoed in the pong) | kinds (1) | coord (16) |
//	observed (endpoint list of 0 or 1: where the sender sees the receiver)
//
// The observed endpoint is how a node behind a NAT learns its reflexive
// address; a relayed link has none to tell.
type ping struct {
	Sent     uint64
	Kinds    Kind
	Coord    Coord
	Observed netip.AddrPort
}

func (p *ping) append(b []byte) []byte {
	b = putU64(b, p.Sent)
	b = append(b, byte(p.Kinds))
	b = putCoord(b, p.Coord)
	if p.Observed.IsValid() {
		return putEndpoints(b, []netip.AddrPort{p.Observed})
	}
	return append(b, 0)
}

func parsePing(b []byte) (ping, error) {
	r := reader{b: b}
	p := ping{Sent: r.u64(), Kinds: Kind(r.u8()), Coord: r.coord()}
	if eps := r.endpoints(); len(eps) > 1 {
		r.err = ErrBadPayload
	} else if len(eps) == 1 {
		p.Observed = eps[0]
	}
	return p, r.done()
}

// neighbors is the payload of TypeNeighbors: the sender's near
// neighbours, so each side learns the ring around it.
type neighbors struct {
	Nodes []NodeInfo
}

func (n *neighbors) append(b []byte) []byte { return putNodeInfos(b, n.Nodes) }

func parseNeighbors(b []byte) (neighbors, error) {
	r := reader{b: b}
	n := neighbors{Nodes: r.nodeInfos()}
	return n, r.done()
}

// connect is the payload of TypeConnect, TypeConnectReply, TypeLookup,
// TypeLookupReply, TypeEcho and TypeEchoReply.
//
//	id (8) | kinds (1) | via (20) | sender NodeInfo | near NodeInfos
type connect struct {
	ID     uint64
	Kinds  Kind
	Via    Address // requests: a neighbour of the sender to route the reply through
	Sender NodeInfo
	Near   []NodeInfo // replies: the responder's nearest neighbours

	hops uint8 // the reply's hop count, filled in on receipt
}

func (c *connect) append(b []byte) []byte {
	b = putU64(b, c.ID)
	b = append(b, byte(c.Kinds))
	b = append(b, c.Via[:]...)
	b = putNodeInfo(b, &c.Sender)
	return putNodeInfos(b, c.Near)
}

func parseConnect(b []byte) (connect, error) {
	r := reader{b: b}
	c := connect{ID: r.u64(), Kinds: Kind(r.u8()), Via: r.address(), Sender: r.nodeInfo(), Near: r.nodeInfos()}
	return c, r.done()
}
