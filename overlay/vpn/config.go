package vpn

import (
	"errors"
	"fmt"
	"time"

	"github.com/miekg/dns"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security/record"
)

// Config tunes the VPN. Every field has a default (Default); the YAML keys
// are the mapstructure names under `vpn:`.
type Config struct {
	// ShortcutPackets: a peer we send at least this many packets per second
	// to (over a routed pipe or a link kept for something else) gets a
	// direct shortcut link. 0 turns shortcuts off.
	ShortcutPackets int `mapstructure:"shortcut_packets"`
	// ShortcutIdle: a shortcut that carried no packet either way for this
	// long is released (the link closes unless the ring keeps it).
	ShortcutIdle time.Duration `mapstructure:"shortcut_idle"`
	// MaxShortcuts bounds the shortcut links this member asks for.
	MaxShortcuts int `mapstructure:"max_shortcuts"`
	// CacheTTL: how long a virtual IP's owner, found in the DHT, is used
	// before it is looked up again (the old answer serves meanwhile).
	CacheTTL time.Duration `mapstructure:"cache_ttl"`
	// NegativeTTL: how long a virtual IP that no member claims is not
	// looked up again; packets to it are dropped meanwhile.
	NegativeTTL time.Duration `mapstructure:"negative_ttl"`
	// ResolveTimeout bounds one DHT lookup of a virtual IP.
	ResolveTimeout time.Duration `mapstructure:"resolve_timeout"`
	// OpenTimeout bounds opening an end-to-end session over a routed pipe.
	OpenTimeout time.Duration `mapstructure:"open_timeout"`
	// QueueLen: packets held per destination while its owner is looked up
	// or its session opens; more are dropped and counted.
	QueueLen int `mapstructure:"queue_len"`
	// RecordTTL: this member's virtual-IP records in the DHT live this
	// long and are renewed at a third of it.
	RecordTTL time.Duration `mapstructure:"record_ttl"`
	// LeaseTTL: an address leased from a pool (a certificate whose IP is
	// a network address, like 10.20.0.0/16) is held for this long in the
	// DHT and renewed at a third of it; a member that stops lets it
	// expire, and the address is free again after at most this long.
	LeaseTTL time.Duration `mapstructure:"lease_ttl"`
	// DNS is the name responder on the member's virtual IPs.
	DNS DNSConfig `mapstructure:"dns"`
	// MaxPeers bounds the members this one keeps state for (mappings,
	// sessions); the longest idle are forgotten first.
	MaxPeers int `mapstructure:"max_peers"`
	// BroadcastRate bounds the IPv4 broadcasts per second this member
	// sends over the ring (each is signed, and checked by every member);
	// more are dropped. 0 keeps broadcasts off the ring.
	BroadcastRate int `mapstructure:"broadcast_rate"`
	// Firewall filters the packets exchanged with other members: stateful
	// rules by group, member name, address, protocol and port (see package
	// firewall). Without inbound and outbound lists, the default, it is
	// off and everything passes.
	Firewall firewall.Config `mapstructure:"firewall"`
}

// DNSConfig sets the DNS responder that answers for the group's
// members: `<member name>.<domain>` resolves to the virtual IPs the member
// published (fixed or leased). It listens on port 53 (UDP and TCP) of the
// member's own virtual IPs only, answers A and AAAA records of its zone
// (NXDOMAIN for unknown names), refuses every other zone and never
// recurses.
type DNSConfig struct {
	// Enabled runs the responder and publishes this member's name record.
	Enabled bool `mapstructure:"enabled"`
	// Domain is the group's zone, like "ringvpn." or "corp.example.".
	Domain string `mapstructure:"domain"`
	// TTL is the time to live of the answers.
	TTL time.Duration `mapstructure:"ttl"`
	// MaxInFlight bounds the DHT lookups the responder runs at once;
	// queries beyond it are answered SERVFAIL at once.
	MaxInFlight int `mapstructure:"max_in_flight"`
}

// MaxBroadcastRate is what the ring's broadcast passes from one member.
const MaxBroadcastRate = 20

