package netnstest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// NAT is what a site's router does to the traffic that leaves the site.
type NAT int

const (
	// Route is plain routing: no translation, no filtering. The site's
	// prefix is routed to its router on the public segment, so its hosts
	// are reachable from everywhere; the case to compare NATs against.
	Route NAT = iota

	// Cone is a masquerade with a stateful filter, the "cone-like" NAT of
	// home routers (RFC 4787: endpoint-independent mapping,
	// address-and-port-dependent filtering), which hole punching gets
	// through.
	//
	// Linux keeps no NAT table of its own: a mapping is a property of each
	// conntrack entry, that is of each 5-tuple. For a new flow from a
	// source address and port, masquerade (get_unique_tuple) reuses the
	// external port of an entry that still exists for that same source,
	// whatever its destination (find_appropriate_src); failing that, it
	// keeps the source port if no entry's reply tuple clashes
	// (nf_nat_used_tuple); failing that, it picks a random free port. So a
	// socket gets one external port towards every destination, usually its
	// own port: a cone, as long as one of its flows is tracked (UDP
	// entries expire after 30s without a reply, 120s once both sides have
	// spoken). A second site host on the same port gets a random one.
	//
	// The filter drops, in the forward and the input chain alike, what
	// does not belong to a flow opened from inside (ct state
	// established,related). Dropping in input matters for hole punching: a
	// peer's early packet that reached the router before the site host's
	// own would otherwise be confirmed as an entry, whose reply tuple
	// would then push the site host's flow onto another port. A dropped
	// packet leaves no entry.
	Cone

	// Symmetric is a masquerade with fully-random port selection and the
	// same filter as Cone: every new flow, so every destination, gets its
	// own random external port (endpoint-dependent mapping), which defeats
	// hole punching; a relay is needed. Ports are drawn from
	// 32768-65535, and from 1024-32767 after an odd number of Rebinds.
	Symmetric
)

func (n NAT) String() string {
	switch n {
	case Route:
		return "route"
	case Cone:
		return "cone"
	case Symmetric:
		return "symmetric"
	}
	return fmt.Sprintf("NAT(%d)", int(n))
}

// SiteSpec describes one site of a NATLab.
type SiteSpec struct {
	NAT   NAT
	Hosts int // hosts inside the site, 0 to 253
}

// Limits of a NATLab, from its addressing.
const (
	MaxPublicHosts = 100 // 203.0.113.1-100
	MaxSites       = 50  // routers 203.0.113.101-150, sites 10.1-50.0.0/24
)

// Interface names in a router's namespace: wan on the public segment, lan
// on the site's bridge.
const (
	wanDev = "wan"
	lanDev = "lan"
)

// publicNet is the public segment's prefix (TEST-NET-3, RFC 5737). Every
// NATLab uses it: labs are isolated from each other.
var publicNet = netip.MustParsePrefix("203.0.113.0/24")

// NATLab is a public segment with hosts on it (a bootstrap member, a
// reflector) and sites behind routers that may NAT. Each segment is a
// bridge in a namespace of its own, as in Lab; a router is a namespace with
// a leg on the public bridge and one on its site's bridge.
//
//	public host i      203.0.113.<i+1>/24
//	site k's router    203.0.113.<101+k>/24 (wan), 10.<k+1>.0.1/24 (lan)
//	site k's host i    10.<k+1>.0.<i+2>/24, default route via 10.<k+1>.0.1
//
// Public hosts have no default route, and nothing routes to a NAT site's
// prefix: its hosts are reachable only through their router's mappings.
// Route sites' prefixes are routed to their router on every public host
// and router. There is no hairpinning: two hosts of one site do not reach
// each other through their router's public address.
//
// A NATLab is removed by the Cleanup of the test that made it; when the
// test has failed, Cleanup first logs each router's ruleset (with drop
// counters) and conntrack table.
type NATLab struct {
	// immutable after NewNATLab
	t      testing.TB
	name   string // "rvt<pid>-<seq>": every namespace's name starts with it
	bridge string // the public segment's namespace
	public []*Host
	sites  []*Site
}

// Site is a router and the hosts behind it.
type Site struct {
	// immutable after NewNATLab
	NAT    NAT
	Router *Host        // its Underlay is the public address (on wan)
	Inside netip.Addr   // the router's address in the site: the hosts' gateway
	Prefix netip.Prefix // the site's subnet, 10.<k+1>.0.0/24
	Hosts  []*Host      // their Underlay is their address in Prefix
	bridge string       // the site segment's namespace

	// mu guards the following
	mu  sync.Mutex
	gen int // Rebinds so far
}

