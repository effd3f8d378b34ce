package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is the `vpn.firewall` section. Its zero value, like Default, has
// no rule lists: the firewall is off and every packet passes.
type Config struct {
	// Inbound lists what peers may start with this member; Outbound what
	// this member may start with peers. A list that is absent (nil: no
	// key, or a key with no value) lets everything through that way; a
	// list that is present, even empty ([]), lets through only what its
	// rules allow, plus the replies of flows allowed the other way.
	Inbound  []Rule `mapstructure:"inbound" yaml:"inbound,omitempty"`
	Outbound []Rule `mapstructure:"outbound" yaml:"outbound,omitempty"`
	// Conntrack bounds and times the flow table.
	Conntrack Conntrack `mapstructure:"conntrack" yaml:"conntrack"`
}

// Conntrack configures the table of flows (connection tracking).
type Conntrack struct {
	// TCPTimeout: an answered TCP flow with no packet for this long is
	// forgotten. (A TCP flow not yet answered is forgotten after at most
	// 2m idle, a closed one, after a RST or a FIN each way, after at most
	// 30s.)
	TCPTimeout time.Duration `mapstructure:"tcp_timeout" yaml:"tcp_timeout"`
	// UDPTimeout: a UDP flow with no packet for this long is forgotten.
	UDPTimeout time.Duration `mapstructure:"udp_timeout" yaml:"udp_timeout"`
	// DefaultTimeout: the same for ICMP echo and every other protocol.
	DefaultTimeout time.Duration `mapstructure:"default_timeout" yaml:"default_timeout"`
	// MaxEntries bounds the flows tracked at once (about 150 bytes each).
	// When the table is full, a new flow takes the place of a flow that
	// is closed or was never answered; if there is none, the new flow's
	// packet is dropped and counted (table_full).
	MaxEntries int `mapstructure:"max_entries" yaml:"max_entries"`
}

// Rule allows one kind of flow. A packet matches a rule when every field
// set in the rule matches (port AND proto AND host AND group AND groups
// AND cidr AND local_cidr AND ca_name); "any", or leaving a selector out,
// matches everything.
type Rule struct {
	// Port is the destination port of the packet that starts the flow:
	// the local port inbound, the remote port outbound. "80", a range
	// "1000-2000", or "any". A rule with a port matches TCP and UDP only.
	// Required.
	Port string `mapstructure:"port" yaml:"port"`
	// Proto is any, tcp, udp or icmp (icmp covers ICMPv6 too). Required.
	Proto string `mapstructure:"proto" yaml:"proto"`
	// Host is the peer's member name (the Subject CN of its
	// certificate), or any.
	Host string `mapstructure:"host" yaml:"host,omitempty"`
	// Group is a group the peer's certificate must carry, or any.
	Group string `mapstructure:"group" yaml:"group,omitempty"`
	// Groups are groups the peer's certificate must all carry.
	Groups []string `mapstructure:"groups" yaml:"groups,omitempty"`
	// CIDR holds the peer's address as the packet carries it (the
	// remote address: source inbound, destination outbound): a prefix
	// like 10.20.0.0/16, an address (one host), or any. 0.0.0.0/0 is
	// every IPv4 address, ::/0 every IPv6 one.
	CIDR string `mapstructure:"cidr" yaml:"cidr,omitempty"`
	// LocalCIDR holds this member's side of the packet (the destination
	// inbound, the source outbound); same syntax as CIDR. Useful on a
	// router member, whose site subnets are local too.
	LocalCIDR string `mapstructure:"local_cidr" yaml:"local_cidr,omitempty"`
	// CAName is the name of the CA that issued the peer's certificate, or
	// any.
	CAName string `mapstructure:"ca_name" yaml:"ca_name,omitempty"`
}

// Key is where the section sits in the configuration file; errors name
// keys under it, like vpn.firewall.inbound[2].port.
const Key = "vpn.firewall"

