package firewall

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/viper"
)

func TestDefault_Valid(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Enabled() {
		t.Error("the default is enabled, want off")
	}
}

// TestConfig_Validate: each mistake is reported with its key path and
// the fix, exactly.
func TestConfig_Validate(t *testing.T) {
	ok := Rule{Port: "80", Proto: "tcp", Group: "web"}
	with := func(f func(r *Rule)) []Rule {
		r := ok
		f(&r)
		return []Rule{ok, ok, r}
	}
	tests := []struct {
		name string
		cfg  func(c *Config)
		want []string // every line of the error
	}{
		{"valid", func(c *Config) { c.Inbound = []Rule{ok}; c.Outbound = []Rule{anyHost} }, nil},
		{"empty lists", func(c *Config) { c.Inbound, c.Outbound = []Rule{}, []Rule{} }, nil},
		{"open port", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Port = "80-" }) },
			[]string{`vpn.firewall.inbound[2].port: "80-" is not a port or range; use 80, 1000-2000 or any`}},
		{"missing port", func(c *Config) { c.Outbound = with(func(r *Rule) { r.Port = "" }) },
			[]string{`vpn.firewall.outbound[2].port: missing; use 80, 1000-2000 or any`}},
		{"port 0", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Port = "0" }) },
			[]string{`vpn.firewall.inbound[2].port: "0": port 0 is not a port; ports run from 1 to 65535, or use any`}},
		{"port too big", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Port = "65536" }) },
			[]string{`vpn.firewall.inbound[2].port: "65536" is not a port or range; use 80, 1000-2000 or any`}},
		{"backwards range", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Port = "2000-1000" }) },
			[]string{`vpn.firewall.inbound[2].port: "2000-1000": the range runs backwards; write 1000-2000`}},
		{"fragment", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Port = "fragment" }) },
			[]string{`vpn.firewall.inbound[2].port: "fragment" is not needed: a later fragment passes with the first fragment of its packet; use 80, 1000-2000 or any`}},
		{"proto", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Proto = "gre" }) },
			[]string{`vpn.firewall.inbound[2].proto: "gre" is not a protocol; use any, tcp, udp or icmp (icmp covers ICMPv6 too)`}},
		{"missing proto", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Proto = "" }) },
			[]string{`vpn.firewall.inbound[2].proto: missing; use any, tcp, udp or icmp`}},
		{"icmp port", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Proto = "icmp" }) },
			[]string{`vpn.firewall.inbound[2].port: "80", but icmp has no ports; use any`}},
		{"host", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Host = "web 01" }) },
			[]string{`vpn.firewall.inbound[2].host: "web 01" is not a member name: names are letters, digits, '.', '-' and '_', starting with a letter or digit`}},
		{"group", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Group = "-web" }) },
			[]string{`vpn.firewall.inbound[2].group: "-web" is not a group name: names are letters, digits, '.', '-' and '_', starting with a letter or digit`}},
		{"groups any", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Groups = []string{"ops", "any"} }) },
			[]string{`vpn.firewall.inbound[2].groups[1]: "any" in a list of groups that must all match means nothing; remove it, or use host: any`}},
		{"cidr host bits", func(c *Config) { c.Inbound = with(func(r *Rule) { r.CIDR = "10.20.0.5/16" }) },
			[]string{`vpn.firewall.inbound[2].cidr: "10.20.0.5/16" has bits set past the prefix length; write 10.20.0.0/16 for the network, or 10.20.0.5 for the one address`}},
		{"local cidr", func(c *Config) { c.Inbound = with(func(r *Rule) { r.LocalCIDR = "10.20/16" }) },
			[]string{`vpn.firewall.inbound[2].local_cidr: "10.20/16" is not an address or prefix; use one like 10.20.0.0/16, fd00::/64, 10.20.0.5 or any`}},
		{"no peer", func(c *Config) { c.Inbound = with(func(r *Rule) { r.Group = ""; r.LocalCIDR = "10.20.0.1" }) },
			[]string{`vpn.firewall.inbound[2]: names no peer; add host: any for every member, or a host, group, groups, cidr or ca_name`}},
		{"several", func(c *Config) {
			c.Inbound = with(func(r *Rule) { r.Port = "x"; r.Proto = "sctp" })
			c.Conntrack.TCPTimeout = time.Second
			c.Conntrack.MaxEntries = 10
		}, []string{
			`vpn.firewall.inbound[2].proto: "sctp" is not a protocol; use any, tcp, udp or icmp (icmp covers ICMPv6 too)`,
			`vpn.firewall.inbound[2].port: "x" is not a port or range; use 80, 1000-2000 or any`,
			`vpn.firewall.conntrack.tcp_timeout: 1s not in [1m0s,120h0m0s]`,
			`vpn.firewall.conntrack.max_entries: 10 not in [64,4194304]`,
		}},
		{"timeouts", func(c *Config) { c.Conntrack.UDPTimeout = 0; c.Conntrack.DefaultTimeout = 48 * time.Hour }, []string{
			`vpn.firewall.conntrack.udp_timeout: 0s not in [5s,24h0m0s]`,
			`vpn.firewall.conntrack.default_timeout: 48h0m0s not in [5s,24h0m0s]`,
		}},
		{"too many rules", func(c *Config) { c.Outbound = make([]Rule, MaxRules+1); fill(c.Outbound, anyHost) },
			[]string{`vpn.firewall.outbound: 1025 rules, at most 1024 are allowed`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			tt.cfg(&cfg)
			err := cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
			_, errNew := New(cfg, nil)
			if (err == nil) != (errNew == nil) {
				t.Errorf("Validate: %v, but New: %v", err, errNew)
			}
		})
	}
}

