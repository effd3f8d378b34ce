package tap

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// MTU limits. The kernel allows a TAP MTU of 68..65521 (65535 minus the
// Ethernet header); below 576 IPv4 hosts need not accept packets, and
// below 1280 the kernel disables IPv6 on the interface.
const (
	MinMTU     = 576
	MinMTUIPv6 = 1280
	MaxMTU     = 65535 - 14
)

// maxNameLen is IFNAMSIZ minus the terminating NUL.
const maxNameLen = 15

// Config is the virtual network interface of a node.
type Config struct {
	// Name is the interface name, at most 15 bytes; a "%d" in it is
	// replaced by the kernel with the first free number, and "" lets the
	// kernel pick "tap0", "tap1", ...
	Name string `mapstructure:"name"`
	// MTU is the IP MTU of the interface, without the Ethernet header. It
	// must leave room for the overlay and record headers and the outer
	// UDP/IP headers within the path MTU between nodes.
	MTU int `mapstructure:"mtu"`
	// MAC is the interface's Ethernet address. Empty keeps the address the
	// kernel picks at random; a node should set a stable one (see
	// MACFromBytes), so peers' ARP caches stay right across restarts.
	MAC MAC `mapstructure:"mac"`
	// Addresses are the interface's IPv4 and IPv6 addresses with their
	// prefix lengths, e.g. 10.77.0.1/24 and fd77::1/64.
	Addresses []netip.Prefix `mapstructure:"addresses"`
	// Offload is OffloadOn (the default; "" means the same) or
	// OffloadOff. On, the kernel hands the device TCP super-segments of
	// up to 64 KB and takes them from it (see package tap/offload), so a
	// read or a write system call moves dozens of segments; off, one
	// frame per system call. The zero value is on so that callers that
	// build a Config field by field get it too.
	Offload Offload `mapstructure:"offload"`
}

// Offload selects the segmentation offloads of a TAP device.
type Offload string

// Offload modes.
const (
	OffloadOn  Offload = "on"
	OffloadOff Offload = "off"
)

// Enabled reports whether o asks for offloads.
func (o Offload) Enabled() bool { return o != OffloadOff }

// Default returns the defaults documented in configs/ringvpn.yaml. The MTU
// of 1300 leaves 200 bytes of a 1500-byte path for the inner Ethernet
// header, the overlay and record headers, and outer IPv6 and UDP.
func Default() Config {
	return Config{Name: "ringvpn0", MTU: 1300, Offload: OffloadOn}
}

// Validate reports every invalid field, naming its configuration key.
func (c Config) Validate() error {
	var errs []error
	if err := validName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("tap.name: %q %w", c.Name, err))
	}
	if c.MTU < MinMTU || c.MTU > MaxMTU {
		errs = append(errs, fmt.Errorf("tap.mtu: %d not in [%d,%d]", c.MTU, MinMTU, MaxMTU))
	}
	if c.Offload != "" && c.Offload != OffloadOn && c.Offload != OffloadOff {
		errs = append(errs, fmt.Errorf("tap.offload: %q is not %q or %q", c.Offload, OffloadOn, OffloadOff))
	}
	if len(c.MAC) != 0 {
		switch {
		case len(c.MAC) != 6:
			errs = append(errs, fmt.Errorf("tap.mac: %s is not a 6-byte Ethernet address", c.MAC))
		case c.MAC[0]&1 != 0:
			errs = append(errs, fmt.Errorf("tap.mac: %s is a multicast address; clear the lowest bit of the first byte", c.MAC))
		case bytes.Equal(c.MAC, make(MAC, 6)):
			errs = append(errs, fmt.Errorf("tap.mac: %s is not a valid address; leave it empty for a random one", c.MAC))
		}
	}
	seen := make(map[netip.Addr]bool, len(c.Addresses))
	for _, p := range c.Addresses {
		a := p.Addr()
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("tap.addresses: %s is not a prefix like 10.77.0.1/24", p))
		case a.Is4In6():
			errs = append(errs, fmt.Errorf("tap.addresses: %s is an IPv4-mapped IPv6 address; write it as IPv4", p))
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			errs = append(errs, fmt.Errorf("tap.addresses: %s is not a unicast address", p))
		case seen[a]:
			errs = append(errs, fmt.Errorf("tap.addresses: %s is listed twice", a))
		case a.Is6() && c.MTU < MinMTUIPv6:
			errs = append(errs, fmt.Errorf("tap.mtu: %d is below %d, which IPv6 needs for tap.addresses %s; raise tap.mtu or drop the IPv6 address", c.MTU, MinMTUIPv6, p))
		}
		seen[a] = true
	}
	return errors.Join(errs...)
}

// validName applies the kernel's rules for interface names
// (dev_valid_name); the empty name lets the kernel choose.
func validName(name string) error {
	switch {
	case len(name) > maxNameLen:
		return fmt.Errorf("is %d bytes long, more than %d", len(name), maxNameLen)
	case name == "." || name == "..":
		return errors.New("is not a valid interface name")
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return errors.New("contains '/', ':' or white space")
	}
	return nil
}

// MAC is an Ethernet address in a configuration: it reads and writes the
// text form "02:00:5e:10:00:01".
type MAC net.HardwareAddr

// String returns the address in colon-separated hex.
func (m MAC) String() string { return net.HardwareAddr(m).String() }

// MarshalText implements encoding.TextMarshaler.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; the empty text is the
// empty address.
func (m *MAC) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*m = nil
		return nil
	}
	hw, err := net.ParseMAC(string(text))
	if err != nil {
		return err
	}
	if len(hw) != 6 {
		return fmt.Errorf("%q is not a 6-byte Ethernet address", text)
	}
	*m = MAC(hw)
	return nil
}
