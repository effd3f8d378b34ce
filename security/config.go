package security

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes links. Every field is a documented key under "security" in
// configs/ringvpn.yaml.
type Config struct {
	// HandshakeTimeout bounds a DTLS handshake plus its confirmation.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	// RekeyAfter is the session age at which the dialing side replaces
	// the session's keys with a fresh handshake.
	RekeyAfter time.Duration `mapstructure:"rekey_after"`
	// RekeyAfterRecords is the number of records sealed with one key after
	// which the session is rekeyed. A key is never used for more than
	// twice this many records (AES-GCM usage limits, RFC 8446 5.5).
	RekeyAfterRecords uint64 `mapstructure:"rekey_after_records"`
	// KeepaliveInterval is how long a link may stay silent before it sends
	// a keepalive; it also keeps NAT mappings open.
	KeepaliveInterval time.Duration `mapstructure:"keepalive_interval"`
	// DeadAfter is how long without any record from the peer before the
	// link is declared dead and closed.
	DeadAfter time.Duration `mapstructure:"dead_after"`
	// ReplayWindow is how many sequence numbers behind the newest a record
	// may arrive and still be accepted (a multiple of 64, at least 2048).
	ReplayWindow int `mapstructure:"replay_window"`
	// HandshakeMTU is the largest DTLS handshake datagram.
	HandshakeMTU int `mapstructure:"handshake_mtu"`
}

// Default returns the defaults documented in configs/ringvpn.yaml.
func Default() Config {
	return Config{
		HandshakeTimeout:  10 * time.Second,
		RekeyAfter:        10 * time.Minute,
		RekeyAfterRecords: 1 << 24,
		KeepaliveInterval: 10 * time.Second,
		DeadAfter:         35 * time.Second,
		ReplayWindow:      4096,
		HandshakeMTU:      1200,
	}
}

// Validate reports every out-of-range field, naming its configuration key.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.HandshakeTimeout >= time.Second && c.HandshakeTimeout <= 5*time.Minute,
		"security.handshake_timeout: %s not in [1s,5m]", c.HandshakeTimeout)
	check(c.RekeyAfter >= 10*time.Second && c.RekeyAfter <= 24*time.Hour,
		"security.rekey_after: %s not in [10s,24h]", c.RekeyAfter)
	check(c.RekeyAfterRecords >= 1<<10 && c.RekeyAfterRecords <= 1<<32,
		"security.rekey_after_records: %d not in [1024,4294967296]", c.RekeyAfterRecords)
	check(c.KeepaliveInterval >= 100*time.Millisecond && c.KeepaliveInterval <= 5*time.Minute,
		"security.keepalive_interval: %s not in [100ms,5m]", c.KeepaliveInterval)
	check(c.DeadAfter >= 2*c.KeepaliveInterval,
		"security.dead_after: %s must be at least twice security.keepalive_interval (%s)", c.DeadAfter, c.KeepaliveInterval)
	check(c.ReplayWindow >= 2048 && c.ReplayWindow <= 1<<16 && c.ReplayWindow%64 == 0,
		"security.replay_window: %d must be a multiple of 64 in [2048,65536]", c.ReplayWindow)
	check(c.HandshakeMTU >= 576 && c.HandshakeMTU <= 9000,
		"security.handshake_mtu: %d not in [576,9000]", c.HandshakeMTU)
	return errors.Join(errs...)
}