func fill(rs []Rule, r Rule) {
	for i := range rs {
		rs[i] = r
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi uint16
		err    bool
	}{
		{"80", 80, 80, false},
		{" 443 ", 443, 443, false},
		{"1000-2000", 1000, 2000, false},
		{"1000 - 2000", 1000, 2000, false},
		{"1-65535", 1, 65535, false},
		{"any", 0, 65535, false},
		{"22-22", 22, 22, false},
		{"", 0, 0, true},
		{"0", 0, 0, true},
		{"0-80", 0, 0, true},
		{"-80", 0, 0, true},
		{"80-", 0, 0, true},
		{"+80", 0, 0, true},
		{"80-90-100", 0, 0, true},
		{"0x50", 0, 0, true},
		{"ANY", 0, 0, true},
		{"70000", 0, 0, true},
	}
	for _, tt := range tests {
		lo, hi, err := parsePort(tt.in)
		if (err != nil) != tt.err || lo != tt.lo || hi != tt.hi {
			t.Errorf("parsePort(%q) = %d, %d, %v; want %d, %d, error %v", tt.in, lo, hi, err, tt.lo, tt.hi, tt.err)
		}
	}
}

// FuzzParsePort_Consistent: parsePort never panics, and what it accepts
// is a range it gives back the same from its own spelling.
func FuzzParsePort_Consistent(f *testing.F) {
	for _, s := range []string{"80", "1000-2000", "any", "0", "80-", "-", "65535-65535", " 1 - 2 ", "fragment", "99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, err := parsePort(s)
		if err != nil {
			if lo != 0 || hi != 0 {
				t.Fatalf("parsePort(%q) = %d, %d with error %v", s, lo, hi, err)
			}
			if msg := err.Error(); !strings.Contains(msg, "use ") && !strings.Contains(msg, "write ") {
				t.Errorf("parsePort(%q): error %q does not say what to write", s, err)
			}
			return
		}
		if lo > hi || (lo == 0 && hi != 65535) {
			t.Fatalf("parsePort(%q) = %d, %d", s, lo, hi)
		}
		again := fmt.Sprintf("%d-%d", lo, hi)
		if lo == 0 {
			again = "any"
		}
		lo2, hi2, err := parsePort(again)
		if err != nil || lo2 != lo || hi2 != hi {
			t.Fatalf("parsePort(%q) = %d, %d; parsePort(%q) = %d, %d, %v", s, lo, hi, again, lo2, hi2, err)
		}
	})
}

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in   string
		want netip.Prefix
		err  bool
	}{
		{"", netip.Prefix{}, false},
		{"any", netip.Prefix{}, false},
		{"10.20.0.0/16", netip.MustParsePrefix("10.20.0.0/16"), false},
		{"10.20.0.5", netip.MustParsePrefix("10.20.0.5/32"), false},
		{"fd20::/64", netip.MustParsePrefix("fd20::/64"), false},
		{"fd20::2", netip.MustParsePrefix("fd20::2/128"), false},
		{"0.0.0.0/0", netip.MustParsePrefix("0.0.0.0/0"), false},
		{"::ffff:10.0.0.1", netip.MustParsePrefix("10.0.0.1/32"), false},
		{"::ffff:10.0.0.0/104", netip.Prefix{}, true},
		{"fe80::1%eth0", netip.Prefix{}, true},
		{"10.20.0.5/16", netip.Prefix{}, true},
		{"10.20.0.0/33", netip.Prefix{}, true},
		{"web", netip.Prefix{}, true},
	}
	for _, tt := range tests {
		got, err := parseCIDR(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseCIDR(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// TestConfig_DecodesFromYAML: the example in the package documentation
// (kept in testdata/firewall.yaml) decodes as the config loader decodes
// (viper, unknown keys refused, defaults for every key) and is valid;
// and absent, null and empty lists decode as documented.
func TestConfig_DecodesFromYAML(t *testing.T) {
	example, err := os.ReadFile("testdata/firewall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var quoted bytes.Buffer
	for line := range strings.Lines(string(example)) {
		quoted.WriteString("//\t" + line)
	}
	if !bytes.Contains(doc, quoted.Bytes()) {
		t.Errorf("doc.go does not quote testdata/firewall.yaml; copy it over")
	}

	cfg := decodeYAML(t, string(example))
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Outbound = []Rule{anyHost}
	want.Inbound = []Rule{
		{Port: "any", Proto: "icmp", Host: "any"},
		{Port: "80", Proto: "tcp", Group: "web"},
		{Port: "22", Proto: "tcp", Groups: []string{"ops", "laptop"}},
		{Port: "53", Proto: "udp", CIDR: "10.20.0.0/16", LocalCIDR: "10.20.0.1/32"},
		{Port: "6000-6010", Proto: "udp", Host: "media-01"},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		yaml    string
		in, out bool // non-nil
	}{
		{"", false, false},
		{"vpn:\n  firewall:\n    conntrack:\n      udp_timeout: 1m\n", false, false},
		{"vpn:\n  firewall:\n    inbound:\n", false, false},
		{"vpn:\n  firewall:\n    inbound: []\n", true, false},
		{"vpn:\n  firewall:\n    inbound: []\n    outbound:\n    - {port: any, proto: any, host: any}\n", true, true},
	} {
		cfg := decodeYAML(t, tt.yaml)
		if (cfg.Inbound != nil) != tt.in || (cfg.Outbound != nil) != tt.out {
			t.Errorf("%q: inbound %#v, outbound %#v", tt.yaml, cfg.Inbound, cfg.Outbound)
		}
		if cfg.Enabled() != (tt.in || tt.out) {
			t.Errorf("%q: Enabled() = %v", tt.yaml, cfg.Enabled())
		}
	}
}

// decodeYAML decodes the vpn.firewall section of a YAML document the way
// cmd/ringvpn/internal/config does.
func decodeYAML(t *testing.T, doc string) Config {
	t.Helper()
	type file struct {
		VPN struct {
			Firewall Config `mapstructure:"firewall"`
		} `mapstructure:"vpn"`
	}
	def := Default()
	v := viper.NewWithOptions(viper.KeyDelimiter("."))
	v.SetDefault("vpn.firewall.inbound", def.Inbound)
	v.SetDefault("vpn.firewall.outbound", def.Outbound)
	v.SetDefault("vpn.firewall.conntrack.tcp_timeout", def.Conntrack.TCPTimeout)
	v.SetDefault("vpn.firewall.conntrack.udp_timeout", def.Conntrack.UDPTimeout)
	v.SetDefault("vpn.firewall.conntrack.default_timeout", def.Conntrack.DefaultTimeout)
	v.SetDefault("vpn.firewall.conntrack.max_entries", def.Conntrack.MaxEntries)
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		t.Fatal(err)
	}
	var f file
	err := v.UnmarshalExact(&f, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)), func(c *mapstructure.DecoderConfig) { c.ZeroFields = true })
	if err != nil {
		t.Fatal(err)
	}
	return f.VPN.Firewall
}

func TestConfig_DecodeRefusesUnknownKeys(t *testing.T) {
	type file struct {
		Firewall Config `mapstructure:"firewall"`
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader("firewall:\n  inbound:\n  - {port: 80, proto: tcp, group: web, code: 3}\n")); err != nil {
		t.Fatal(err)
	}
	var f file
	err := v.UnmarshalExact(&f)
	if err == nil || !strings.Contains(err.Error(), "code") {
		t.Errorf("UnmarshalExact: %v, want an error naming the unknown key code", err)
	}
}
