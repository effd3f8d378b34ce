package tap

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDefault_Valid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfig_Validate(t *testing.T) {
	p := netip.MustParsePrefix
	ok := Config{Name: "rv0", MTU: 1400, MAC: MAC(MACFromBytes([]byte("x"))), Addresses: []netip.Prefix{p("10.77.0.1/24"), p("fd77::1/64")}}
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{"valid", func(*Config) {}, nil},
		{"kernel chooses the name", func(c *Config) { c.Name = "" }, nil},
		{"name template", func(c *Config) { c.Name = "rv%d" }, nil},
		{"name of 15 bytes", func(c *Config) { c.Name = strings.Repeat("a", 15) }, nil},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("a", 16) }, []string{"tap.name:", "16 bytes"}},
		{"name with slash", func(c *Config) { c.Name = "a/b" }, []string{"tap.name:"}},
		{"name with space", func(c *Config) { c.Name = "a b" }, []string{"tap.name:"}},
		{"name dot", func(c *Config) { c.Name = "." }, []string{"tap.name:"}},
		{"mtu at the minimum without IPv6", func(c *Config) { c.MTU = 576; c.Addresses = c.Addresses[:1] }, nil},
		{"mtu too small", func(c *Config) { c.MTU = 575; c.Addresses = nil }, []string{"tap.mtu: 575 not in [576,65521]"}},
		{"mtu at the maximum", func(c *Config) { c.MTU = 65521 }, nil},
		{"mtu too large", func(c *Config) { c.MTU = 65522 }, []string{"tap.mtu: 65522 not in"}},
		{"mtu too small for IPv6", func(c *Config) { c.MTU = 1279 }, []string{"tap.mtu: 1279 is below 1280", "fd77::1/64"}},
		{"no mac", func(c *Config) { c.MAC = nil }, nil},
		{"multicast mac", func(c *Config) { c.MAC = MAC{0x03, 0, 0, 0, 0, 1} }, []string{"tap.mac:", "multicast"}},
		{"zero mac", func(c *Config) { c.MAC = MAC{0, 0, 0, 0, 0, 0} }, []string{"tap.mac:"}},
		{"long mac", func(c *Config) { c.MAC = MAC{2, 0, 0, 0, 0, 0, 0, 1} }, []string{"tap.mac:", "6-byte"}},
		{"invalid prefix", func(c *Config) { c.Addresses = []netip.Prefix{{}} }, []string{"tap.addresses:"}},
		{"mapped address", func(c *Config) { c.Addresses = []netip.Prefix{p("::ffff:10.0.0.1/120")} }, []string{"tap.addresses:", "IPv4-mapped"}},
		{"multicast address", func(c *Config) { c.Addresses = []netip.Prefix{p("224.0.0.1/4")} }, []string{"tap.addresses:", "unicast"}},
		{"unspecified address", func(c *Config) { c.Addresses = []netip.Prefix{p("::/0")} }, []string{"tap.addresses:", "unicast"}},
		{"duplicate address", func(c *Config) { c.Addresses = []netip.Prefix{p("10.0.0.1/24"), p("10.0.0.1/16")} }, []string{"tap.addresses: 10.0.0.1 is listed twice"}},
		{"offload on", func(c *Config) { c.Offload = OffloadOn }, nil},
		{"offload off", func(c *Config) { c.Offload = OffloadOff }, nil},
		{"offload unknown", func(c *Config) { c.Offload = "yes" }, []string{`tap.offload: "yes" is not "on" or "off"`}},
		{"every error at once", func(c *Config) { c.Name = strings.Repeat("a", 20); c.MTU = 10; c.MAC = MAC{1, 2, 3, 4, 5, 6} }, []string{"tap.name:", "tap.mtu: 10 not in", "tap.mac:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			c.Addresses = append([]netip.Prefix(nil), ok.Addresses...)
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestMAC_Text(t *testing.T) {
	var m MAC
	if err := m.UnmarshalText([]byte("02:00:5E:10:00:01")); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.MarshalText(); string(got) != "02:00:5e:10:00:01" {
		t.Errorf("round trip = %s", got)
	}
	if err := m.UnmarshalText(nil); err != nil || m != nil {
		t.Errorf("empty text = %v, %v; want nil, nil", m, err)
	}
	for _, bad := range []string{"02:00", "zz:00:5e:10:00:01", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"} {
		if err := m.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) succeeded", bad)
		}
	}
}
