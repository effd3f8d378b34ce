package node

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/udp"
)

// Config is the whole node configuration file (configs/ringvpn.yaml
// documents every key).
type Config struct {
	Identity  IdentityConfig  `mapstructure:"identity"`
	Listen    netip.AddrPort  `mapstructure:"listen"`
	Control   ControlConfig   `mapstructure:"control"`
	Overlay   overlay.Config  `mapstructure:"overlay"`
	DHT       dht.Config      `mapstructure:"dht"`
	Transport TransportConfig `mapstructure:"transport"`
	Security  security.Config `mapstructure:"security"`
	Log       LogConfig       `mapstructure:"log"`
}

// IdentityConfig names the member's files.
type IdentityConfig struct {
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
	CA   string `mapstructure:"ca"` // PEM bundle: one or more trusted group CAs
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
		Identity: IdentityConfig{Cert: "member.crt", Key: "member.key", CA: "ca.crt"},
		Listen:   netip.AddrPortFrom(netip.IPv6Unspecified(), DefaultPort),
		Control:  ControlConfig{Socket: "/run/ringvpn/ringvpn.sock"},
		Overlay:  overlay.Default(),
		DHT:      dht.Default(),
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
	var errs []error
	if c.Identity.Cert == "" || c.Identity.Key == "" || c.Identity.CA == "" {
		errs = append(errs, errors.New("identity.cert, identity.key and identity.ca must all be set (make them with `ringvpn ca init` and `ringvpn cert issue`)"))
	}
	if !c.Listen.IsValid() {
		errs = append(errs, fmt.Errorf("listen: %q is not an address:port (e.g. \"[::]:%d\")", c.Listen, DefaultPort))
	}
	if err := c.Overlay.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.DHT.Validate(); err != nil {
		errs = append(errs, err)
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
