package simnet

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes a Fabric. Zero fields take their defaults (Default), so
// Config{} is a valid configuration.
type Config struct {
	// Latency gives the round-trip time between two hosts; a link's
	// packets take half of it each way. nil means Constant(20ms).
	Latency LatencyModel `mapstructure:"-"`
	// Loss is the probability in [0,1] that a packet is dropped, drawn
	// for every packet in both directions.
	Loss float64 `mapstructure:"loss"`
	// DeadAfter is how long after a node crashes (Linker.Kill) the other
	// ends of its links end, as a peer's liveness timeout would notice.
	// 0 means 10s.
	DeadAfter time.Duration `mapstructure:"dead_after"`
	// DialTimeout is how long a dial to an address where no node answers
	// waits before it fails (or less, if the context's deadline is
	// earlier). 0 means 3s.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// Workers is how many goroutines run handlers. Each node's packets
	// are handled by one of them, in order. 0 means runtime.GOMAXPROCS;
	// 1 runs every handler in a fixed order, for reproducible runs inside
	// a testing/synctest bubble (see the package documentation).
	Workers int `mapstructure:"workers"`
	// Seed seeds the generator behind every loss decision.
	Seed uint64 `mapstructure:"seed"`
}

// Defaults of the zero fields of a Config.
const (
	DefaultLatency     = Constant(20 * time.Millisecond)
	DefaultDeadAfter   = 10 * time.Second
	DefaultDialTimeout = 3 * time.Second
)

// Limits on Config fields.
const (
	maxDelay   = 24 * time.Hour // DeadAfter, DialTimeout, and each RTT
	maxWorkers = 1024
)

// Default returns the defaults: 20ms everywhere, no loss, peers of a crashed
// node notice after 10s, dials to nobody fail after 3s, one worker per
// GOMAXPROCS.
func Default() Config {
	return Config{
		Latency:     DefaultLatency,
		DeadAfter:   DefaultDeadAfter,
		DialTimeout: DefaultDialTimeout,
	}
}

// Validate reports every out-of-range field, naming its key.
func (c Config) Validate() error {
	var errs []error
	// The negated test also rejects NaN.
	if !(c.Loss >= 0 && c.Loss <= 1) {
		errs = append(errs, fmt.Errorf("simnet.loss: %v not in [0,1]", c.Loss))
	}
	if c.DeadAfter < 0 || c.DeadAfter > maxDelay {
		errs = append(errs, fmt.Errorf("simnet.dead_after: %v not in [0,%v] (0 = %v)", c.DeadAfter, maxDelay, DefaultDeadAfter))
	}
	if c.DialTimeout < 0 || c.DialTimeout > maxDelay {
		errs = append(errs, fmt.Errorf("simnet.dial_timeout: %v not in [0,%v] (0 = %v)", c.DialTimeout, maxDelay, DefaultDialTimeout))
	}
	if c.Workers < 0 || c.Workers > maxWorkers {
		errs = append(errs, fmt.Errorf("simnet.workers: %d not in [0,%d] (0 = GOMAXPROCS)", c.Workers, maxWorkers))
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Latency == nil {
		c.Latency = DefaultLatency
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	return c
}
