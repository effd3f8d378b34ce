// Package vpn carries the Ethernet frames of a virtual interface across
// the ring, with IP semantics (as IPOP did): ARP requests and IPv6
// neighbour solicitations for virtual addresses are answered locally, an
// IP packet goes to the member whose certificate carries its destination
// (found through signed DHT records, then cached), and an inbound packet
// is written to the interface only if its source is the sender's own.
// Both ways, IP packets then pass the member's stateful firewall
// (vpn.firewall, package firewall; off without rules): a packet to a
// member is checked against its certificate before it is sent, one from
// a member before it is written.
//
// A packet travels over the direct link to its destination when there is
// one (a ring link or a shortcut); otherwise over an end-to-end session on
// a routed pipe, opened on the first packet, while a shortcut is asked
// for once traffic passes vpn.shortcut_packets. Either way only the two
// ends can read it.
package vpn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap"
)

// Params are what a VPN runs on. The VPN owns Device (Close closes it);
// the rest stay the caller's.
type Params struct {
	Node     *overlay.Node
	DHT      *dht.DHT
	Pipes    *overlay.Pipes
	Device   tap.Device
	Identity *security.Identity
	// Verify checks vip records (Verifier around the DHT's own).
	Verify dht.Verifier
	Config Config
	Log    *zap.Logger
	// Batcher, when set, is corked while a batch of frames from the
	// device is sent, so their datagrams leave together (the node's
	// transport.Mux).
	Batcher Batcher
}

// Batcher holds back datagrams between Cork and Uncork and then sends
// them with as few system calls as it can; *transport.Mux is one.
type Batcher interface {
	Cork()
	Uncork()
}

// headroom is the space kept in front of every frame: the data header
// of a direct link, or the session header of a routed-pipe session.
const headroom = overlay.DataHeaderLen

// sessionFrame marks a frame on an end-to-end session (the first byte of
// every session packet, so later message kinds can share the session).
const sessionFrame = 0x01

// gatewayMAC answers every ARP request and neighbour solicitation for a
// virtual address, and is the source of every frame written to the
// interface: to the kernel, the other members sit behind one router.
var gatewayMAC = net.HardwareAddr{0x02, 0x72, 0x76, 0x70, 0x6e, 0x01}

// VPN joins a device to the ring.
type VPN struct {
	// immutable after New
	node   *overlay.Node
	dht    *dht.DHT
	pipes  *overlay.Pipes
	dev    tap.Device
	id     *security.Identity
	verify dht.Verifier
	cfg    Config
	log    *zap.Logger
	// batcher is corked around each batch of frames read; may be nil.
	batcher Batcher
	mac     net.HardwareAddr
	own     []netip.Prefix // our certificate's IPs: fixed ones and pools
	fixed   []netip.Prefix // our fixed virtual IPs
	pools   []netip.Prefix // the pools we lease an address from
	// addresser changes the device's addresses (nil: it can't, as in
	// tests; a lease is held all the same).
	addresser tap.Addresser
	names     *namePublisher // nil without vpn.dns.enabled
	dnsSrv    *dnsServer     // nil without vpn.dns.enabled or addresser
	// maxPacket is the largest IP packet carried: the device MTU.
	maxPacket int
	// fw filters the IP packets to and from members (always set; off
	// without rules). Its rules change with ReloadFirewall.
	fw        *firewall.Firewall
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stats     counters
	writeBufs sync.Pool // *[1][]byte, so a direct device write allocates nothing
	wq        *writeQueue
	started   time.Time
	bcast     bcastState
	resolving atomic.Int32 // DHT lookups in flight (peers.go)
	// leases are the addresses held from pools (lease.go), written
	// under leaseMu.
	leases  atomic.Pointer[[]netip.Prefix]
	leaseMu sync.Mutex

	mu     sync.Mutex
	closed bool
	byIP   map[netip.Addr]*mapping
	byAddr map[overlay.Address]*remote
}

