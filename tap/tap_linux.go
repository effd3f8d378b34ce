package tap

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ringvpn/ringvpn/tap/frame"
	"github.com/ringvpn/ringvpn/tap/offload"
)

// device is a Linux TAP device.
type device struct {
	// immutable after Open
	file *os.File // non-blocking, so its reads wait in the runtime poller and Close unblocks them
	rc   syscall.RawConn
	name string
	mtu  int
	mac  net.HardwareAddr
	log  *zap.Logger
	// vnetHdr: opened with IFF_VNET_HDR, so every read and write starts
	// with a virtio_net_hdr; reads are cut up and writes merged (see
	// package tap/offload).
	vnetHdr bool

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	dropped   atomic.Uint64 // frames read that were malformed, too long or too short
	// With vnetHdr: reads cut into more than one frame, and frames
	// written inside merged packets.
	superReads, mergedFrames atomic.Uint64

	// owned by Read (vnetHdr)
	rbuf []byte            // a virtio_net_hdr and a frame of up to 64 KB
	seg  offload.Segmenter // the segments of rbuf not yet returned

	// wmu guards the following (vnetHdr writes)
	wmu     sync.Mutex
	co      offload.Coalescer
	parts   [][]byte
	iov     []unix.Iovec
	werr    unix.Errno
	writev  func(fd uintptr) bool // d.doWritev, made once so that a write allocates nothing
	zeroHdr [offload.VnetHdrLen]byte
	// noMerge: the kernel refused a merged packet; frames go one by one.
	noMerge bool
}

var _ Device = (*device)(nil)

// TUN_F_* offloads the device takes from the kernel: checksums, and TCP
// segmentation over IPv4 and IPv6 including the CWR rule of ECN.
const tunOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN

// readBufLen holds any frame the kernel sends with offloads on: a
// virtio_net_hdr, then up to 64 KB of IP packet behind a tagged Ethernet
// header, with room to spare so that a full buffer means a frame cut
// short.
const readBufLen = 1 << 17

// Open creates the TAP device cfg describes and configures it: MAC, MTU,
// addresses, link up. It needs root or CAP_NET_ADMIN. The interface goes
// away when the device is closed.
//
// With cfg.Offload on, the device is opened with IFF_VNET_HDR and takes
// checksum and TCP segmentation offloads: a read system call brings a
// TCP super-segment of up to 64 KB that Read returns cut into frames (its
// BatchSize is offload.MaxSegments), and Write merges the TCP segments
// of a batch into super-segments, one system call each. Off, the device
// reads and writes one frame per system call, and its BatchSize is 1.
func Open(cfg Config, log *zap.Logger) (Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	vnetHdr := cfg.Offload.Enabled()
	file, name, tso, err := createTAP(cfg.Name, vnetHdr)
	if err != nil {
		return nil, openError(cfg.Name, err)
	}
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("tap: %s: %w", name, err)
	}
	d := &device{file: file, rc: rc, name: name, mtu: cfg.MTU, vnetHdr: vnetHdr, log: log.Named("tap").With(zap.String("dev", name))}
	if vnetHdr {
		d.rbuf = make([]byte, readBufLen)
		d.parts = make([][]byte, 0, offload.MaxSegments)
		d.iov = make([]unix.Iovec, 0, offload.MaxSegments+1)
		d.writev = d.doWritev
		if tso != nil {
			// Writes still merge; only reads stay one frame each.
			d.log.Warn("the kernel refused segmentation offloads; reads carry one frame each", zap.Error(tso))
		}
	}
	if err := d.configure(cfg); err != nil {
		d.Close()
		return nil, err
	}
	d.log.Info("device up", zap.Int("mtu", d.mtu), zap.Stringer("mac", d.mac), zap.Any("addresses", cfg.Addresses), zap.Bool("offload", vnetHdr && tso == nil))
	return d, nil
}

