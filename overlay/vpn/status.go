package vpn

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
)

// Status is a snapshot of the VPN, for `ringvpn status` and tests.
type Status struct {
	Device string `json:"device"`
	MTU    int    `json:"mtu"`
	// IPs are the member's addresses: fixed ones, then leased ones.
	IPs []netip.Prefix `json:"ips"`
	// Leased are the addresses of IPs leased from a pool.
	Leased []netip.Prefix `json:"leased,omitempty"`
	// Pools are the pools the certificate grants.
	Pools []netip.Prefix `json:"pools,omitempty"`
	// DNS is the name responder's state; absent when it is off.
	DNS   *DNSStatus   `json:"dns,omitempty"`
	Peers []PeerStatus `json:"peers"`
	Counters
	// Firewall counts the flows tracked and the packets dropped by the
	// vpn.firewall rules (Enabled false: no rules, all passes).
	Firewall firewall.Stats `json:"firewall"`
}

// Path says how packets to a member travel.
type Path string

const (
	// PathDirect: over a direct link (a ring link or a shortcut).
	PathDirect Path = "direct"
	// PathPipe: over an end-to-end session on a routed pipe, through the
	// ring; the nodes on the way see sealed records only.
	PathPipe Path = "pipe"
	// PathNone: nothing open (idle, or opening).
	PathNone Path = "none"
)

// PeerStatus describes one member we exchange packets with.
type PeerStatus struct {
	Address    overlay.Address `json:"address"`
	Name       string          `json:"name"`
	IPs        []netip.Prefix  `json:"ips"`
	Path       Path            `json:"path"`
	Kinds      overlay.Kind    `json:"link_kinds"` // why the direct link is kept
	Shortcut   bool            `json:"shortcut_asked"`
	PacketsOut uint64          `json:"packets_out"`
	PacketsIn  uint64          `json:"packets_in"`
	Idle       time.Duration   `json:"idle_ns"`
}

// Counters count frames by fate.
type Counters struct {
	FramesOut uint64 `json:"frames_out"`
	FramesIn  uint64 `json:"frames_in"`
	BytesOut  uint64 `json:"bytes_out"`
	BytesIn   uint64 `json:"bytes_in"`
	// Answered locally.
	ARPAnswered uint64 `json:"arp_answered"`
	NDPAnswered uint64 `json:"ndp_answered"`
	// TooBig counts packets over the MTU answered with ICMP; MSSClamped
	// TCP SYNs whose MSS was lowered.
	TooBig     uint64 `json:"too_big"`
	MSSClamped uint64 `json:"mss_clamped"`
	// Drops.
	DropMalformed  uint64 `json:"drop_malformed"`
	DropNotIP      uint64 `json:"drop_not_ip"`
	DropSpoofed    uint64 `json:"drop_spoofed"`
	DropNotForUs   uint64 `json:"drop_not_for_us"`
	DropBroadcast  uint64 `json:"drop_broadcast"`
	DropUnresolved uint64 `json:"drop_unresolved"`
	DropQueueFull  uint64 `json:"drop_queue_full"`
	DropSendFailed uint64 `json:"drop_send_failed"`
	WriteFailed    uint64 `json:"write_failed"`
	// Sessions over routed pipes, and lookups.
	SessionsOpened   uint64 `json:"sessions_opened"`
	SessionsAccepted uint64 `json:"sessions_accepted"`
	OpenFailed       uint64 `json:"open_failed"`
	Resolved         uint64 `json:"resolved"`
	ResolveFailed    uint64 `json:"resolve_failed"`
	ShortcutsAsked   uint64 `json:"shortcuts_asked"`
	// IPv4 broadcasts sent over the ring and written to the device.
	BroadcastsOut uint64 `json:"broadcasts_out"`
	BroadcastsIn  uint64 `json:"broadcasts_in"`
	// DropUnverified counts packets from an address of the sender's pool
	// not (yet) known as its lease; the first starts the lookup.
	DropUnverified uint64 `json:"drop_unverified"`
	// Address pool: leases taken, creates that found the address held,
	// and leases lost to another member at renewal.
	LeasesTaken    uint64 `json:"leases_taken"`
	LeaseConflicts uint64 `json:"lease_conflicts"`
	LeasesLost     uint64 `json:"leases_lost"`
}

// Status returns a snapshot.
func (v *VPN) Status() Status {
	s := Status{Device: v.dev.Name(), MTU: v.maxPacket, IPs: v.ownIPs(), Leased: v.Leases(), Pools: v.pools, Counters: v.counters(), Firewall: v.fw.Stats()}
	if v.dnsSrv != nil {
		d := v.dnsSrv.status()
		s.DNS = &d
	}
	v.mu.Lock()
	remotes := make([]*remote, 0, len(v.byAddr))
	for _, r := range v.byAddr {
		remotes = append(remotes, r)
	}
	v.mu.Unlock()
	now := time.Now()
	for _, r := range remotes {
		ps := PeerStatus{
			Address:    r.addr,
			PacketsOut: r.packetsOut.Load(),
			PacketsIn:  r.packetsIn.Load(),
			Idle:       now.Sub(time.Unix(0, r.lastActive.Load())),
			Path:       PathNone,
		}
		r.mu.Lock()
		if m := r.member.Load(); m != nil {
			ps.Name, ps.IPs = m.Name, m.IPs
		}
		ps.Shortcut = r.shortcut
		r.mu.Unlock()
		if kinds, ok := v.node.Linked(r.addr); ok {
			ps.Path, ps.Kinds = PathDirect, kinds
		} else if r.session.Load() != nil {
			ps.Path = PathPipe
		}
		s.Peers = append(s.Peers, ps)
	}
	slices.SortFunc(s.Peers, func(a, b PeerStatus) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Address.Compare(b.Address)
	})
	return s
}

func (v *VPN) counters() Counters {
	c := &v.stats
	return Counters{
		FramesOut: c.framesOut.Load(), FramesIn: c.framesIn.Load(),
		BytesOut: c.bytesOut.Load(), BytesIn: c.bytesIn.Load(),
		ARPAnswered: c.arpAnswered.Load(), NDPAnswered: c.ndpAnswered.Load(),
		TooBig: c.tooBig.Load(), MSSClamped: c.mssClamped.Load(),
		DropMalformed: c.dropMalformed.Load(), DropNotIP: c.dropNotIP.Load(),
		DropSpoofed: c.dropSpoofed.Load(), DropNotForUs: c.dropNotForUs.Load(),
		DropBroadcast: c.dropBroadcast.Load(), DropUnresolved: c.dropUnresolved.Load(),
		DropQueueFull: c.dropQueueFull.Load(), DropSendFailed: c.dropSendFailed.Load(),
		WriteFailed:    c.writeFailed.Load(),
		SessionsOpened: c.sessionsOpened.Load(), SessionsAccepted: c.sessionsAccepted.Load(),
		OpenFailed: c.openFailed.Load(), Resolved: c.resolved.Load(),
		ResolveFailed: c.resolveFailed.Load(), ShortcutsAsked: c.shortcutsAsked.Load(),
		BroadcastsOut: c.broadcastsOut.Load(), BroadcastsIn: c.broadcastsIn.Load(),
		DropUnverified: c.dropUnverified.Load(), LeasesTaken: c.leasesTaken.Load(),
		LeaseConflicts: c.leaseConflicts.Load(), LeasesLost: c.leasesLost.Load(),
	}
}