// New checks p and builds a VPN; Start runs it.
func New(p Params) (*VPN, error) {
	if err := p.Config.Validate(); err != nil {
		return nil, err
	}
	if p.Node == nil || p.DHT == nil || p.Pipes == nil || p.Device == nil || p.Identity == nil || p.Verify == nil || p.Log == nil {
		return nil, errors.New("vpn: Params needs Node, DHT, Pipes, Device, Identity, Verify and Log")
	}
	if len(p.Identity.Member.IPs) == 0 {
		return nil, fmt.Errorf("vpn: the certificate of %q carries no virtual IP; issue one with `ringvpn cert issue --ip`", p.Identity.Member.Name)
	}
	log := p.Log.Named("vpn")
	fw, err := firewall.New(p.Config.Firewall, log)
	if err != nil {
		return nil, err // not reached: Validate checked it
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &VPN{
		node:      p.Node,
		dht:       p.DHT,
		pipes:     p.Pipes,
		dev:       p.Device,
		id:        p.Identity,
		verify:    p.Verify,
		batcher:   p.Batcher,
		cfg:       p.Config,
		log:       log,
		mac:       p.Device.MAC(),
		own:       p.Identity.Member.IPs,
		fixed:     p.Identity.Member.FixedIPs(),
		pools:     p.Identity.Member.Pools(),
		maxPacket: p.Device.MTU(),
		fw:        fw,
		ctx:       ctx,
		cancel:    cancel,
		byIP:      make(map[netip.Addr]*mapping),
		byAddr:    make(map[overlay.Address]*remote),
		started:   time.Now(),
	}
	v.addresser, _ = p.Device.(tap.Addresser)
	if p.Config.DNS.Enabled {
		v.names = newNamePublisher(v)
		if v.addresser != nil {
			// A device whose addresses are real: the responder can
			// listen on them.
			v.dnsSrv = newDNSServer(v.lookupName, p.Config.DNS, log)
		}
	}
	v.writeBufs.New = func() any { return new([1][]byte) }
	v.wq = newWriteQueue(writeQueueLen, tap.FrameLen(v.maxPacket))
	return v, nil
}

// Start starts reading the device, accepting sessions and publishing
// this member's virtual IPs.
func (v *VPN) Start() {
	v.node.HandleData(v.receive)
	v.node.Handle(TypeBroadcast, v.onBroadcast)
	v.spawn(v.readLoop)
	v.spawn(v.writeLoop)
	v.spawn(v.acceptLoop)
	v.spawn(v.publishLoop)
	v.spawn(v.houseLoop)
	for _, pool := range v.pools {
		v.spawn(func() { v.leaseLoop(pool) })
	}
	if v.names != nil {
		v.spawn(v.names.loop)
	}
	if v.dnsSrv != nil {
		v.dnsSrv.listenOn(v.ownIPs())
	}
}

// Close stops the VPN, closes its sessions and the device.
func (v *VPN) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	remotes := make([]*remote, 0, len(v.byAddr))
	for _, r := range v.byAddr {
		remotes = append(remotes, r)
	}
	v.mu.Unlock()
	v.node.HandleData(nil)
	v.node.Handle(TypeBroadcast, nil)
	v.cancel()
	if v.dnsSrv != nil {
		v.dnsSrv.close()
	}
	err := v.dev.Close()
	for _, r := range remotes {
		r.close()
	}
	v.wg.Wait()
	return err
}

// ReloadFirewall checks cfg (the vpn.firewall section) and, if it is
// valid, filters with its rules from the next packet on; else it returns
// the error, which names the bad keys, and the rules stay. Tracked flows
// are kept; a flow the new rules no longer allow is dropped at its next
// packet. Safe to call while packets flow (on SIGHUP, say).
func (v *VPN) ReloadFirewall(cfg firewall.Config) error {
	return v.fw.Reload(cfg)
}

func (v *VPN) spawn(f func()) {
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		f()
	}()
}