// NewNATLab builds a public segment of public hosts (0 to MaxPublicHosts)
// and the sites (up to MaxSites), and registers their removal with
// t.Cleanup. It calls RequireNAT, so it skips t where that skips. Like
// New, it first sweeps away what crashed earlier runs left.
func NewNATLab(t testing.TB, public int, sites ...SiteSpec) *NATLab {
	t.Helper()
	RequireNAT(t)
	if public < 0 || public > MaxPublicHosts {
		t.Fatalf("netnstest.NewNATLab: %d public hosts not in [0,%d]", public, MaxPublicHosts)
	}
	if len(sites) > MaxSites {
		t.Fatalf("netnstest.NewNATLab: %d sites, more than %d", len(sites), MaxSites)
	}
	for k, s := range sites {
		if s.Hosts < 0 || s.Hosts > 253 {
			t.Fatalf("netnstest.NewNATLab: site %d: %d hosts not in [0,253]", k+1, s.Hosts)
		}
		if s.NAT < Route || s.NAT > Symmetric {
			t.Fatalf("netnstest.NewNATLab: site %d: unknown %v", k+1, s.NAT)
		}
	}
	if err := Sweep(); err != nil {
		t.Logf("netnstest: sweeping leftovers: %v", err)
	}
	name := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), labSeq.Add(1))
	l := &NATLab{t: t, name: name, bridge: name + "pub"}
	pub := publicNet.Addr().As4()
	for i := range public {
		a := pub
		a[3] = byte(i + 1)
		l.public = append(l.public, &Host{Name: fmt.Sprintf("%sp%d", name, i+1), Underlay: netip.AddrFrom4(a)})
	}
	for k, spec := range sites {
		a := pub
		a[3] = byte(101 + k)
		s := &Site{
			NAT:    spec.NAT,
			Router: &Host{Name: fmt.Sprintf("%ss%dr", name, k+1), Underlay: netip.AddrFrom4(a)},
			Inside: netip.AddrFrom4([4]byte{10, byte(k + 1), 0, 1}),
			Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k + 1), 0, 0}), 24),
			bridge: fmt.Sprintf("%ss%dbr", name, k+1),
		}
		for i := range spec.Hosts {
			s.Hosts = append(s.Hosts, &Host{
				Name:     fmt.Sprintf("%ss%dh%d", name, k+1, i+1),
				Underlay: netip.AddrFrom4([4]byte{10, byte(k + 1), 0, byte(i + 2)}),
			})
		}
		l.sites = append(l.sites, s)
	}
	// Registered before anything exists, so a half-built lab is removed too.
	t.Cleanup(l.remove)
	if err := l.build(); err != nil {
		t.Fatalf("netnstest: building NAT lab %s: %v", name, err)
	}
	return l
}

// Public returns the hosts of the public segment; host i has 203.0.113.<i+1>.
func (l *NATLab) Public() []*Host { return l.public }

// Sites returns the sites in the order given to NewNATLab.
func (l *NATLab) Sites() []*Site { return l.sites }

// PublicPrefix returns the public segment's prefix, 203.0.113.0/24.
func (l *NATLab) PublicPrefix() netip.Prefix { return publicNet }

// Namespaces returns the names of every namespace of the lab: hosts and
// routers first, bridges last.
func (l *NATLab) Namespaces() []string {
	var names []string
	for _, h := range l.public {
		names = append(names, h.Name)
	}
	for _, s := range l.sites {
		for _, h := range s.Hosts {
			names = append(names, h.Name)
		}
		names = append(names, s.Router.Name)
	}
	for _, s := range l.sites {
		names = append(names, s.bridge)
	}
	return append(names, l.bridge)
}

