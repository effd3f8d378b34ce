package tap

import (
	"errors"
	"fmt"
	"net"
)

var (
	// ErrClosed is returned by the methods of a closed Device. It wraps
	// net.ErrClosed, which is what callers should test for.
	ErrClosed = fmt.Errorf("tap: device closed: %w", net.ErrClosed)
	// ErrQueueFull is returned by Chan.Inject when the frames queued for
	// Read fill the queue.
	ErrQueueFull = errors.New("tap: queue full")
)