// readLoop reads frames from the device and sends each on its way.
// (Reading the next batch while another goroutine sends this one was
// tried: no faster, as sending is most of the work.)
func (v *VPN) readLoop() {
	size := max(1, v.dev.BatchSize())
	bufs, sizes := make([][]byte, size), make([]int, size)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+tap.FrameLen(v.maxPacket))
	}
	// Room in the first for the largest frame a device hands over, not
	// just the MTU: a frame is never cut short.
	bufs[0] = make([]byte, headroom+65535)
	for {
		n, err := v.dev.Read(bufs, sizes, headroom)
		if err != nil {
			if v.ctx.Err() == nil {
				v.log.Error("reading the device failed; the VPN stops", zap.String("device", v.dev.Name()), zap.Error(err))
			}
			return
		}
		if v.batcher != nil {
			v.batcher.Cork()
		}
		for i := range n {
			v.outbound(bufs[i][:headroom+sizes[i]])
		}
		if v.batcher != nil {
			v.batcher.Uncork()
		}
	}
}

// writeFrame queues a copy of frame for the device, or writes it at once
// if the device is idle; the caller keeps frame. It never waits for
// queued frames: when writeLoop falls behind, the frame is dropped and
// counted.
func (v *VPN) writeFrame(frame []byte) {
	if len(frame) > v.wq.slotLen {
		// Larger than the device's MTU allows (a peer with a larger one):
		// rare, so written at once rather than queued in larger buffers.
		v.writeDirect(frame)
		return
	}
	inline, ok := v.wq.push(frame, time.Since(v.started))
	switch {
	case inline:
		v.writeDirect(frame)
		v.wq.done()
	case !ok:
		v.stats.dropQueueFull.Add(1)
	}
}

// writeDirect writes one frame to the device from the calling goroutine.
func (v *VPN) writeDirect(frame []byte) {
	b := v.writeBufs.Get().(*[1][]byte)
	b[0] = frame
	n, err := v.dev.Write(b[:], 0)
	b[0] = nil
	v.writeBufs.Put(b)
	v.countWritten(1, n, err)
}

// writeLoop writes the queued frames to the device: all there are, up to
// writeBatch, in one Write, so that a device with offloads merges the
// segments of a TCP flow into one system call.
func (v *VPN) writeLoop() {
	bufs := make([][]byte, writeBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 0, v.wq.slotLen)
	}
	for {
		n := v.wq.take(bufs)
		if n == 0 {
			select {
			case <-v.wq.ready:
				continue
			case <-v.ctx.Done():
				return
			}
		}
		written, err := v.dev.Write(bufs[:n], 0)
		v.wq.done()
		v.countWritten(n, written, err)
	}
}

// countWritten counts a device write of n frames that wrote written.
func (v *VPN) countWritten(n, written int, err error) {
	v.stats.framesIn.Add(uint64(written))
	if err != nil {
		v.stats.writeFailed.Add(uint64(n - written))
		if ce := v.log.Check(zap.DebugLevel, "device write failed"); ce != nil {
			ce.Write(zap.Int("frames", n-written), zap.Error(err))
		}
	}
}

// isOwn reports whether ip is one of this member's virtual IPs, fixed or
// leased.
func (v *VPN) isOwn(ip netip.Addr) bool {
	for _, p := range v.fixed {
		if p.Addr() == ip {
			return true
		}
	}
	if l := v.leases.Load(); l != nil {
		for _, p := range *l {
			if p.Addr() == ip {
				return true
			}
		}
	}
	return false
}

// inOurNetworks reports whether ip lies in one of the networks of our
// virtual IPs (so ARP for it is ours to answer).
func (v *VPN) inOurNetworks(ip netip.Addr) bool {
	for _, p := range v.own {
		if p.Masked().Contains(ip) {
			return true
		}
	}
	return false
}

type counters struct {
	framesOut, framesIn, bytesOut, bytesIn                       atomic.Uint64
	arpAnswered, ndpAnswered, tooBig, mssClamped                 atomic.Uint64
	dropMalformed, dropNotIP, dropSpoofed, dropNotForUs          atomic.Uint64
	dropBroadcast, dropUnresolved, dropQueueFull, dropSendFailed atomic.Uint64
	writeFailed, sessionsOpened, sessionsAccepted, openFailed    atomic.Uint64
	resolved, resolveFailed, shortcutsAsked                      atomic.Uint64
	dropUnverified, leasesTaken, leaseConflicts, leasesLost      atomic.Uint64
	broadcastsOut, broadcastsIn                                  atomic.Uint64
}
