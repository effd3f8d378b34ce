package firewall

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/ringvpn/ringvpn/security"
)

// dir is a packet's direction.
type dir uint8

const (
	dirIn  dir = iota // from a peer to this member
	dirOut            // from this member to a peer
)

func (d dir) String() string {
	if d == dirIn {
		return "inbound"
	}
	return "outbound"
}

// rule is a compiled Rule.
type rule struct {
	classes uint8  // bit set of the protocol classes it matches
	anyPort bool   // lo 0, hi 65535: matches packets without ports too
	lo, hi  uint16 // port range
	host    string // "" for any
	groups  []string
	caName  string
	cidr    netip.Prefix // the zero Prefix for any
	local   netip.Prefix
	index   int // in its list, for logs
}

// match reports whether a flow matches r. port is the service port (the
// destination port of the flow's first packet); hasPort is false for
// protocols without ports.
func (r *rule) match(port uint16, hasPort bool, local, remote netip.Addr, peer *security.Member) bool {
	if !r.anyPort && (!hasPort || port < r.lo || port > r.hi) {
		return false
	}
	if r.cidr.IsValid() && !r.cidr.Contains(remote) {
		return false
	}
	if r.local.IsValid() && !r.local.Contains(local) {
		return false
	}
	if r.host == "" && len(r.groups) == 0 && r.caName == "" {
		return true
	}
	if peer == nil {
		return false
	}
	if r.host != "" && peer.Name != r.host {
		return false
	}
	if r.caName != "" && peer.CAName != r.caName {
		return false
	}
	for _, g := range r.groups {
		if !slices.Contains(peer.Groups, g) {
			return false
		}
	}
	return true
}

// table holds the rules of one direction.
type table struct {
	// allowAll: the list is absent; everything passes this way.
	allowAll bool
	// rules per protocol class, in the order of the list; a rule for
	// any protocol is in every class.
	byClass [numClasses][]*rule
	n       int
}

// ruleset is one compiled configuration. It is immutable: a reload
// swaps in a new one.
type ruleset struct {
	cfg     Config
	enabled bool
	gen     uint32 // bumped when the rules change, not the timeouts
	in, out table
	// Timeouts in nanoseconds.
	tcp, tcpUnanswered, tcpClosed, udp, other int64
	perShard                                  int // table capacity per shard
}

// compile checks cfg and builds its ruleset.
func compile(cfg Config) (*ruleset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rs := &ruleset{
		cfg:           cfg,
		enabled:       cfg.Enabled(),
		tcp:           int64(cfg.Conntrack.TCPTimeout),
		tcpUnanswered: int64(min(cfg.Conntrack.TCPTimeout, tcpUnansweredTimeout)),
		tcpClosed:     int64(min(cfg.Conntrack.TCPTimeout, tcpClosedTimeout)),
		udp:           int64(cfg.Conntrack.UDPTimeout),
		other:         int64(cfg.Conntrack.DefaultTimeout),
	}
	for _, l := range []struct {
		key   string
		rules []Rule
		t     *table
	}{{Key + ".inbound", cfg.Inbound, &rs.in}, {Key + ".outbound", cfg.Outbound, &rs.out}} {
		l.t.allowAll = l.rules == nil
		l.t.n = len(l.rules)
		for i, r := range l.rules {
			c, err := compileRule(r, fmt.Sprintf("%s[%d]", l.key, i))
			if err != nil {
				return nil, err // Validate passed: not reached
			}
			c.index = i
			for class := range numClasses {
				if c.classes&(1<<class) != 0 {
					l.t.byClass[class] = append(l.t.byClass[class], &c)
				}
			}
		}
	}
	return rs, nil
}

// sameRules reports whether a and b allow the same flows.
func sameRules(a, b Config) bool {
	// DeepEqual tells a nil list (absent) from an empty one. It may also
	// tell apart rules that only differ in spelling: a needless re-check.
	return reflect.DeepEqual(a.Inbound, b.Inbound) && reflect.DeepEqual(a.Outbound, b.Outbound)
}

func (rs *ruleset) table(d dir) *table {
	if d == dirIn {
		return &rs.in
	}
	return &rs.out
}

// allows reports whether the rules of direction d (the direction of the
// flow's first packet) allow the flow k, and the index of the rule that
// does (-1 when the list is absent).
func (rs *ruleset) allows(d dir, k *flowKey, peer *security.Member) (bool, int) {
	t := rs.table(d)
	if t.allowAll {
		return true, -1
	}
	port := k.rport
	if d == dirIn {
		port = k.lport
	}
	hasPort := k.proto == protoTCP || k.proto == protoUDP
	local, remote := ipOf(k.local, k.v6), ipOf(k.remote, k.v6)
	for _, r := range t.byClass[classOf(k.proto)] {
		if r.match(port, hasPort, local, remote, peer) {
			return true, r.index
		}
	}
	return false, 0
}

// timeout returns how long a flow may stay idle, given its protocol and
// its flags.
func (rs *ruleset) timeout(proto uint8, flags uint32) int64 {
	switch proto {
	case protoTCP:
		switch {
		case flags&flagRST != 0, flags&flagFINBoth == flagFINBoth:
			return rs.tcpClosed
		case flags&flagAnswered == 0:
			return rs.tcpUnanswered
		}
		return rs.tcp
	case protoUDP:
		return rs.udp
	}
	return rs.other
}

func classOf(proto uint8) int {
	switch proto {
	case protoTCP:
		return classTCP
	case protoUDP:
		return classUDP
	case protoICMP, protoICMPv6:
		return classICMP
	}
	return classOther
}