func (l *NATLab) build() error {
	var cmds [][]string
	// Namespaces first, then the links between them.
	for _, ns := range l.Namespaces() {
		cmds = append(cmds, []string{"netns", "add", ns}, []string{"-n", ns, "link", "set", "lo", "up"})
	}
	cmds = append(cmds, bridgeCmds(l.bridge)...)
	for _, s := range l.sites {
		cmds = append(cmds, bridgeCmds(s.bridge)...)
	}
	plen := publicNet.Bits()
	for i, h := range l.public {
		cmds = append(cmds, legCmds(l.bridge, fmt.Sprintf("p%d", i+1), h.Name, Dev, netip.PrefixFrom(h.Underlay, plen))...)
	}
	for k, s := range l.sites {
		r := s.Router.Name
		cmds = append(cmds, legCmds(l.bridge, fmt.Sprintf("s%d", k+1), r, wanDev, netip.PrefixFrom(s.Router.Underlay, plen))...)
		cmds = append(cmds, legCmds(s.bridge, "r", r, lanDev, netip.PrefixFrom(s.Inside, s.Prefix.Bits()))...)
		for i, h := range s.Hosts {
			cmds = append(cmds, legCmds(s.bridge, fmt.Sprintf("h%d", i+1), h.Name, Dev, netip.PrefixFrom(h.Underlay, s.Prefix.Bits()))...)
			cmds = append(cmds, []string{"-n", h.Name, "route", "add", "default", "via", s.Inside.String()})
		}
	}
	// Route sites are reachable from the whole public segment.
	for _, s := range l.sites {
		if s.NAT != Route {
			continue
		}
		via := s.Router.Underlay.String()
		for _, h := range l.public {
			cmds = append(cmds, []string{"-n", h.Name, "route", "add", s.Prefix.String(), "via", via})
		}
		for _, o := range l.sites {
			if o != s {
				cmds = append(cmds, []string{"-n", o.Router.Name, "route", "add", s.Prefix.String(), "via", via})
			}
		}
	}
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range l.sites {
		if err := s.Router.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) // this thread's namespace
		}); err != nil {
			return fmt.Errorf("%s: enabling forwarding: %w", s.Router.Name, err)
		}
		if s.NAT == Route {
			continue
		}
		if err := s.nft(ctx, s.ruleset(0)); err != nil {
			return err
		}
	}
	return nil
}

// bridgeCmds adds bridge br0, up, to namespace ns.
func bridgeCmds(ns string) [][]string {
	return [][]string{
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "link", "set", "br0", "up"},
	}
}

// legCmds joins namespace ns to the bridge in namespace bridge by a veth
// pair: port on the bridge's side, dev with address addr on ns's side.
func legCmds(bridge, port, ns, dev string, addr netip.Prefix) [][]string {
	return [][]string{
		{"-n", bridge, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns},
		{"-n", bridge, "link", "set", port, "master", "br0", "up"},
		{"-n", ns, "addr", "add", addr.String(), "dev", dev},
		{"-n", ns, "link", "set", dev, "up"},
	}
}

// remove logs the routers' state if the test failed, kills every process
// left in the lab's namespaces and deletes them; it reports failures with
// t.Errorf.
func (l *NATLab) remove() {
	if l.t.Failed() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range l.sites {
			l.t.Logf("netnstest: %s", s.state(ctx))
		}
	}
	for _, ns := range l.Namespaces() {
		if err := deleteNamespace(ns); err != nil {
			l.t.Errorf("netnstest: removing namespace %s: %v", ns, err)
		}
	}
}

// nftTable is the name of the table a router's rules live in.
const nftTable = "rvnat"

// ruleset returns the nft script that sets the router's rules for
// generation gen (the number of Rebinds so far), replacing what was there.
// The script runs as one transaction, so no packet sees half of it.
func (s *Site) ruleset(gen int) string {
	src := s.Prefix.String()
	var nat strings.Builder
	switch s.NAT {
	case Cone:
		if gen > 0 {
			for i, h := range s.Hosts {
				fmt.Fprintf(&nat, "\t\toifname %q ip saddr %s meta l4proto { tcp, udp } masquerade to :th sport ^ %d\n", wanDev, h.Underlay, coneKey(gen, i))
			}
		}
		fmt.Fprintf(&nat, "\t\toifname %q ip saddr %s masquerade\n", wanDev, src)
	case Symmetric:
		ports := "32768-65535"
		if gen%2 == 1 {
			ports = "1024-32767"
		}
		fmt.Fprintf(&nat, "\t\toifname %q ip saddr %s meta l4proto { tcp, udp } masquerade to :%s fully-random\n", wanDev, src, ports)
		fmt.Fprintf(&nat, "\t\toifname %q ip saddr %s masquerade fully-random\n", wanDev, src)
	}
	// "add table" then "delete table" makes the script work whether or not
	// the table exists yet.
	return fmt.Sprintf(`add table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
%[2]s	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname %[3]q oifname %[4]q accept
		counter comment "unsolicited, dropped"
	}
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname { "lo", %[3]q } accept
		icmp type echo-request accept
		counter comment "unsolicited, dropped"
	}
}
`, nftTable, nat.String(), lanDev, wanDev)
}

// coneKey is what a Cone router XORs into the ports of site host i after
// its gen-th Rebind (gen ≥ 1). It is in [1,1023], so a port ≥ 1024 stays
// ≥ 1024 and one ≥ 32768 stays ≥ 32768; it differs from one Rebind to the
// next, and between the site's hosts (so hosts using the same port still
// get different external ports).
func coneKey(gen, i int) int { return (253*gen+i)%1023 + 1 }

