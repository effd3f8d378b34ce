package dht

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes the DHT. Every field has a default (Default); the YAML keys
// are the mapstructure names under `dht:`.
type Config struct {
	// Replicas is r: each value is held by the r nodes closest to its key
	// (the owner, closest of all, and r-1 replicas).
	Replicas int `mapstructure:"replicas"`
	// MaxValueSize bounds a value (or a signed record's value), in bytes.
	// It is checked by the writer and by the storing node.
	MaxValueSize int `mapstructure:"max_value_size"`
	// MaxTTL bounds how long a value lives: a write with a longer TTL, or
	// a record that expires later than this from now, is refused.
	MaxTTL time.Duration `mapstructure:"max_ttl"`
	// MaxItems caps the values this node stores, as owner or replica;
	// further values are refused and counted.
	MaxItems int `mapstructure:"max_items"`
	// RepublishInterval is the re-replication period: each node pushes
	// every value it holds to the replica set it sees, and hands off the
	// values it is no longer a replica of.
	RepublishInterval time.Duration `mapstructure:"republish_interval"`
	// RequestTimeout bounds one attempt of a put, create or get.
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	// Retries is how many more attempts follow one that timed out (the
	// request may have hit a node that just left).
	Retries int `mapstructure:"retries"`
}

// Default returns the defaults.
func Default() Config {
	return Config{
		Replicas:          3,
		MaxValueSize:      1024,
		MaxTTL:            24 * time.Hour,
		MaxItems:          100000,
		RepublishInterval: 5 * time.Second,
		RequestTimeout:    5 * time.Second,
		Retries:           2,
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
	check(c.Replicas >= 1 && c.Replicas <= 16, "dht.replicas: %d not in [1,16]", c.Replicas)
	check(c.MaxValueSize >= 1 && c.MaxValueSize <= MaxValueLimit, "dht.max_value_size: %d not in [1,%d]", c.MaxValueSize, MaxValueLimit)
	check(c.MaxTTL >= time.Second && c.MaxTTL <= 30*24*time.Hour, "dht.max_ttl: %v not in [1s,720h]", c.MaxTTL)
	check(c.MaxItems >= 1 && c.MaxItems <= 10_000_000, "dht.max_items: %d not in [1,10000000]", c.MaxItems)
	check(c.RepublishInterval >= 10*time.Millisecond && c.RepublishInterval <= time.Hour, "dht.republish_interval: %v not in [10ms,1h]", c.RepublishInterval)
	check(c.RequestTimeout >= 10*time.Millisecond && c.RequestTimeout <= 5*time.Minute, "dht.request_timeout: %v not in [10ms,5m]", c.RequestTimeout)
	check(c.Retries >= 0 && c.Retries <= 10, "dht.retries: %d not in [0,10]", c.Retries)
	return errors.Join(errs...)
}
