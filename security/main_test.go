package security

import (
	"testing"

	"go.uber.org/goleak"
)

// Every link test ends with its endpoints closed: no pion engine, handshake
// or rekey goroutine may outlive it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