// Default returns the defaults: no rule lists (the firewall is off) and
// the conntrack settings used once rules are given.
func Default() Config {
	return Config{Conntrack: Conntrack{
		TCPTimeout:     DefaultTCPTimeout,
		UDPTimeout:     DefaultUDPTimeout,
		DefaultTimeout: DefaultOtherTimeout,
		MaxEntries:     DefaultMaxEntries,
	}}
}

// Conntrack defaults; see the package documentation for the reasons.
const (
	DefaultTCPTimeout   = 2*time.Hour + 30*time.Minute
	DefaultUDPTimeout   = 3 * time.Minute
	DefaultOtherTimeout = 10 * time.Minute
	DefaultMaxEntries   = 65536
)

// Fixed timeouts of TCP flows outside the established state, capped by
// tcp_timeout.
const (
	tcpUnansweredTimeout = 2 * time.Minute
	tcpClosedTimeout     = 30 * time.Second
)

// Bounds checked by Validate.
const (
	MinEntries = 64
	MaxEntries = 1 << 22
	// MaxRules bounds each list: rules are tried in turn for the first
	// packet of every flow.
	MaxRules = 1024
)

// Enabled reports whether the configuration filters anything: whether
// either rule list is present.
func (c Config) Enabled() bool { return c.Inbound != nil || c.Outbound != nil }

// Validate reports every invalid field, naming its key and the fix.
func (c Config) Validate() error {
	var errs []error
	for _, l := range []struct {
		key   string
		rules []Rule
	}{{Key + ".inbound", c.Inbound}, {Key + ".outbound", c.Outbound}} {
		if len(l.rules) > MaxRules {
			errs = append(errs, fmt.Errorf("%s: %d rules, at most %d are allowed", l.key, len(l.rules), MaxRules))
		}
		for i, r := range l.rules {
			if _, err := compileRule(r, fmt.Sprintf("%s[%d]", l.key, i)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, c.Conntrack.validate()...)
	return errors.Join(errs...)
}

func (c Conntrack) validate() []error {
	var errs []error
	between := func(key string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			errs = append(errs, fmt.Errorf("%s.conntrack.%s: %v not in [%v,%v]", Key, key, d, lo, hi))
		}
	}
	between("tcp_timeout", c.TCPTimeout, time.Minute, 5*24*time.Hour)
	between("udp_timeout", c.UDPTimeout, 5*time.Second, 24*time.Hour)
	between("default_timeout", c.DefaultTimeout, 5*time.Second, 24*time.Hour)
	if c.MaxEntries < MinEntries || c.MaxEntries > MaxEntries {
		errs = append(errs, fmt.Errorf("%s.conntrack.max_entries: %d not in [%d,%d]", Key, c.MaxEntries, MinEntries, MaxEntries))
	}
	return errs
}

// Protocol classes: the rules of a table are kept per class.
const (
	classTCP = iota
	classUDP
	classICMP
	classOther
	numClasses
)

// compileRule checks r and returns its compiled form; key names it in
// errors, like vpn.firewall.inbound[2].
func compileRule(r Rule, key string) (rule, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, field, fmt.Sprintf(format, args...)))
	}
	var c rule
	var err error

	proto := strings.ToLower(strings.TrimSpace(r.Proto))
	switch proto {
	case "any":
		c.classes = 1<<classTCP | 1<<classUDP | 1<<classICMP | 1<<classOther
	case "tcp":
		c.classes = 1 << classTCP
	case "udp":
		c.classes = 1 << classUDP
	case "icmp":
		c.classes = 1 << classICMP
	case "":
		fail("proto", "missing; use any, tcp, udp or icmp")
	default:
		fail("proto", "%q is not a protocol; use any, tcp, udp or icmp (icmp covers ICMPv6 too)", r.Proto)
	}

	c.lo, c.hi, err = parsePort(r.Port)
	switch {
	case err != nil:
		fail("port", "%v", err)
	case proto == "icmp" && (c.lo != 0 || c.hi != 65535):
		fail("port", "%q, but icmp has no ports; use any", r.Port)
	}
	c.anyPort = c.lo == 0 && c.hi == 65535

	host := strings.TrimSpace(r.Host)
	if host != "" && host != "any" {
		if err := checkName("member name", host); err != nil {
			fail("host", "%v", err)
		}
		c.host = host
	}
	group := strings.TrimSpace(r.Group)
	if group != "" && group != "any" {
		if err := checkName("group name", group); err != nil {
			fail("group", "%v", err)
		}
		c.groups = append(c.groups, group)
	}
	for i, g := range r.Groups {
		g = strings.TrimSpace(g)
		field := fmt.Sprintf("groups[%d]", i)
		if g == "any" {
			fail(field, "\"any\" in a list of groups that must all match means nothing; remove it, or use host: any")
			continue
		}
		if err := checkName("group name", g); err != nil {
			fail(field, "%v", err)
			continue
		}
		c.groups = append(c.groups, g)
	}
	caName := strings.TrimSpace(r.CAName)
	if caName != "any" {
		c.caName = caName
	}
	if c.cidr, err = parseCIDR(r.CIDR); err != nil {
		fail("cidr", "%v", err)
	}
	if c.local, err = parseCIDR(r.LocalCIDR); err != nil {
		fail("local_cidr", "%v", err)
	}
	if host == "" && group == "" && len(r.Groups) == 0 && strings.TrimSpace(r.CIDR) == "" && caName == "" {
		errs = append(errs, fmt.Errorf("%s: names no peer; add host: any for every member, or a host, group, groups, cidr or ca_name", key))
	}
	return c, errors.Join(errs...)
}

