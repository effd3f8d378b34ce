package tap

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/songgao/water"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// device is a Linux TAP device.
type device struct {
	// immutable after Open
	file io.ReadWriteCloser // *os.File in non-blocking mode, so Close unblocks Read
	name string
	mtu  int
	mac  net.HardwareAddr
	log  *zap.Logger

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	dropped   atomic.Uint64 // frames read that were too long or too short
}

var _ Device = (*device)(nil)

// Open creates the TAP device cfg describes and configures it: MAC, MTU,
// addresses, link up. It needs root or CAP_NET_ADMIN. The interface goes
// away when the device is closed. The device reads one frame per system
// call, so its BatchSize is 1.
func Open(cfg Config, log *zap.Logger) (Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: cfg.Name},
	})
	if err != nil {
		return nil, openError(cfg.Name, err)
	}
	d := &device{file: ifce.ReadWriteCloser, name: ifce.Name(), mtu: cfg.MTU, log: log.Named("tap").With(zap.String("dev", ifce.Name()))}
	if err := d.configure(cfg); err != nil {
		d.Close()
		return nil, err
	}
	d.log.Info("device up", zap.Int("mtu", d.mtu), zap.Stringer("mac", d.mac), zap.Any("addresses", cfg.Addresses))
	return d, nil
}

// openError explains why /dev/net/tun could not give us a TAP device.
func openError(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("tap: open /dev/net/tun: %w: ringvpn up needs root or CAP_NET_ADMIN", err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENODEV):
		return fmt.Errorf("tap: open /dev/net/tun: %w: load the tun module (modprobe tun), or give the container the device (--device /dev/net/tun)", err)
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EINVAL):
		return fmt.Errorf("tap: create %q: %w: the name belongs to an interface that is not a free TAP device; choose another tap.name", name, err)
	}
	return fmt.Errorf("tap: create %q: %w", name, err)
}

// configure applies cfg to the fresh interface over rtnetlink.
func (d *device) configure(cfg Config) error {
	ifi, err := net.InterfaceByName(d.name)
	if err != nil {
		return fmt.Errorf("tap: look up %s: %w", d.name, err)
	}
	r, err := dialRTNL()
	if err != nil {
		return fmt.Errorf("tap: configure %s: %w", d.name, err)
	}
	defer r.close()
	mac := net.HardwareAddr(cfg.MAC)
	if mac != nil {
		if err := r.setLink(ifi.Index, 0, mac, false); err != nil {
			return fmt.Errorf("tap.mac: set %s on %s: %w", mac, d.name, err)
		}
	}
	if err := r.setLink(ifi.Index, cfg.MTU, nil, false); err != nil {
		return fmt.Errorf("tap.mtu: set %d on %s: %w", cfg.MTU, d.name, err)
	}
	for _, p := range cfg.Addresses {
		if err := r.addAddr(ifi.Index, p); err != nil {
			return fmt.Errorf("tap.addresses: add %s to %s: %w%s", p, d.name, err, addrHint(p, err))
		}
	}
	if err := r.setLink(ifi.Index, 0, nil, true); err != nil {
		return fmt.Errorf("tap: bring %s up: %w", d.name, err)
	}
	if mac == nil {
		if ifi, err = net.InterfaceByName(d.name); err != nil {
			return fmt.Errorf("tap: look up %s: %w", d.name, err)
		}
		mac = ifi.HardwareAddr
	}
	d.mac = append(net.HardwareAddr(nil), mac...)
	return nil
}

// addrHint suggests a fix for the usual reason an address is refused.
func addrHint(p netip.Prefix, err error) string {
	if p.Addr().Is6() && errors.Is(err, unix.EACCES) {
		return "; IPv6 is disabled: set sysctl net.ipv6.conf.all.disable_ipv6=0 or remove the IPv6 address"
	}
	return ""
}

// Read implements Device: one frame per call.
func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, fmt.Errorf("tap: Read of %d buffers and %d sizes; need at least one of each", len(bufs), len(sizes))
	}
	if offset < 0 || len(bufs[0]) < offset+FrameLen(d.mtu) {
		return 0, shortBufferError(len(bufs[0]), offset, d.mtu)
	}
	b := bufs[0][offset:]
	for {
		n, err := d.file.Read(b)
		if err != nil {
			if d.closed.Load() || errors.Is(err, os.ErrClosed) {
				return 0, ErrClosed
			}
			return 0, fmt.Errorf("tap: read %s: %w", d.name, err)
		}
		// A frame longer than b is cut short by the kernel, which then
		// returns either the frame's full length or the length of b,
		// depending on its version. b holds any frame the MTU allows, so
		// one that fills b beyond that was cut short. Nor is anything
		// shorter than an Ethernet header a frame.
		if n > len(b) || n == len(b) && n > FrameLen(d.mtu) || n < frame.EthernetHeaderLen {
			d.dropped.Add(1)
			if ce := d.log.Check(zap.DebugLevel, "drop"); ce != nil {
				ce.Write(zap.String("reason", "frame length"), zap.Int("len", n), zap.Int("buf", len(b)))
			}
			continue
		}
		sizes[0] = n
		return 1, nil
	}
}

// Write implements Device: one system call per frame, no allocation.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if offset < 0 || len(b) < offset+frame.EthernetHeaderLen {
			return i, fmt.Errorf("tap: frame %d is %d bytes with offset %d, shorter than an Ethernet header", i, len(b), offset)
		}
		if _, err := d.file.Write(b[offset:]); err != nil {
			if d.closed.Load() || errors.Is(err, os.ErrClosed) {
				return i, ErrClosed
			}
			return i, fmt.Errorf("tap: write %s: %w", d.name, err)
		}
	}
	return len(bufs), nil
}

// BatchSize implements Device.
func (d *device) BatchSize() int { return 1 }

// MTU implements Device.
func (d *device) MTU() int { return d.mtu }

// MAC implements Device.
func (d *device) MAC() net.HardwareAddr { return d.mac }

// Name implements Device.
func (d *device) Name() string { return d.name }

// Close implements Device. Closing the file both unblocks a pending Read
// (the file is non-blocking and its reads wait in the runtime poller) and
// removes the interface.
func (d *device) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.closeErr = d.file.Close()
		d.log.Info("device closed")
	})
	return d.closeErr
}
