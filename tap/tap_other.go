//go:build !linux

package tap

import (
	"errors"

	"go.uber.org/zap"
)

// Open creates a TAP device; only Linux is supported so far.
func Open(cfg Config, log *zap.Logger) (Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, errors.New("tap: TAP devices are supported on Linux only; run ringvpn on Linux")
}
