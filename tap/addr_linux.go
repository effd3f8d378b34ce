package tap

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

var _ Addresser = (*device)(nil)

// AddAddress assigns p to the interface.
func (d *device) AddAddress(p netip.Prefix) error {
	return d.changeAddr(p, true)
}

// RemoveAddress takes p off the interface.
func (d *device) RemoveAddress(p netip.Prefix) error {
	return d.changeAddr(p, false)
}

func (d *device) changeAddr(p netip.Prefix, add bool) error {
	if d.closed.Load() {
		return net.ErrClosed
	}
	ifi, err := net.InterfaceByName(d.name)
	if err != nil {
		return fmt.Errorf("tap: look up %s: %w", d.name, err)
	}
	r, err := dialRTNL()
	if err != nil {
		return fmt.Errorf("tap: configure %s: %w", d.name, err)
	}
	defer r.close()
	if add {
		if err := r.addAddr(ifi.Index, p); err != nil {
			return fmt.Errorf("tap: add %s to %s: %w%s", p, d.name, err, addrHint(p, err))
		}
		return nil
	}
	if err := r.delAddr(ifi.Index, p); err != nil {
		return fmt.Errorf("tap: remove %s from %s: %w", p, d.name, err)
	}
	return nil
}

// delAddr removes p from the interface.
func (r *rtnl) delAddr(index int, p netip.Prefix) error {
	a := p.Addr()
	family := uint8(unix.AF_INET6)
	if a.Is4() {
		family = unix.AF_INET
	}
	msg := make([]byte, 8, 32)
	msg[0], msg[1] = family, uint8(p.Bits())
	binary.NativeEndian.PutUint32(msg[4:], uint32(index))
	msg = appendAttr(msg, unix.IFA_LOCAL, a.AsSlice())
	return r.request(unix.RTM_DELADDR, 0, msg)
}
