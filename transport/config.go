package transport

import (
	"errors"
	"fmt"
)

// Config tunes a Mux.
type Config struct {
	// MaxPending bounds the sessions that peers have opened with a
	// ClientHello and that have not finished their handshake. A ClientHello
	// beyond the bound is dropped and counted; the peer retries.
	MaxPending int `mapstructure:"max_pending"`
	// ControlQueue is how many handshake datagrams may wait for one pipe's
	// DTLS engine before more are dropped.
	ControlQueue int `mapstructure:"control_queue"`
}

// Default returns the defaults documented in configs/ringvpn.yaml.
func Default() Config {
	return Config{MaxPending: 256, ControlQueue: 64}
}

// Validate reports every out-of-range field, naming its configuration key.
func (c Config) Validate() error {
	var errs []error
	if c.MaxPending < 1 || c.MaxPending > 1<<16 {
		errs = append(errs, fmt.Errorf("transport.max_pending: %d not in [1,65536]", c.MaxPending))
	}
	if c.ControlQueue < 4 || c.ControlQueue > 4096 {
		errs = append(errs, fmt.Errorf("transport.control_queue: %d not in [4,4096]", c.ControlQueue))
	}
	return errors.Join(errs...)
}
