package overlay

import (
	"net/netip"
	"slices"
	"time"
)

// Status is a snapshot of a node, for `ringvpn status` and tests.
type Status struct {
	Address Address `json:"address"`
	Name    string  `json:"name"`
	InRing  bool    `json:"in_ring"`
	// EstimatedSize is N as estimated from the near neighbours' spacing.
	EstimatedSize int   `json:"estimated_size"`
	FarGoal       int   `json:"far_goal"`
	Coord         Coord `json:"coord"`
	// Successors and Predecessors are the linked near neighbours on each
	// side, nearest first.
	Successors   []Address    `json:"successors"`
	Predecessors []Address    `json:"predecessors"`
	Peers        []PeerStatus `json:"peers"`
	// Reflexive lists where peers see this node, most agreed on first:
	// behind a NAT, the NAT's mappings.
	Reflexive []netip.AddrPort `json:"reflexive"`
	Counters  Counters         `json:"counters"`
}

// PeerStatus describes one link.
type PeerStatus struct {
	Address   Address        `json:"address"`
	Name      string         `json:"name"`
	Kinds     Kind           `json:"kinds"`
	PeerKinds Kind           `json:"peer_kinds"`
	Endpoint  netip.AddrPort `json:"endpoint"`
	// Via is the relay of a relayed link, zero for a direct one.
	Via      Address       `json:"via"`
	Dialed   bool          `json:"dialed"`
	RTT      time.Duration `json:"rtt_ns"`
	BytesIn  uint64        `json:"bytes_in"`
	BytesOut uint64        `json:"bytes_out"`
	MsgsIn   uint64        `json:"msgs_in"`
	MsgsOut  uint64        `json:"msgs_out"`
	Since    time.Time     `json:"since"`
}

// Counters count messages by fate.
type Counters struct {
	Delivered   uint64 `json:"delivered"`
	Forwarded   uint64 `json:"forwarded"`
	Malformed   uint64 `json:"malformed"`
	TTLExpired  uint64 `json:"ttl_expired"`
	NoRoute     uint64 `json:"no_route"`
	UnknownType uint64 `json:"unknown_type"`
	// SendFailed counts messages a live link refused (too big).
	SendFailed uint64 `json:"send_failed"`
	// Refused counts connect requests turned away (too many under way);
	// KnownFull hearsay ignored because the table of known nodes is full.
	Refused   uint64 `json:"refused"`
	KnownFull uint64 `json:"known_full"`
	// BroadcastDropped counts well-formed broadcasts dropped as
	// duplicates or over the per-originator rate limit.
	BroadcastDropped uint64 `json:"broadcast_dropped"`
	// Relayed counts links this node made through a relay because no
	// direct one got through.
	Relayed uint64 `json:"relayed"`
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{
		Address:       n.addr,
		Name:          n.self.Name,
		InRing:        n.inRingLocked(),
		EstimatedSize: int(n.sizeEst + 0.5),
		FarGoal:       n.farGoal,
		Coord:         n.coord,
		Counters: Counters{
			Delivered:   n.stats.delivered.Load(),
			Forwarded:   n.stats.forwarded.Load(),
			Malformed:   n.stats.malformed.Load(),
			TTLExpired:  n.stats.ttlExpired.Load(),
			NoRoute:     n.stats.noRoute.Load(),
			UnknownType: n.stats.unknownType.Load(),
			SendFailed:  n.stats.sendFailed.Load(),
			Refused:     n.stats.refused.Load(),
			KnownFull:   n.stats.knownFull.Load(),
		},
	}
	st.Counters.BroadcastDropped = n.stats.broadcastDropped.Load()
	st.Counters.Relayed = n.stats.relayed.Load()
	var near []Address
	for _, p := range n.peers {
		st.Peers = append(st.Peers, PeerStatus{
			Address: p.addr, Name: p.member.Name, Kinds: p.kinds, PeerKinds: p.peerKinds,
			Endpoint: p.link.Remote(), Via: p.via, Dialed: p.link.Dialed(), RTT: time.Duration(p.rtt.Load()),
			BytesIn: p.bytesIn.Load(), BytesOut: p.bytesOut.Load(),
			MsgsIn: p.msgsIn.Load(), MsgsOut: p.msgsOut.Load(), Since: p.since,
		})
		if p.kinds&KindNear != 0 {
			near = append(near, p.addr)
		}
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	st.Reflexive = n.reflexiveLocked()
	st.Successors = nearestBy(near, n.cfg.Near, func(a Address) Address { return Clockwise(n.addr, a) })
	st.Predecessors = nearestBy(near, n.cfg.Near, func(a Address) Address { return Clockwise(a, n.addr) })
	return st
}
