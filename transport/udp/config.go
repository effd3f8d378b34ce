package udp

import (
	"errors"
	"fmt"
)

// Config tunes a Conn. The zero value is not valid; start from Default.
type Config struct {
	// ReceiveBuffer is the socket receive buffer (SO_RCVBUF) in bytes. It
	// absorbs bursts while the reader is busy; datagrams beyond it are
	// dropped by the kernel. Linux honours values above
	// net.core.rmem_max only for a process with CAP_NET_ADMIN
	// (SO_RCVBUFFORCE is tried first). 0 keeps the system default.
	ReceiveBuffer int `mapstructure:"receive_buffer"`
	// SendBuffer is the socket send buffer (SO_SNDBUF) in bytes, with the
	// same rules as ReceiveBuffer (SO_SNDBUFFORCE, net.core.wmem_max).
	// 0 keeps the system default.
	SendBuffer int `mapstructure:"send_buffer"`
	// BatchSize is the most datagrams one system call moves
	// (recvmmsg/sendmmsg on Linux); it is also what Conn.BatchSize reports
	// to the reader sizing its buffers.
	BatchSize int `mapstructure:"batch_size"`
	// Offload is "on" (the default; "" means on) to let the kernel cut
	// and merge datagrams where it can: a run of datagrams to one peer is
	// handed over in one piece (UDP GSO) and datagrams of one flow may be
	// read as one piece (UDP GRO). "off" moves every datagram on its own,
	// for a kernel or device that mishandles them.
	Offload string `mapstructure:"offload"`
}

// Default returns the defaults documented in configs/ringvpn.yaml.
func Default() Config {
	return Config{
		ReceiveBuffer: 4 << 20,
		SendBuffer:    4 << 20,
		BatchSize:     64,
		Offload:       "on",
	}
}

const (
	maxBuffer    = 1 << 30
	maxBatchSize = 128
)

// Validate reports every out-of-range field, naming its configuration key.
func (c Config) Validate() error {
	var errs []error
	if c.ReceiveBuffer < 0 || c.ReceiveBuffer > maxBuffer {
		errs = append(errs, fmt.Errorf("transport.udp.receive_buffer: %d not in [0,%d]", c.ReceiveBuffer, maxBuffer))
	}
	if c.SendBuffer < 0 || c.SendBuffer > maxBuffer {
		errs = append(errs, fmt.Errorf("transport.udp.send_buffer: %d not in [0,%d]", c.SendBuffer, maxBuffer))
	}
	if c.BatchSize < 1 || c.BatchSize > maxBatchSize {
		errs = append(errs, fmt.Errorf("transport.udp.batch_size: %d not in [1,%d]", c.BatchSize, maxBatchSize))
	}
	if c.Offload != "" && c.Offload != "on" && c.Offload != "off" {
		errs = append(errs, fmt.Errorf("transport.udp.offload: %q is not on or off", c.Offload))
	}
	return errors.Join(errs...)
}