// MappedPort returns the external port that the site's router gives to
// new flows from port p of host i while it is not clashing with another
// flow: p itself for a Cone site before any Rebind, p XOR a key after. For
// Symmetric sites (random) and Route sites (no NAT) it returns p and
// false.
func (s *Site) MappedPort(i int, p uint16) (uint16, bool) {
	if s.NAT != Cone {
		return p, false
	}
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	if gen == 0 {
		return p, true
	}
	return p ^ uint16(coneKey(gen, i)), true
}

// Flush deletes every entry of the router's conntrack table, which holds
// its NAT mappings, as a NAT that forgets its state does (a reboot, an
// expired timer). Packets of flows that were open create new entries:
// those from the site get new mappings; a TCP flow is picked up mid-stream
// (nf_conntrack_tcp_loose, on by default) and goes on if its mapping comes
// out the same; what arrives from outside first is dropped by the filter.
//
// With a Cone site the new mappings mostly DO come out the same: a host
// whose port was kept gets it again, since masquerade keeps a free source
// port and a flush frees them all (only a host that had been given a
// random port, after a clash, gets another). Symmetric sites draw new
// random ports, which may by chance equal the old. To make the external
// ports change for sure, use Rebind.
func (s *Site) Flush() error {
	if err := s.Router.Do(flushConntrack); err != nil {
		return fmt.Errorf("%s: flushing conntrack: %w", s.Router.Name, err)
	}
	return nil
}

// Rebind makes the NAT give new external ports to every flow, as a NAT
// that loses its mappings and hands out different ports does, and then
// Flushes the mappings. A Cone site stays a cone: site host i's port p
// maps to p XOR a key that changes with each Rebind (see MappedPort), the
// same towards every destination. A Symmetric site switches its port range
// between 32768-65535 and 1024-32767, so no new port equals an old one.
// A Route site has no mappings: Rebind returns an error.
//
// A rebound Cone maps each port to one port with no check for clashes: if
// two site hosts' ports map to the same external port and talk to the
// same destination, the second flow's packets are dropped. Hosts on the
// same port never clash (their keys differ); random ports, 1 in 65536.
func (s *Site) Rebind(ctx context.Context) error {
	if s.NAT == Route {
		return fmt.Errorf("%s: rebind: a route site has no NAT", s.Router.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// New rules first: a flow that sends between the two steps keeps its
	// old mapping until the flush.
	if err := s.nft(ctx, s.ruleset(s.gen+1)); err != nil {
		return err
	}
	s.gen++
	return s.Flush()
}

// ConntrackCount returns the number of entries in the router's conntrack
// table.
func (s *Site) ConntrackCount() (int, error) {
	var n int
	err := s.Router.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count") // of this thread's namespace
		if err != nil {
			return err
		}
		_, err = fmt.Sscan(string(b), &n)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: conntrack count: %w", s.Router.Name, err)
	}
	return n, nil
}

// Conntrack returns the router's conntrack table, one entry a line, as
// /proc/net/nf_conntrack shows it (a kernel built without
// CONFIG_NF_CONNTRACK_PROCFS lacks it: then the error says so). Each line
// holds the original tuple (as the site host sent it) and the reply tuple,
// whose destination is the external address and port of the mapping.
func (s *Site) Conntrack() (string, error) {
	var b []byte
	err := s.Router.Do(func() error {
		var err error
		// /proc/net would be the namespace of the process's main thread.
		b, err = os.ReadFile("/proc/thread-self/net/nf_conntrack")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s: conntrack table: %w", s.Router.Name, err)
	}
	return string(b), nil
}

// state describes the router for a failed test's log: its ruleset with
// the drop counters, and its conntrack table.
func (s *Site) state(ctx context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "site %v (%v, router %s, public %v)", s.Prefix, s.NAT, s.Router.Name, s.Router.Underlay)
	if s.NAT == Route {
		return b.String()
	}
	out, err := s.Router.Run(ctx, nftPath(), "list", "table", "ip", nftTable)
	if err != nil {
		fmt.Fprintf(&b, "\nruleset: %v\n", err)
	} else {
		fmt.Fprintf(&b, ":\n%s\n", bytes.TrimSpace(out))
	}
	ct, err := s.Conntrack()
	if err != nil {
		ct = err.Error()
	}
	fmt.Fprintf(&b, "conntrack:\n%s", ct)
	return b.String()
}

// nft runs an nft script in the router's namespace.
func (s *Site) nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", s.Router.Name, nftPath(), "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft: %w: %s\nscript:\n%s", s.Router.Name, err, bytes.TrimSpace(out), script)
	}
	return nil
}

// nftPath returns the nft command found (or installed) by RequireNAT.
func nftPath() string {
	if p, err := nftOnce(); err == nil {
		return p
	}
	return "nft"
}
