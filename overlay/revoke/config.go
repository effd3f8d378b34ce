package revoke

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes a Spreader. Every field has a default (Default); the YAML
// keys are the mapstructure names under `revocation:`.
type Config struct {
	// CheckInterval is how often the member reads each CA's list from the
	// DHT (and writes its own there if the DHT's is older, missing, or
	// half way to expiring); the first read follows soon after joining the
	// ring. Each period is drawn within 25% of it, so members don't all
	// read at once.
	CheckInterval time.Duration `mapstructure:"check_interval"`
	// RecordTTL is how long the DHT keeps a list written there; members
	// renew it at their checks. It must not exceed dht.max_ttl.
	RecordTTL time.Duration `mapstructure:"record_ttl"`
}

// Default returns the defaults.
func Default() Config {
	return Config{CheckInterval: 5 * time.Minute, RecordTTL: 12 * time.Hour}
}

// Validate reports every invalid field, naming its key.
func (c Config) Validate() error {
	var errs []error
	if c.CheckInterval < time.Second || c.CheckInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("revocation.check_interval: %v not in [1s,24h]", c.CheckInterval))
	}
	if c.RecordTTL < time.Minute || c.RecordTTL > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("revocation.record_ttl: %v not in [1m,720h]", c.RecordTTL))
	}
	return errors.Join(errs...)
}
