package udp_test

import (
	"strings"
	"testing"

	"github.com/ringvpn/ringvpn/transport/udp"
)

func TestDefault_Valid(t *testing.T) {
	if err := udp.Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*udp.Config)
		want []string // substrings of the error; nil means valid
	}{
		{"zero buffers keep system default", func(c *udp.Config) { c.ReceiveBuffer, c.SendBuffer = 0, 0 }, nil},
		{"batch 1", func(c *udp.Config) { c.BatchSize = 1 }, nil},
		{"batch 128", func(c *udp.Config) { c.BatchSize = 128 }, nil},
		{"batch 0", func(c *udp.Config) { c.BatchSize = 0 }, []string{"transport.udp.batch_size: 0 not in [1,128]"}},
		{"batch 999", func(c *udp.Config) { c.BatchSize = 999 }, []string{"transport.udp.batch_size: 999 not in [1,128]"}},
		{"negative receive", func(c *udp.Config) { c.ReceiveBuffer = -1 }, []string{"transport.udp.receive_buffer: -1 not in [0,"}},
		{"huge send", func(c *udp.Config) { c.SendBuffer = 1<<30 + 1 }, []string{"transport.udp.send_buffer: 1073741825 not in [0,"}},
		{"all wrong", func(c *udp.Config) { *c = udp.Config{ReceiveBuffer: -1, SendBuffer: -2, BatchSize: -3} }, []string{
			"transport.udp.receive_buffer: -1",
			"transport.udp.send_buffer: -2",
			"transport.udp.batch_size: -3",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := udp.Default()
			tt.mod(&cfg)
			err := cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}