// Default returns the defaults.
func Default() Config {
	return Config{
		ShortcutPackets: 50,
		ShortcutIdle:    2 * time.Minute,
		MaxShortcuts:    64,
		CacheTTL:        time.Minute,
		NegativeTTL:     3 * time.Second,
		ResolveTimeout:  5 * time.Second,
		OpenTimeout:     10 * time.Second,
		QueueLen:        64,
		RecordTTL:       30 * time.Minute,
		LeaseTTL:        2 * time.Minute,
		DNS:             DNSConfig{Enabled: true, Domain: "ringvpn.", TTL: 30 * time.Second, MaxInFlight: 32},
		MaxPeers:        4096,
		BroadcastRate:   20,
		Firewall:        firewall.Default(),
	}
}

// Validate reports every invalid field, naming its key.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	between := func(key string, d, lo, hi time.Duration) {
		check(d >= lo && d <= hi, "vpn.%s: %v not in [%v,%v]", key, d, lo, hi)
	}
	check(c.ShortcutPackets >= 0 && c.ShortcutPackets <= 1_000_000, "vpn.shortcut_packets: %d not in [0,1000000] (0 turns shortcuts off)", c.ShortcutPackets)
	between("shortcut_idle", c.ShortcutIdle, time.Second, 24*time.Hour)
	check(c.MaxShortcuts >= 0 && c.MaxShortcuts <= 4096, "vpn.max_shortcuts: %d not in [0,4096]", c.MaxShortcuts)
	between("cache_ttl", c.CacheTTL, time.Second, 24*time.Hour)
	between("negative_ttl", c.NegativeTTL, 0, time.Hour)
	between("resolve_timeout", c.ResolveTimeout, 100*time.Millisecond, time.Minute)
	between("open_timeout", c.OpenTimeout, 100*time.Millisecond, time.Minute)
	check(c.QueueLen >= 1 && c.QueueLen <= 4096, "vpn.queue_len: %d not in [1,4096]", c.QueueLen)
	between("record_ttl", c.RecordTTL, 10*time.Second, 24*time.Hour)
	between("lease_ttl", c.LeaseTTL, 10*time.Second, 24*time.Hour)
	if _, ok := dns.IsDomainName(c.DNS.Domain); !ok || c.DNS.Domain == "" || c.DNS.Domain == "." {
		errs = append(errs, fmt.Errorf("vpn.dns.domain: %q is not a domain name; use one like \"ringvpn.\"", c.DNS.Domain))
	}
	between("dns.ttl", c.DNS.TTL, 0, 24*time.Hour)
	check(c.DNS.MaxInFlight >= 1 && c.DNS.MaxInFlight <= 1024, "vpn.dns.max_in_flight: %d not in [1,1024]", c.DNS.MaxInFlight)
	check(c.MaxPeers >= 16 && c.MaxPeers <= 1_000_000, "vpn.max_peers: %d not in [16,1000000]", c.MaxPeers)
	check(c.BroadcastRate >= 0 && c.BroadcastRate <= MaxBroadcastRate, "vpn.broadcast_rate: %d not in [0,%d] (the ring passes at most %d broadcasts a second from one member)", c.BroadcastRate, MaxBroadcastRate, MaxBroadcastRate)
	// Its messages name its keys in full (vpn.firewall.inbound[2].port).
	if err := c.Firewall.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Interface MTUs. A frame (14 bytes of Ethernet header, then an IP packet
// of up to the MTU) crosses the underlay network in one UDP datagram:
// on a direct link inside a sealed record; through a routed pipe inside a
// sealed record carrying a routed message (with a relay address) carrying
// the pipe header and the end-to-end session's own sealed record.
const (
	ethernetHeaderLen = 14
	underlayHeaders   = 40 + 8 // IPv6 and UDP
	pipeOverhead      = record.Overhead + overlay.HeaderLen + overlay.ViaLen + overlay.PipeHeaderLen +
		record.Overhead + headroom + ethernetHeaderLen
	// DefaultMTU fits every path through a 1500-byte underlay (IPv6) with
	// no fragmentation.
	DefaultMTU = 1500 - underlayHeaders - pipeOverhead
	// MinMTU is IPv4's minimum; IPv6 needs 1280.
	MinMTU = 576
	// MaxMTU is the largest packet a routed pipe carries; above the
	// underlay's own MTU, the underlay fragments.
	MaxMTU = overlay.MaxPipePayload - headroom - ethernetHeaderLen
)
