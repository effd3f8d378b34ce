package firewall

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ringvpn/ringvpn/security"
)

// Verdict is what the firewall says of a packet: Accept, or why it is
// dropped. The zero Verdict is none of them, and not Accept.
type Verdict uint8

// Verdicts.
const (
	// Accept: pass the packet.
	Accept Verdict = iota + 1
	// DropNoRule: a new flow that no rule of its direction allows.
	DropNoRule
	// DropBadPacket: not an IPv4 or IPv6 packet with a whole transport
	// header, or a fragment the RFCs say to drop.
	DropBadPacket
	// DropTableFull: a new flow, allowed, but the flow table is full of
	// open, answered flows.
	DropTableFull
	// DropFragment: a later fragment whose first fragment did not pass
	// (or was not seen, or came too long ago).
	DropFragment
)

const numReasons = int(DropFragment - DropNoRule + 1)

var verdictNames = [...]string{
	Accept:        "accept",
	DropNoRule:    "no_rule",
	DropBadPacket: "bad_packet",
	DropTableFull: "table_full",
	DropFragment:  "fragment",
}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) && verdictNames[v] != "" {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Firewall filters the IP packets between this member and its peers by
// rules on the peers' certificates and the packets' addresses, ports and
// protocols, and lets the replies of allowed flows through. Its methods
// are safe for concurrent use.
type Firewall struct {
	// immutable after New
	log   *zap.Logger
	ct    *conntrack
	epoch time.Time // the zero of the firewall's clock

	frags     fragTable
	rules     atomic.Pointer[ruleset]
	enabled   atomic.Bool  // rules.Load().enabled, for the inlined fast path
	now       atomic.Int64 // the firewall's clock (ns since epoch), set by Sweep
	logBudget atomic.Int32 // drop log lines left until the next Sweep
	reloadMu  sync.Mutex   // serializes Reload

	drops                               [2][numReasons]atomic.Uint64 // by direction and reason
	newFlows, evicted, expired, revoked atomic.Uint64
}

// dropLogsPerSweep bounds the debug lines about dropped packets between
// two calls of Sweep (once a second from the VPN's housekeeping).
const dropLogsPerSweep = 10

// New checks cfg and returns a firewall that enforces it. log (nil for
// none) gets a line when rules are loaded and, at debug level and at most
// 10 per Sweep, one per dropped packet.
func New(cfg Config, log *zap.Logger) (*Firewall, error) {
	rs, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	f := &Firewall{
		log:   log.Named("firewall"),
		ct:    newConntrack(cfg.Conntrack.MaxEntries, rand.Uint64()),
		epoch: time.Now(),
	}
	f.frags.seed = rand.Uint64()
	rs.gen = 1
	rs.perShard = cfg.Conntrack.MaxEntries / len(f.ct.shards)
	f.rules.Store(rs)
	f.enabled.Store(rs.enabled)
	f.logBudget.Store(dropLogsPerSweep)
	f.logRules("firewall rules loaded", rs)
	return f, nil
}

// Reload checks cfg and, if it is valid, enforces it from the next packet
// on; else it returns the error and keeps the current rules. Tracked
// flows are kept: if the rules changed, each is checked again at its next
// packet, and dropped (and forgotten) if the new rules no longer allow
// it. Timeouts and max_entries apply to tracked flows at once (a lowered
// max_entries is reached as flows end); the shard count, chosen at New
// from max_entries, stays.
func (f *Firewall) Reload(cfg Config) error {
	rs, err := compile(cfg)
	if err != nil {
		return err
	}
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	old := f.rules.Load()
	rs.gen = old.gen
	if !sameRules(old.cfg, cfg) {
		rs.gen++
	}
	rs.perShard = max(1, cfg.Conntrack.MaxEntries/len(f.ct.shards))
	f.rules.Store(rs)
	f.enabled.Store(rs.enabled)
	f.logRules("firewall rules reloaded", rs)
	return nil
}

func (f *Firewall) logRules(msg string, rs *ruleset) {
	count := func(t *table) zap.Field {
		key := "inbound"
		if t == &rs.out {
			key = "outbound"
		}
		if t.allowAll {
			return zap.String(key, "all")
		}
		return zap.Int(key, t.n)
	}
	f.log.Info(msg, zap.Bool("enabled", rs.enabled), zap.Uint32("generation", rs.gen),
		count(&rs.in), count(&rs.out), zap.Int("max_entries", rs.cfg.Conntrack.MaxEntries))
}

// Inbound filters pkt, an IPv4 or IPv6 packet (from its IP header on;
// bytes past its length, like Ethernet padding, are ignored) that peer
// sent to this member. peer is the sender's verified certificate; the
// caller has checked that peer may use the packet's source address. The
// firewall reads pkt during the call only.
func (f *Firewall) Inbound(pkt []byte, peer *security.Member) Verdict {
	// Small enough to inline: with no rules, a packet costs its caller a
	// load and a test.
	if !f.enabled.Load() {
		return Accept
	}
	return f.filter(dirIn, pkt, peer)
}

// Outbound filters pkt, an IPv4 or IPv6 packet this member sends to peer,
// the member that owns its destination address. peer may be nil (not
// known, or a broadcast): rules that name a host, group, groups or
// ca_name then do not match it.
func (f *Firewall) Outbound(pkt []byte, peer *security.Member) Verdict {
	if !f.enabled.Load() {
		return Accept
	}
	return f.filter(dirOut, pkt, peer)
}

// Enabled reports whether the rules filter anything (Config.Enabled):
// when false, Inbound and Outbound accept every packet, so a caller may
// skip the work of finding the packet and the peer. Inlined, it costs a
// load and a test.
func (f *Firewall) Enabled() bool { return f.enabled.Load() }

// filter runs the rules on packet b going in direction d.
func (f *Firewall) filter(d dir, b []byte, peer *security.Member) Verdict {
	rs := f.rules.Load()
	if !rs.enabled {
		return Accept // turned off by a Reload since the caller looked
	}
	var p packet
	if !p.parse(b) {
		return f.drop(d, DropBadPacket, &p, peer)
	}
	var addr security.Address
	if peer != nil {
		addr = peer.Address
	}
	now := f.now.Load()
	var v Verdict
	switch p.kind {
	case kindNDP:
		return Accept
	case kindFragment:
		if f.frags.allowed(fragKey{src: p.src, dst: p.dst, id: p.fragID, proto: p.proto, v6: p.v6}, addr, rs.gen, now) {
			return Accept
		}
		return f.drop(d, DropFragment, &p, peer)
	case kindError:
		if k, ok := p.relatedKey(d); ok && f.known(rs, &k, addr, now) {
			v = Accept
			break
		}
		fallthrough
	case kindICMP:
		k := keyOf(d, p.v6, p.src, p.dst, p.proto, 0, 0)
		if ok, _ := rs.allows(d, &k, peer); ok {
			v = Accept
		} else {
			v = f.drop(d, DropNoRule, &p, peer)
		}
	case kindFlow:
		k := keyOf(d, p.v6, p.src, p.dst, p.proto, p.sport, p.dport)
		v = f.track(rs, d, &p, &k, peer, addr, now)
	}
	if v == Accept && p.firstFragment {
		f.frags.add(fragKey{src: p.src, dst: p.dst, id: p.fragID, proto: p.proto, v6: p.v6}, addr, rs.gen, now)
	}
	return v
}

// usable reports whether e carries a packet of peer addr with TCP flags
// tcpFlags: not if it expired, belongs to another member, or is a closed
// TCP flow and the packet opens a new one.
func (rs *ruleset) usable(e *entry, addr security.Address, tcpFlags uint8, now int64) bool {
	if !samePeer(e.peer, addr) || rs.expired(e, now) {
		return false
	}
	return e.key.proto != protoTCP || tcpFlags&(tcpSYN|tcpACK) != tcpSYN || !closed(e.flags.Load())
}

// samePeer reports whether a flow's member and a packet's may be the
// same: they are equal, or one is not known (the zero Address: Outbound
// was called with a nil peer). Addresses then decide alone; the VPN has
// checked that a sender owns its source address.
func samePeer(a, b security.Address) bool {
	return a == b || a == security.Address{} || b == security.Address{}
}

// track passes a packet of a tracked kind: through its flow's entry, or
// as the first packet of a flow the rules allow.
func (f *Firewall) track(rs *ruleset, d dir, p *packet, k *flowKey, peer *security.Member, addr security.Address, now int64) Verdict {
	s := f.ct.shard(k)
	s.mu.RLock()
	e := s.m[*k]
	stale := false
	if e != nil && rs.usable(e, addr, p.tcpFlags, now) {
		if e.gen.Load() != rs.gen {
			// Allowed under older rules: is it still?
			if ok, _ := rs.allows(e.origin, k, peer); ok {
				e.gen.Store(rs.gen)
			} else {
				stale = true
			}
		}
		if !stale {
			e.touch(now, packetFlags(e.origin, d, k.proto, p.tcpFlags))
			s.mu.RUnlock()
			return Accept
		}
	}
	s.mu.RUnlock()

	ok, _ := rs.allows(d, k, peer)
	if stale {
		f.revoked.Add(1)
		if ce := f.debug("flow no longer allowed"); ce != nil {
			ce.Write(flowFields(d, p, peer)...)
		}
	}
	if !ok {
		if stale {
			s.mu.Lock()
			if s.m[*k] == e && e.gen.Load() != rs.gen {
				delete(s.m, *k)
				s.free = append(s.free, e)
			}
			s.mu.Unlock()
		}
		return f.drop(d, DropNoRule, p, peer)
	}
	if !f.insert(rs, s, d, p, k, addr, now) {
		return f.drop(d, DropTableFull, p, peer)
	}
	return Accept
}

// insert starts tracking flow k (in shard s), whose first packet p went
// in direction d; false if the table is full.
func (f *Firewall) insert(rs *ruleset, s *shard, d dir, p *packet, k *flowKey, addr security.Address, now int64) bool {
	s.mu.Lock()
	e := s.m[*k]
	if e != nil && e.gen.Load() == rs.gen && rs.usable(e, addr, p.tcpFlags, now) {
		// Another packet of the flow (the other way, say) got here first.
		e.touch(now, packetFlags(e.origin, d, k.proto, p.tcpFlags))
		s.mu.Unlock()
		return true
	}
	how := takeFree
	switch {
	case e == nil:
		if e, how = s.take(rs, now); e == nil {
			s.mu.Unlock()
			return false
		}
		s.m[*k] = e
	case rs.expired(e, now):
		how = takeExpired
	}
	// A new entry, or one whose flow expired, ended, changed member or
	// lost its rule: either way, the flow starts again here.
	e.key, e.peer, e.origin = *k, addr, d
	e.seen.Store(now)
	e.gen.Store(rs.gen)
	e.flags.Store(packetFlags(d, d, k.proto, p.tcpFlags))
	s.mu.Unlock()
	f.newFlows.Add(1)
	switch how {
	case takeExpired:
		f.expired.Add(1)
	case takeEvicted:
		f.evicted.Add(1)
	}
	return true
}

// known reports whether flow k is tracked (for an ICMP error about it).
func (f *Firewall) known(rs *ruleset, k *flowKey, addr security.Address, now int64) bool {
	s := f.ct.shard(k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m[*k]
	return e != nil && e.gen.Load() == rs.gen && rs.usable(e, addr, 0, now)
}

// drop counts a dropped packet and, at debug level and within the
// budget, logs it.
func (f *Firewall) drop(d dir, v Verdict, p *packet, peer *security.Member) Verdict {
	f.drops[d][v-DropNoRule].Add(1)
	if ce := f.debug("packet dropped"); ce != nil {
		ce.Write(append(flowFields(d, p, peer), zap.Stringer("reason", v))...)
	}
	return v
}

// debug returns an entry to write at debug level, if that level is on
// and the budget of lines until the next Sweep allows.
func (f *Firewall) debug(msg string) *zapcore.CheckedEntry {
	if f.logBudget.Load() <= 0 || !f.log.Core().Enabled(zap.DebugLevel) || f.logBudget.Add(-1) < 0 {
		return nil
	}
	return f.log.Check(zap.DebugLevel, msg)
}

func flowFields(d dir, p *packet, peer *security.Member) []zap.Field {
	name := ""
	if peer != nil {
		name = peer.Name
	}
	return []zap.Field{
		zap.Stringer("direction", d), zap.String("member", name),
		zap.Stringer("src", ipOf(p.src, p.v6)), zap.Stringer("dst", ipOf(p.dst, p.v6)), zap.Uint8("proto", p.proto),
		zap.Uint16("sport", p.sport), zap.Uint16("dport", p.dport),
	}
}

// Sweep sets the firewall's clock to now and forgets the flows that have
// been idle past their timeout; it returns how many. Call it about once a
// second (from the VPN's housekeeping): packets are stamped with the
// time of the last Sweep, so flows expire only as the clock moves, and
// the debug log of drops gets its budget back.
func (f *Firewall) Sweep(now time.Time) int {
	t := int64(now.Sub(f.epoch))
	f.now.Store(t)
	f.logBudget.Store(dropLogsPerSweep)
	rs := f.rules.Load()
	n := 0
	for i := range f.ct.shards {
		n += f.ct.shards[i].sweep(rs, t)
	}
	f.expired.Add(uint64(n))
	return n
}

// Stats is a snapshot of the firewall, for `ringvpn status`.
type Stats struct {
	// Enabled: the configuration has rules; otherwise all passes.
	Enabled bool `json:"enabled"`
	// Generation counts the rule sets loaded (a reload that changes no
	// rule keeps it).
	Generation uint32 `json:"generation"`
	// InboundRules and OutboundRules count the rules of each list; -1
	// means the list is absent and everything passes that way.
	InboundRules  int `json:"inbound_rules"`
	OutboundRules int `json:"outbound_rules"`
	// Flows are tracked now, out of at most MaxFlows.
	Flows    int `json:"flows"`
	MaxFlows int `json:"max_flows"`
	// NewFlows counts the flows started; Expired those forgotten idle,
	// Evicted those pushed out of a full table, Revoked those a reload
	// took the rule of.
	NewFlows uint64 `json:"new_flows"`
	Expired  uint64 `json:"expired"`
	Evicted  uint64 `json:"evicted"`
	Revoked  uint64 `json:"revoked"`
	// Inbound and Outbound count the dropped packets.
	Inbound  Drops `json:"inbound_drops"`
	Outbound Drops `json:"outbound_drops"`
}

// Drops counts dropped packets by reason (see the Verdicts).
type Drops struct {
	NoRule    uint64 `json:"no_rule"`
	BadPacket uint64 `json:"bad_packet"`
	TableFull uint64 `json:"table_full"`
	Fragment  uint64 `json:"fragment"`
}

// Total is the sum of the counts.
func (d Drops) Total() uint64 { return d.NoRule + d.BadPacket + d.TableFull + d.Fragment }

// Stats returns a snapshot.
func (f *Firewall) Stats() Stats {
	rs := f.rules.Load()
	rules := func(t *table) int {
		if t.allowAll {
			return -1
		}
		return t.n
	}
	drops := func(d dir) Drops {
		c := &f.drops[d] // in the order of the Verdicts, from DropNoRule
		return Drops{NoRule: c[0].Load(), BadPacket: c[1].Load(), TableFull: c[2].Load(), Fragment: c[3].Load()}
	}
	return Stats{
		Enabled:       rs.enabled,
		Generation:    rs.gen,
		InboundRules:  rules(&rs.in),
		OutboundRules: rules(&rs.out),
		Flows:         f.ct.len(),
		MaxFlows:      rs.perShard * len(f.ct.shards),
		NewFlows:      f.newFlows.Load(),
		Expired:       f.expired.Load(),
		Evicted:       f.evicted.Load(),
		Revoked:       f.revoked.Load(),
		Inbound:       drops(dirIn),
		Outbound:      drops(dirOut),
	}
}
