package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ringvpn/ringvpn/security"
)

type udpConfig struct {
	BatchSize int `mapstructure:"batch_size"`
}

// MuxConfig is embedded with squash in transportConfig, as a package's
// Config is in the node's: its keys sit in the parent section.
type MuxConfig struct {
	MaxPending int `mapstructure:"max_pending"`
}

type transportConfig struct {
	MuxConfig `mapstructure:",squash"`
	UDP       udpConfig     `mapstructure:"udp"`
	Keepalive time.Duration `mapstructure:"keepalive"`
}

type testConfig struct {
	Listen    netip.AddrPort   `mapstructure:"listen"`
	Node      security.Address `mapstructure:"node"`
	Subnets   []netip.Prefix   `mapstructure:"subnets"`
	Peers     []string         `mapstructure:"peers"`
	Verbose   bool             `mapstructure:"verbose"`
	Transport transportConfig  `mapstructure:"transport"`
	Ignored   string           `mapstructure:"-"`

	validated bool
}

func (c *testConfig) Validate() error {
	c.validated = true
	if c.Transport.UDP.BatchSize > 128 {
		return errors.New("transport.udp.batch_size: 999 not in [1,128]")
	}
	return nil
}

func defaults() testConfig {
	return testConfig{
		Listen:  netip.MustParseAddrPort("[::]:4820"),
		Peers:   []string{"192.0.2.1:4820"},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Transport: transportConfig{
			MuxConfig: MuxConfig{MaxPending: 256},
			UDP:       udpConfig{BatchSize: 64},
			Keepalive: 10 * time.Second,
		},
	}
}

var cmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.AllowUnexported(testConfig{}),
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad_DefaultsOnly(t *testing.T) {
	got := defaults()
	if err := Load("", "RINGVPN_TEST", &got); err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.validated = true
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoad_FileOverridesDefaults(t *testing.T) {
	path := writeFile(t, `
listen: 127.0.0.1:9000
node: 00112233445566778899aabbccddeeff00112233
subnets: [192.168.10.0/24, "fd00::/64"]
verbose: true
transport:
  max_pending: 32     # squashed into the section
  keepalive: 1m30s
  udp:
    batch_size: 16
`)
	got := defaults()
	if err := Load(path, "RINGVPN_TEST", &got); err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.validated = true
	want.Listen = netip.MustParseAddrPort("127.0.0.1:9000")
	want.Node, _ = security.ParseAddress("00112233445566778899aabbccddeeff00112233")
	want.Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24"), netip.MustParsePrefix("fd00::/64")}
	want.Verbose = true
	want.Transport.MaxPending = 32
	want.Transport.Keepalive = 90 * time.Second
	want.Transport.UDP.BatchSize = 16
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestLoad_EnvOverridesKeyAbsentFromFile is the reason every default is
// registered: without it viper never looks up a key the file lacks.
func TestLoad_EnvOverridesKeyAbsentFromFile(t *testing.T) {
	path := writeFile(t, "transport:\n  max_pending: 32\n")
	t.Setenv("RINGVPN_TEST_TRANSPORT_UDP_BATCH_SIZE", "8")
	t.Setenv("RINGVPN_TEST_TRANSPORT_MAX_PENDING", "7") // env beats the file too
	t.Setenv("RINGVPN_TEST_LISTEN", "10.0.0.1:1")
	t.Setenv("RINGVPN_TEST_TRANSPORT_KEEPALIVE", "3s")
	t.Setenv("RINGVPN_TEST_PEERS", "192.0.2.7:1,192.0.2.8:2")
	t.Setenv("RINGVPN_TEST_VERBOSE", "true")
	got := defaults()
	if err := Load(path, "RINGVPN_TEST_", &got); err != nil {
		t.Fatal(err)
	}
	if got.Transport.UDP.BatchSize != 8 || got.Transport.MaxPending != 7 || got.Listen.String() != "10.0.0.1:1" ||
		got.Transport.Keepalive != 3*time.Second || !got.Verbose || !cmp.Equal(got.Peers, []string{"192.0.2.7:1", "192.0.2.8:2"}) {
		t.Errorf("env overrides not applied: %+v", got)
	}
}

func TestLoad_UnknownKey(t *testing.T) {
	path := writeFile(t, "transport:\n  udp:\n    bach_size: 1\n  keepalive: 1s\nlisten_port: 4\nbatch_size: 3\n")
	got := defaults()
	err := Load(path, "", &got)
	if err == nil {
		t.Fatal("Load accepted unknown keys")
	}
	for _, want := range []string{
		`config file ` + path + `: unknown key "transport.udp.bach_size" (did you mean "transport.udp.batch_size"?)`,
		`config file ` + path + `: unknown key "listen_port" (did you mean "listen"?)`,
		`config file ` + path + `: unknown key "batch_size" (did you mean "transport.udp.batch_size"?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\ndoes not contain\n%s", err, want)
		}
	}
	if got.validated {
		t.Error("Validate ran after a load error")
	}
}

func TestLoad_TypeErrors(t *testing.T) {
	tests := []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"int from text", "transport:\n  udp:\n    batch_size: lots\n", nil,
			`config file node.yaml: transport.udp.batch_size: "lots" is not a valid int`},
		{"duration without unit", "transport:\n  keepalive: 10\n", nil,
			`config file node.yaml: transport.keepalive: 10 is not a duration; write it with a unit, like "10s"`},
		{"bad duration", "transport:\n  keepalive: soon\n", nil,
			`config file node.yaml: transport.keepalive: "soon" is not a duration`},
		{"bad address:port", "listen: nowhere\n", nil,
			`config file node.yaml: listen: "nowhere" is not a valid netip.AddrPort`},
		{"bad overlay address", "node: abc\n", nil,
			`config file node.yaml: node: "abc" is not a valid security.Address: overlay address "abc": want 40 hex digits`},
		{"bad prefix in a list", "subnets: [10.0.0.0/8, 10.0.0.0/99]\n", nil,
			`config file node.yaml: subnets[1]: "10.0.0.0/99" is not a valid netip.Prefix`},
		{"bad value from env", "", map[string]string{"RINGVPN_TEST_TRANSPORT_UDP_BATCH_SIZE": "many"},
			`environment variable RINGVPN_TEST_TRANSPORT_UDP_BATCH_SIZE: transport.udp.batch_size: "many" is not a valid int`},
		{"section given a value", "transport: 5\n", nil, "transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "node.yaml")
			if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			got := defaults()
			err := Load(path, "RINGVPN_TEST", &got)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", got)
			}
			msg := strings.ReplaceAll(err.Error(), path, "node.yaml")
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error\n%s\ndoes not contain\n%s", msg, tt.want)
			}
		})
	}
}

func TestLoad_Validate(t *testing.T) {
	path := writeFile(t, "transport:\n  udp:\n    batch_size: 999\n")
	got := defaults()
	err := Load(path, "", &got)
	if err == nil || !strings.Contains(err.Error(), "config file "+path+": transport.udp.batch_size: 999 not in [1,128]") {
		t.Fatalf("Load = %v, want the Validate error naming the file", err)
	}
}

func TestLoad_FileErrors(t *testing.T) {
	got := defaults()
	if err := Load(filepath.Join(t.TempDir(), "missing.yaml"), "", &got); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	path := writeFile(t, "transport: [unclosed\n")
	if err := Load(path, "", &got); err == nil || !strings.Contains(err.Error(), "config file "+path) {
		t.Errorf("bad YAML: %v", err)
	}
	if err := Load("", "", got); err == nil || !strings.Contains(err.Error(), "pointer to a struct") {
		t.Errorf("non-pointer: %v", err)
	}
}

func TestLevenshtein(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"batch_size", "bach_size", 1}} {
		if got := levenshtein(tt.a, tt.b); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