// parsePort parses a rule's port: "80", "1000-2000" or "any" (any is
// 0-65535). Spaces around the numbers are ignored.
func parsePort(s string) (lo, hi uint16, err error) {
	s = strings.TrimSpace(s)
	const use = "use 80, 1000-2000 or any"
	switch s {
	case "":
		return 0, 0, errors.New("missing; " + use)
	case "any":
		return 0, 65535, nil
	case "fragment":
		return 0, 0, errors.New(`"fragment" is not needed: a later fragment passes with the first fragment of its packet; ` + use)
	}
	a, b, isRange := strings.Cut(s, "-")
	p, errA := parsePortNumber(a)
	q, errB := p, errA
	if isRange {
		q, errB = parsePortNumber(b)
	}
	if errA != nil || errB != nil {
		return 0, 0, fmt.Errorf("%q is not a port or range; %s", s, use)
	}
	if p == 0 || q == 0 {
		return 0, 0, fmt.Errorf("%q: port 0 is not a port; ports run from 1 to 65535, or use any", s)
	}
	if p > q {
		return 0, 0, fmt.Errorf("%q: the range runs backwards; write %d-%d", s, q, p)
	}
	return p, q, nil
}

// parsePortNumber parses a decimal port, 0 to 65535, digits only.
func parsePortNumber(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

// parseCIDR parses a rule's cidr or local_cidr: "", "any", an address or a
// masked prefix. "" and "any" give the zero Prefix, which matches all.
func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "any" {
		return netip.Prefix{}, nil
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix; use one like 10.20.0.0/16, fd00::/64, 10.20.0.5 or any", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix; use one like 10.20.0.0/16, fd00::/64, 10.20.0.5 or any", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4 prefixes in IPv4 form, like 10.20.0.0/16", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set past the prefix length; write %s for the network, or %s for the one address", s, m, p.Addr())
	}
	return p, nil
}

// checkName checks a member or group name as certificates carry them
// (security.MemberSpec): 1 to 64 letters, digits, '.', '-' or '_',
// starting with a letter or digit.
func checkName(what, s string) error {
	if len(s) > 64 {
		return fmt.Errorf("%s %q is %d bytes long; names have at most 64", what, s, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '-' || c == '_') && i > 0:
		default:
			return fmt.Errorf("%q is not a %s: names are letters, digits, '.', '-' and '_', starting with a letter or digit", s, what)
		}
	}
	return nil
}
