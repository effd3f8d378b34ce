package tap

import (
	"bytes"
	"testing"
)

func TestMACFromBytes(t *testing.T) {
	seen := map[string]bool{}
	for _, in := range []string{"", "a", "b", "node-1", "node-2", string(make([]byte, 20))} {
		mac := MACFromBytes([]byte(in))
		if len(mac) != 6 {
			t.Fatalf("MACFromBytes(%q) = %v: %d bytes", in, mac, len(mac))
		}
		if mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
			t.Errorf("MACFromBytes(%q) = %v: want unicast and locally administered", in, mac)
		}
		if !bytes.Equal(mac, MACFromBytes([]byte(in))) {
			t.Errorf("MACFromBytes(%q) is not stable", in)
		}
		if seen[mac.String()] {
			t.Errorf("MACFromBytes(%q) = %v collides", in, mac)
		}
		seen[mac.String()] = true
	}
}