// createTAP opens /dev/net/tun and creates the TAP interface name ("" or a
// "%d" template lets the kernel number it), non-blocking. With vnetHdr it
// asks for virtio_net_hdr framing and then for offloads, whose refusal
// (tso) leaves a working device. songgao/water, which this replaces, can't
// set IFF_VNET_HDR.
func createTAP(name string, vnetHdr bool) (f *os.File, ifName string, tso, err error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", nil, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", nil, err
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", nil, os.NewSyscallError("ioctl TUNSETIFF", err)
	}
	if vnetHdr {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, offload.VnetHdrLen); err != nil {
			unix.Close(fd)
			return nil, "", nil, os.NewSyscallError("ioctl TUNSETVNETHDRSZ", err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunOffloads); err != nil {
			tso = os.NewSyscallError("ioctl TUNSETOFFLOAD", err)
		}
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), ifr.Name(), tso, nil
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

// Read implements Device.
func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, fmt.Errorf("tap: Read of %d buffers and %d sizes; need at least one of each", len(bufs), len(sizes))
	}
	if d.vnetHdr {
		return d.readSegments(bufs[:min(len(bufs), len(sizes))], sizes, offset)
	}
	if offset < 0 || len(bufs[0]) < offset+FrameLen(d.mtu) {
		return 0, shortBufferError(len(bufs[0]), offset, d.mtu)
	}
	b := bufs[0][offset:]
	for {
		n, err := d.file.Read(b)
		if err != nil {
			return 0, d.readError(err)
		}
		// A frame longer than b is cut short by the kernel, which then
		// returns either the frame's full length or the length of b,
		// depending on its version. b holds any frame the MTU allows, so
		// one that fills b beyond that was cut short. Nor is anything
		// shorter than an Ethernet header a frame.
		if n > len(b) || n == len(b) && n > FrameLen(d.mtu) || n < frame.EthernetHeaderLen {
			d.drop("frame length", n, len(b))
			continue
		}
		sizes[0] = n
		return 1, nil
	}
}

func (d *device) readError(err error) error {
	if d.closed.Load() || errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("tap: read %s: %w", d.name, err)
}

func (d *device) drop(reason string, n, buf int) {
	d.dropped.Add(1)
	if ce := d.log.Check(zap.DebugLevel, "drop"); ce != nil {
		ce.Write(zap.String("reason", reason), zap.Int("len", n), zap.Int("buf", buf))
	}
}

