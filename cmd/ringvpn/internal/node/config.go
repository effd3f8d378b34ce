package node

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/revoke"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap"
	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/udp"
)

// Config is the whole node configuration file (configs/ringvpn.yaml
// documents every key).
type Config struct {
	Identity IdentityConfig `mapstructure:"identity"`
	Listen   netip.AddrPort `mapstructure:"listen"`
	Control  ControlConfig  `mapstructure:"control"`
	Overlay  overlay.Config `mapstructure:"overlay"`
	DHT      dht.Config     `mapstructure:"dht"`
	// Revocation spreads revocation lists (overlay/revoke).
	Revocation revoke.Config   `mapstructure:"revocation"`
	VPN        VPNConfig       `mapstructure:"vpn"`
	TAP        TAPConfig       `mapstructure:"tap"`
	Transport  TransportConfig `mapstructure:"transport"`
	Security   security.Config `mapstructure:"security"`
	Log        LogConfig       `mapstructure:"log"`
}

// IdentityConfig names the member's files.
type IdentityConfig struct {
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
	CA   string `mapstructure:"ca"` // PEM bundle: one or more trusted group CAs
	// CRL lists revocation list files (from `ringvpn ca revoke`) to apply.
	CRL []string `mapstructure:"crl"`
	// CRLReload is how often the CRL files are re-read; 0: never.
	CRLReload time.Duration `mapstructure:"crl_reload"`
	// ExpiryWarning is how long before this member's certificate or its
	// CA expires that warnings start (then daily).
	ExpiryWarning time.Duration `mapstructure:"expiry_warning"`
}

// validate checks the identity section's keys.
func (c IdentityConfig) validate() []error {
	var errs []error
	if c.Cert == "" || c.Key == "" || c.CA == "" {
		errs = append(errs, errors.New("identity.cert, identity.key and identity.ca must all be set (make them with `ringvpn ca init` and `ringvpn cert issue`)"))
	}
	for i, p := range c.CRL {
		if p == "" {
			errs = append(errs, fmt.Errorf("identity.crl[%d]: empty path", i))
		}
	}
	if c.CRLReload != 0 && (c.CRLReload < time.Second || c.CRLReload > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("identity.crl_reload: %s must be 0 (never) or in [1s,24h]", c.CRLReload))
	}
	if c.ExpiryWarning < 0 || c.ExpiryWarning > 366*24*time.Hour {
		errs = append(errs, fmt.Errorf("identity.expiry_warning: %s not in [0,8784h]", c.ExpiryWarning))
	}
	return errs
}

// VPNConfig turns the VPN on or off and tunes it.
type VPNConfig struct {
	// Enabled: carry the frames of a TAP device. Off, the node is a ring
	// member only (a bootstrap or relay host, or a test without root).
	Enabled    bool `mapstructure:"enabled"`
	vpn.Config `mapstructure:",squash"`
}

// TAPConfig is the virtual interface. Its addresses are the virtual IPs
// of the member's certificate.
type TAPConfig struct {
	// Name of the interface; empty lets the kernel choose (tap0, ...).
	Name string `mapstructure:"name"`
	// MTU of the interface; 0 picks the largest that never fragments on a
	// 1500-byte underlay network, whatever path a packet takes.
	MTU int `mapstructure:"mtu"`
	// Offload: "on" lets the kernel hand the device TCP super-segments
	// and take coalesced ones (segmented and merged in user space), far
	// fewer system calls per byte; "off" moves one frame per call.
	Offload tap.Offload `mapstructure:"offload"`
}

// device is the tap.Config of the interface, with the certificate's
// addresses and the member's MAC; MTU 0 becomes vpn.DefaultMTU.
func (t TAPConfig) device(addrs []netip.Prefix, mac tap.MAC) tap.Config {
	mtu := t.MTU
	if mtu == 0 {
		mtu = vpn.DefaultMTU
	}
	return tap.Config{Name: t.Name, MTU: mtu, MAC: mac, Addresses: addrs, Offload: t.Offload}
}

// ControlConfig is the local status endpoint.
type ControlConfig struct {
	Socket string `mapstructure:"socket"`
}

// TransportConfig groups the Mux and the UDP socket settings.
type TransportConfig struct {
	transport.Config `mapstructure:",squash"`
	UDP              udp.Config `mapstructure:"udp"`
}

// LogConfig sets the log level and format.
type LogConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// DefaultPort is the UDP port a node listens on unless configured.
const DefaultPort = 4820

// Default returns every default, as configs/ringvpn.yaml shows them.
func Default() Config {
	return Config{
		Identity:   IdentityConfig{Cert: "member.crt", Key: "member.key", CA: "ca.crt", CRL: []string{}, CRLReload: time.Minute, ExpiryWarning: 30 * 24 * time.Hour},
		Listen:     netip.AddrPortFrom(netip.IPv6Unspecified(), DefaultPort),
		Control:    ControlConfig{Socket: "/run/ringvpn/ringvpn.sock"},
		Overlay:    overlay.Default(),
		DHT:        dht.Default(),
		Revocation: revoke.Default(),
		VPN:        VPNConfig{Enabled: true, Config: vpn.Default()},
		TAP:        TAPConfig{Name: "ringvpn0", Offload: tap.OffloadOn},
		Transport: TransportConfig{
			Config: transport.Default(),
			UDP:    udp.Default(),
		},
		Security: security.Default(),
		Log:      LogConfig{Level: "info", Format: "console"},
	}
}

// Validate reports every problem, naming the key.
func (c Config) Validate() error {
	errs := c.Identity.validate()
	if !c.Listen.IsValid() {
		errs = append(errs, fmt.Errorf("listen: %q is not an address:port (e.g. \"[::]:%d\")", c.Listen, DefaultPort))
	}
	if err := c.Overlay.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.DHT.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Revocation.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Revocation.RecordTTL > c.DHT.MaxTTL {
		errs = append(errs, fmt.Errorf("revocation.record_ttl: %v is longer than dht.max_ttl (%v), so no node would store the lists", c.Revocation.RecordTTL, c.DHT.MaxTTL))
	}
	if c.DHT.MaxValueSize < revoke.MaxRecordValue {
		errs = append(errs, fmt.Errorf("dht.max_value_size: %d is below %d, the largest value of a revocation list record", c.DHT.MaxValueSize, revoke.MaxRecordValue))
	}
	if c.VPN.Enabled {
		if err := c.VPN.Config.Validate(); err != nil {
			errs = append(errs, err)
		}
		if c.VPN.RecordTTL > c.DHT.MaxTTL {
			errs = append(errs, fmt.Errorf("vpn.record_ttl: %v is longer than dht.max_ttl (%v), so no node would store the records", c.VPN.RecordTTL, c.DHT.MaxTTL))
		}
		// The device's own checks (name, MTU, offload); its addresses come
		// from the certificate and are checked when it opens.
		if err := c.TAP.device(nil, nil).Validate(); err != nil {
			errs = append(errs, err)
		}
		if c.TAP.MTU > vpn.MaxMTU {
			errs = append(errs, fmt.Errorf("tap.mtu: %d is above %d, the largest packet a routed pipe carries (0 picks %d)", c.TAP.MTU, vpn.MaxMTU, vpn.DefaultMTU))
		}
	}
	if err := c.Transport.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Transport.UDP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Security.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
