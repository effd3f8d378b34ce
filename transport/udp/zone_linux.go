package udp

import (
	"net"
	"strconv"
)

// zoneCache remembers one IPv6 zone (interface name) and its index, so the
// rare link-local peer does not cost an interface lookup per datagram.
// It is not safe for concurrent use.
type zoneCache struct {
	idx  uint32
	zone string
}

// name returns the zone for an interface index: its name, or the index in
// decimal if the interface is gone.
func (z *zoneCache) name(idx uint32) string {
	if z.idx != idx || z.zone == "" {
		z.idx, z.zone = idx, strconv.FormatUint(uint64(idx), 10)
		if ifi, err := net.InterfaceByIndex(int(idx)); err == nil {
			z.zone = ifi.Name
		}
	}
	return z.zone
}

// index returns the interface index for a zone, a name or a decimal index,
// or 0 if there is no such interface.
func (z *zoneCache) index(zone string) uint32 {
	if zone == z.zone && z.idx != 0 {
		return z.idx
	}
	var idx uint32
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		idx = uint32(n)
	} else if ifi, err := net.InterfaceByName(zone); err == nil {
		idx = uint32(ifi.Index)
	}
	if idx != 0 {
		z.idx, z.zone = idx, zone
	}
	return idx
}