// readSegments is Read with a virtio_net_hdr: one read system call brings
// a frame or a TCP super-segment, whose segments go into bufs; those that
// do not fit wait for the next call. A frame longer than FrameLen(MTU)
// (the kernel sends none unless the interface's MTU was raised behind
// our back) is returned only in bufs[0], and only if it fits there.
func (d *device) readSegments(bufs [][]byte, sizes []int, offset int) (int, error) {
	for _, b := range bufs {
		if offset < 0 || len(b) < offset+FrameLen(d.mtu) {
			return 0, shortBufferError(len(b), offset, d.mtu)
		}
	}
	room := len(bufs[0]) - offset
	for {
		for d.seg.Remaining() == 0 {
			n, err := d.file.Read(d.rbuf)
			if err != nil {
				return 0, d.readError(err)
			}
			if n >= len(d.rbuf) || n < offload.VnetHdrLen+frame.EthernetHeaderLen {
				d.drop("frame length", n, len(d.rbuf))
				continue
			}
			h, _ := offload.ParseVnetHdr(d.rbuf)
			if err := d.seg.Reset(h, d.rbuf[offload.VnetHdrLen:n]); err != nil {
				d.dropped.Add(1)
				if ce := d.log.Check(zap.DebugLevel, "drop"); ce != nil {
					ce.Write(zap.String("reason", "offload"), zap.Error(err), zap.Int("len", n))
				}
				continue
			}
			if d.seg.MaxLen() > room {
				d.drop("frame length", d.seg.MaxLen(), room)
				d.seg = offload.Segmenter{}
			} else if d.seg.Remaining() > 1 {
				d.superReads.Add(1)
			}
		}
		n := 0
		for n < len(bufs) && d.seg.Remaining() > 0 {
			m, err := d.seg.Next(bufs[n][offset:])
			if err != nil {
				if n > 0 {
					break // into bufs[0] next time
				}
				// Left from a call with a longer bufs[0].
				d.drop("frame length", d.seg.MaxLen(), room)
				d.seg = offload.Segmenter{}
				break
			}
			sizes[n] = m
			n++
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Write implements Device. Without offloads it makes one system call per
// frame; with them one per packet the Coalescer makes of the batch. It
// does not allocate.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	end := len(bufs)
	var bad error
	for i, b := range bufs {
		if offset < 0 || len(b) < offset+frame.EthernetHeaderLen {
			end, bad = i, fmt.Errorf("tap: frame %d is %d bytes with offset %d, shorter than an Ethernet header", i, len(b), offset)
			break
		}
	}
	var n int
	var err error
	if d.vnetHdr {
		n, err = d.writeMerged(bufs[:end], offset)
	} else {
		for n < end {
			if _, err = d.file.Write(bufs[n][offset:]); err != nil {
				break
			}
			n++
		}
	}
	if err != nil {
		if d.closed.Load() || errors.Is(err, os.ErrClosed) {
			return n, ErrClosed
		}
		return n, fmt.Errorf("tap: write %s: %w", d.name, err)
	}
	return n, bad
}

// writeMerged writes bufs[i][offset:] through the Coalescer, MaxBatch at
// a time. n counts the frames written; with an error, they need not be
// the first n, as merging writes a flow's frames together.
func (d *device) writeMerged(bufs [][]byte, offset int) (n int, err error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	defer func() {
		// Keep no caller's buffer alive.
		clear(d.iov[:cap(d.iov)])
		clear(d.parts[:cap(d.parts)])
	}()
	if d.noMerge {
		for _, b := range bufs {
			if err := d.writeParts(d.zeroHdr[:], append(d.parts[:0], b[offset:])); err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	}
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), offload.MaxBatch)]
		bufs = bufs[len(chunk):]
		d.co.Reset()
		for _, b := range chunk {
			d.co.Add(b[offset:])
		}
		for k := range d.co.Len() {
			hdr, parts := d.co.Packet(k, d.parts[:0])
			err := d.writeParts(hdr, parts)
			if err != nil && errors.Is(err, unix.EINVAL) && d.co.Frames(k) > 1 {
				// The kernel refused the merged packet (it checks the
				// virtio_net_hdr against the headers): a bug to report,
				// and no reason to lose the frames.
				d.noMerge = true
				d.log.Error("the kernel refused a merged TCP packet; writing frames one by one from now on", zap.Error(err), zap.Int("frames", d.co.Frames(k)))
				err = nil
				for _, f := range d.co.AppendFrames(d.parts[:0], k) {
					if err = d.writeParts(d.zeroHdr[:], [][]byte{f}); err != nil {
						break
					}
				}
			}
			if err != nil {
				return n, err
			}
			if f := d.co.Frames(k); f > 1 && !d.noMerge {
				d.mergedFrames.Add(uint64(f))
			}
			n += d.co.Frames(k)
		}
	}
	return n, nil
}

// writeParts writes hdr and parts as one packet (writev); d.wmu held.
func (d *device) writeParts(hdr []byte, parts [][]byte) error {
	d.iov = append(d.iov[:0], iovec(hdr))
	for _, p := range parts {
		if len(p) > 0 {
			d.iov = append(d.iov, iovec(p))
		}
	}
	d.werr = 0
	if err := d.rc.Write(d.writev); err != nil {
		return err
	}
	if d.werr != 0 {
		return os.NewSyscallError("writev", d.werr)
	}
	return nil
}

func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return v
}

// doWritev is the system call writeParts makes through the runtime
// poller; false asks the poller to wait until the device takes more.
func (d *device) doWritev(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.iov[0])), uintptr(len(d.iov)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		d.werr = e
		return true
	}
}

// BatchSize implements Device.
func (d *device) BatchSize() int {
	if d.vnetHdr {
		return offload.MaxSegments
	}
	return 1
}

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
