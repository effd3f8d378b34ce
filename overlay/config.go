package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config tunes a ring node. Every field has a default (Default); the
// YAML keys are the mapstructure names under `overlay:`.
type Config struct {
	// Bootstrap lists peers to join through. They are only a way in: once
	// the node has its place in the ring the links to them are dropped
	// unless they are also its neighbours.
	Bootstrap []netip.AddrPort `mapstructure:"bootstrap"`
	// Advertise lists the endpoints peers should dial to reach this node.
	// Empty: the listen address, or every interface address when the
	// node listens on all of them.
	Advertise []netip.AddrPort `mapstructure:"advertise"`
	// Near is k, the number of near neighbours kept on each side.
	Near int `mapstructure:"near"`
	// Far is the number of Symphony long links; 0 picks about log2(N)/2,
	// with N estimated from the spacing of the near neighbours.
	Far int `mapstructure:"far"`
	// Proximity picks each long link among several candidates near its
	// target by predicted round-trip time (network coordinates); off, the
	// node closest to the target is taken.
	Proximity bool `mapstructure:"proximity"`
	// FarCandidates is how many nodes near a long link's target are
	// considered when Proximity is on.
	FarCandidates int `mapstructure:"far_candidates"`
	// MaxLinks caps the links this node keeps for its own reasons; surplus
	// long links are trimmed. Links peers keep to us are not refused, and
	// shortcuts are not counted (the VPN bounds them).
	MaxLinks int `mapstructure:"max_links"`
	// MaintainInterval is how often the maintainers run.
	MaintainInterval time.Duration `mapstructure:"maintain_interval"`
	// PingInterval is how often each link is pinged (RTT, coordinates).
	PingInterval time.Duration `mapstructure:"ping_interval"`
	// DeadAfter closes a link that has carried nothing for this long.
	DeadAfter time.Duration `mapstructure:"dead_after"`
	// ConnectTimeout bounds one attempt to link with a node.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	// RelayRetry is how often a link that goes through a relay (because
	// no direct one got through, say between two symmetric NATs) tries
	// to go direct again.
	RelayRetry time.Duration `mapstructure:"relay_retry"`
	// TTL is the hop limit of messages this node sends.
	TTL int `mapstructure:"ttl"`
	// Pipes tunes routed pipes (end-to-end sessions through the ring).
	Pipes PipeConfig `mapstructure:"pipes"`
}

// Default returns the defaults.
func Default() Config {
	return Config{
		Bootstrap:        []netip.AddrPort{},
		Advertise:        []netip.AddrPort{},
		Near:             3,
		Far:              0,
		Proximity:        true,
		FarCandidates:    16,
		MaxLinks:         20,
		MaintainInterval: time.Second,
		PingInterval:     2 * time.Second,
		DeadAfter:        8 * time.Second,
		ConnectTimeout:   10 * time.Second,
		RelayRetry:       30 * time.Second,
		TTL:              DefaultTTL,
		Pipes:            DefaultPipeConfig(),
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
	check(c.Near >= 1 && c.Near <= 8, "overlay.near: %d not in [1,8]", c.Near)
	check(c.Far >= 0 && c.Far <= 32, "overlay.far: %d not in [0,32] (0 = automatic)", c.Far)
	check(c.FarCandidates >= 1 && c.FarCandidates <= defaultNeighborCap, "overlay.far_candidates: %d not in [1,%d]", c.FarCandidates, defaultNeighborCap)
	check(c.MaxLinks >= 2*c.Near+1 && c.MaxLinks <= 256, "overlay.max_links: %d not in [2*near+1,256]", c.MaxLinks)
	check(c.MaintainInterval >= 10*time.Millisecond, "overlay.maintain_interval: %v is below 10ms", c.MaintainInterval)
	check(c.PingInterval >= 10*time.Millisecond, "overlay.ping_interval: %v is below 10ms", c.PingInterval)
	check(c.DeadAfter >= 2*c.PingInterval, "overlay.dead_after: %v must be at least twice overlay.ping_interval (%v)", c.DeadAfter, c.PingInterval)
	check(c.ConnectTimeout >= 100*time.Millisecond, "overlay.connect_timeout: %v is below 100ms", c.ConnectTimeout)
	check(c.RelayRetry >= 100*time.Millisecond, "overlay.relay_retry: %v is below 100ms", c.RelayRetry)
	check(c.TTL >= 2 && c.TTL <= 255, "overlay.ttl: %d not in [2,255]", c.TTL)
	for i, ep := range c.Bootstrap {
		check(ep.IsValid() && ep.Port() != 0, "overlay.bootstrap[%d]: %q needs an address and a port, like 192.0.2.1:4242", i, ep)
	}
	for i, ep := range c.Advertise {
		check(ep.IsValid() && ep.Port() != 0 && !ep.Addr().IsUnspecified(), "overlay.advertise[%d]: %q needs a specific address and a port", i, ep)
	}
	if err := c.Pipes.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
