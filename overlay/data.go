package overlay

import (
	"errors"

	"github.com/ringvpn/ringvpn/security"
)

// Data packets are the VPN's traffic on a direct link: one marker byte,
// then the packet. They skip the routed-message header (48 bytes, a
// parse and a routing decision) because a direct link already names both
// ends; the marker can't be mistaken for a header, whose first byte is
// Version.
const (
	// DataHeaderLen is the header room SendData needs in front of a packet.
	DataHeaderLen = 1
	dataMarker    = 0xd0
)

// ErrNoLink: SendData found no direct link to the destination.
var ErrNoLink = errors.New("overlay: no direct link to that node")

// DataHandler receives a data packet from a linked peer. It runs on the
// link's reader goroutine and must not block; pkt (the packet without
// the data header) is valid only during the call and may be modified in
// place.
type DataHandler func(from *security.Member, pkt []byte)

// HandleData installs the receiver of data packets (replacing any).
func (n *Node) HandleData(h DataHandler) {
	if h == nil {
		n.dataHandler.Store(nil)
		return
	}
	n.dataHandler.Store(&h)
}

// SendData sends a data packet straight over the link to dst, whatever
// kind of link it is. pkt[:DataHeaderLen] is header room that SendData
// overwrites; the rest is the packet. It fails with ErrNoLink when dst is
// not linked: the caller then has to carry the packet some other way
// (a routed pipe). It does not allocate.
func (n *Node) SendData(dst Address, pkt []byte) error {
	if len(pkt) < DataHeaderLen {
		return errors.New("overlay: data packet without header room")
	}
	var p *peer
	for _, q := range *n.routes.Load() {
		if q.addr == dst {
			p = q
			break
		}
	}
	if p == nil {
		return ErrNoLink
	}
	pkt[0] = dataMarker
	if err := p.link.Send(pkt); err != nil {
		if linkEnded(p.link) {
			n.removePeer(p, err.Error())
			return ErrNoLink
		}
		n.stats.sendFailed.Add(1)
		return err
	}
	p.msgsOut.Add(1)
	p.bytesOut.Add(uint64(len(pkt)))
	return nil
}

// receiveData hands a data packet from p to the handler.
func (n *Node) receiveData(p *peer, pkt []byte) {
	h := n.dataHandler.Load()
	if h == nil {
		n.stats.unknownType.Add(1)
		return
	}
	(*h)(p.member, pkt[DataHeaderLen:])
}

// Shortcut asks for a direct link to dst, kept for traffic
// (KindShortcut) until DropShortcut. It returns at once; the link comes
// up (or not) through the connect-to-me protocol, and SendData uses it
// as soon as it is there.
func (n *Node) Shortcut(dst Address) {
	if dst == n.addr {
		return
	}
	n.connectTo(dst, KindShortcut)
}

// DropShortcut stops keeping the link to dst for traffic; it closes when
// no other kind (ours or the peer's) keeps it.
func (n *Node) DropShortcut(dst Address) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[dst]; p != nil {
		p.kinds &^= KindShortcut
	}
	if a := n.pending[dst]; a != nil {
		a.kinds &^= KindShortcut
	}
}

// Linked reports whether there is a direct link to dst, and for which
// kinds this node keeps it.
func (n *Node) Linked(dst Address) (Kind, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[dst]
	if p == nil {
		return 0, false
	}
	return p.kinds, true
}
