package vpn_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/overlaytest"
	"github.com/ringvpn/ringvpn/overlay/sim"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap"
	"github.com/ringvpn/ringvpn/tap/frame"
)

// member is one VPN member of a test cluster: its ring node, its VPN and
// the in-memory device standing for its TAP.
type member struct {
	*sim.Member
	ip    netip.Addr
	dev   *tap.Chan
	vpn   *vpn.VPN
	pipes *overlay.Pipes
	dht   *dht.DHT

	mu    sync.Mutex
	piped [][]byte // payloads of the routed-pipe messages it received
}

func (m *member) pipedPayloads() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.piped
}

var (
	gateway      = net.HardwareAddr{0x02, 0x72, 0x76, 0x70, 0x6e, 0x01}
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func vip(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 66, 0, byte(i + 1)}) }

// newVPNCluster starts n ring nodes over real DTLS on memnet, each with a
// VPN on an in-memory device and virtual IP 10.66.0.<i+1>/24. Near links
// are few, so some pairs have no direct link and start on routed pipes.
func newVPNCluster(t *testing.T, n int, cfg vpn.Config) []*member {
	t.Helper()
	return newVPNClusterWith(t, n, func(int, *vpn.Config, *security.MemberSpec) {}, cfg)
}

// newVPNClusterWith is newVPNCluster with each member's VPN configuration
// (base to start with) and certificate (its IP set; the name is set
// after) adjusted by setup.
func newVPNClusterWith(t *testing.T, n int, setup func(i int, cfg *vpn.Config, spec *security.MemberSpec), base vpn.Config) []*member {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	members := make([]*member, n)
	cfgs, specs := make([]vpn.Config, n), make([]security.MemberSpec, n)
	for i := range n {
		cfgs[i], specs[i] = base, security.MemberSpec{IPs: []netip.Prefix{netip.PrefixFrom(vip(i), 24)}}
		setup(i, &cfgs[i], &specs[i])
	}
	ocfg := overlaytest.FastConfig()
	ocfg.Near, ocfg.Far, ocfg.MaxLinks = 1, 1, 3
	opts := sim.Options{
		N: n, Secure: true, Overlay: ocfg, Log: log,
		Spec: func(i int) security.MemberSpec { return specs[i] },
		OnNode: func(sm *sim.Member) error {
			m := &member{Member: sm, ip: vip(sm.Index)}
			verify := vpn.Verifier(dht.VerifyWith(sm.Bundle))
			dcfg := dht.Default()
			dcfg.RequestTimeout = time.Second
			var err error
			if m.dht, err = dht.New(sm.Node, dcfg, verify, log); err != nil {
				return err
			}
			ep := sm.Linker.(*overlay.SecureLinker).Endpoint()
			if m.pipes, err = overlay.NewPipes(sm.Node, ep, overlay.DefaultPipeConfig(), log); err != nil {
				return err
			}
			// Record what routed-pipe messages carry: the nodes on the way
			// forward the payload untouched, so this is what they held.
			sm.Node.Handle(overlay.TypePipe, func(msg *overlay.Message) {
				m.mu.Lock()
				m.piped = append(m.piped, bytes.Clone(msg.Payload))
				m.mu.Unlock()
				m.pipes.HandleMessage(msg)
			})
			m.dev = tap.NewChan(1300, tap.MACFromBytes(sm.Identity.Member.Address[:]))
			if m.vpn, err = vpn.New(vpn.Params{
				Node: sm.Node, DHT: m.dht, Pipes: m.pipes, Device: m.dev, Identity: sm.Identity,
				Verify: verify, Config: cfgs[sm.Index], Log: log,
			}); err != nil {
				return err
			}
			m.vpn.Start()
			members[sm.Index] = m
			return nil
		},
	}
	overlaytest.NewCluster(t, opts)
	t.Cleanup(func() {
		for _, m := range members {
			if m != nil {
				m.vpn.Close()
				m.pipes.Close()
				m.dht.Close()
			}
		}
	})
	return members
}

// udpFrame builds an Ethernet frame with an IPv4/UDP packet from port
// 4000 to port 4001.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, payload []byte) []byte {
	return udpFramePorts(dstMAC, srcMAC, netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 4001), payload)
}

// udpFramePorts builds an Ethernet frame with an IPv4/UDP packet.
func udpFramePorts(dstMAC, srcMAC net.HardwareAddr, from, to netip.AddrPort, payload []byte) []byte {
	src, dst := from.Addr(), to.Addr()
	f := frame.AppendEthernet(nil, dstMAC, srcMAC, frame.TypeIPv4)
	ip := make([]byte, 20+8+len(payload))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], frame.Checksum(ip[:20], 0))
	binary.BigEndian.PutUint16(ip[20:], from.Port())
	binary.BigEndian.PutUint16(ip[22:], to.Port())
	binary.BigEndian.PutUint16(ip[24:], uint16(8+len(payload)))
	copy(ip[28:], payload)
	return append(f, ip...)
}

// deliver sends payload from a to b's virtual IP until b's device has it
// (the first packets may go while b's record is still being published),
// and returns the frame b's device got.
func deliver(t *testing.T, a, b *member, payload []byte, within time.Duration) []byte {
	t.Helper()
	return deliverFrame(t, a, b, udpFrame(gateway, a.dev.MAC(), a.ip, b.ip, payload), payload, within)
}

// deliverFrame is deliver for a frame f that ends with payload.
func deliverFrame(t *testing.T, a, b *member, f, payload []byte, within time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := a.dev.Inject(f); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		for {
			got, err := b.dev.Take(ctx)
			if err != nil {
				break
			}
			if bytes.HasSuffix(got, payload) {
				cancel()
				return got
			}
		}
		cancel()
	}
	t.Fatalf("%s -> %s: %q not delivered within %v; a: %+v; b: %+v", a.ip, b.ip, payload, within,
		a.vpn.Status().Counters, b.vpn.Status().Counters)
	return nil
}

func peerStatus(v *vpn.VPN, addr overlay.Address) (vpn.PeerStatus, bool) {
	for _, p := range v.Status().Peers {
		if p.Address == addr {
			return p, true
		}
	}
	return vpn.PeerStatus{}, false
}

func TestVPN_FramesCrossTheRing(t *testing.T) {
	cfg := vpn.Default()
	cfg.NegativeTTL = 100 * time.Millisecond
	cfg.ShortcutPackets = 20
	cfg.ResolveTimeout = 2 * time.Second
	ms := newVPNCluster(t, 10, cfg)

	// Pick a pair with no direct link: its first packets take a pipe.
	var a, b *member
	for _, x := range ms {
		for _, y := range ms {
			if x == y || a != nil {
				continue
			}
			if _, linked := x.Node.Linked(y.Node.Address()); !linked {
				a, b = x, y
			}
		}
	}
	if a == nil {
		t.Fatal("every pair of 10 nodes with one near link each side is linked: the test needs an unlinked pair")
	}
	t.Logf("%s (%s) -> %s (%s), not linked", a.Identity.Member.Name, a.ip, b.Identity.Member.Name, b.ip)

	t.Run("arp is answered locally", func(t *testing.T) {
		req := frame.AppendARP(nil, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, frame.ARP{Op: frame.ARPRequest, SenderMAC: a.dev.MAC(), SenderIP: a.ip,
			TargetMAC: make(net.HardwareAddr, 6), TargetIP: b.ip})
		if err := a.dev.Inject(req); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := a.dev.Take(ctx)
		if err != nil {
			t.Fatalf("no ARP reply: %v", err)
		}
		eth, err := frame.ParseEthernet(got)
		if err != nil || eth.Type != frame.TypeARP {
			t.Fatalf("not an ARP frame: %v %x", err, got)
		}
		rep, err := frame.ParseARP(eth.Payload)
		if err != nil || rep.Op != frame.ARPReply || rep.SenderIP != b.ip || !bytes.Equal(rep.SenderMAC, gateway) || rep.TargetIP != a.ip {
			t.Fatalf("ARP reply %+v (%v), want %s is-at %s", rep, err, b.ip, gateway)
		}
	})

	secret := []byte("ringvpn-secret-payload-0")
	t.Run("first packets take a routed pipe", func(t *testing.T) {
		got := deliver(t, a, b, secret, 15*time.Second)
		eth, err := frame.ParseEthernet(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(eth.Dst, b.dev.MAC()) || !bytes.Equal(eth.Src, gateway) {
			t.Errorf("frame from %s to %s, want from the gateway %s to the device %s", eth.Src, eth.Dst, gateway, b.dev.MAC())
		}
		ip, err := frame.ParseIPv4(eth.Payload)
		if err != nil || ip.Src != a.ip || ip.Dst != b.ip {
			t.Errorf("IP %s -> %s (%v), want %s -> %s", ip.Src, ip.Dst, err, a.ip, b.ip)
		}
		ps, ok := peerStatus(a.vpn, b.Node.Address())
		if !ok || ps.Path != vpn.PathPipe {
			t.Errorf("path to %s: %+v, want %q", b.ip, ps, vpn.PathPipe)
		}
		// And back: b learned a's address from the packet itself.
		deliver(t, b, a, []byte("reply"), 5*time.Second)
	})

	t.Run("traffic makes a shortcut", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; ; i++ {
			f := udpFrame(gateway, a.dev.MAC(), a.ip, b.ip, fmt.Appendf(nil, "ringvpn-secret-payload-%d", i))
			if err := a.dev.Inject(f); err != nil {
				t.Fatal(err)
			}
			if i%10 == 0 {
				if ps, _ := peerStatus(a.vpn, b.Node.Address()); ps.Path == vpn.PathDirect && ps.Kinds&overlay.KindShortcut != 0 {
					t.Logf("shortcut after %d packets: %+v", i, ps)
					break
				}
			}
			if time.Now().After(deadline) {
				ps, _ := peerStatus(a.vpn, b.Node.Address())
				t.Fatalf("no shortcut after %d packets: %+v; counters %+v", i, ps, a.vpn.Status().Counters)
			}
			time.Sleep(5 * time.Millisecond)
		}
		deliver(t, a, b, []byte("over the shortcut"), 5*time.Second)
	})

	t.Run("nodes on the way saw only sealed records", func(t *testing.T) {
		piped := b.pipedPayloads()
		if len(piped) == 0 {
			t.Fatal("no routed-pipe message reached b: the pipe phase did not happen")
		}
		for _, p := range piped {
			if bytes.Contains(p, []byte("ringvpn-secret-payload")) {
				t.Fatalf("a routed-pipe message carried the payload in clear: %q", p)
			}
		}
	})

	t.Run("spoofed source is dropped", func(t *testing.T) {
		var c *member
		for _, x := range ms {
			if x != a && x != b {
				c = x
				break
			}
		}
		deliver(t, c, b, []byte("honest"), 15*time.Second)
		before := b.vpn.Status().DropSpoofed
		spoofed := udpFrame(gateway, c.dev.MAC(), a.ip, b.ip, []byte("spoofed"))
		for range 5 {
			if err := c.dev.Inject(spoofed); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for {
			got, err := b.dev.Take(ctx)
			if err != nil {
				break
			}
			if bytes.HasSuffix(got, []byte("spoofed")) {
				t.Fatal("a packet with a spoofed source reached the device")
			}
		}
		if after := b.vpn.Status().DropSpoofed; after < before+5 {
			t.Errorf("spoofed drops %d -> %d, want 5 more", before, after)
		}
	})

	t.Run("a subnet broadcast reaches every other member once", func(t *testing.T) {
		payload := []byte("broadcast-to-all")
		f := udpFrame(broadcastMAC, a.dev.MAC(), a.ip, netip.MustParseAddr("10.66.0.255"), payload)
		if err := a.dev.Inject(f); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m == a {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			got := 0
			for {
				g, err := m.dev.Take(ctx)
				if err != nil {
					break
				}
				if !bytes.HasSuffix(g, payload) {
					continue
				}
				got++
				if !bytes.Equal(g[:6], broadcastMAC) || !bytes.Equal(g[6:12], gateway) {
					t.Errorf("%s: broadcast frame from %x to %x", m.ip, g[6:12], g[:6])
				}
				cancel() // one is enough; a second within the wait would be a duplicate
				ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
			}
			cancel()
			if got != 1 {
				t.Errorf("%s got the broadcast %d times, want once; counters %+v", m.ip, got, m.vpn.Status().Counters)
			}
		}
	})

	t.Run("unclaimed address is dropped", func(t *testing.T) {
		nobody := netip.MustParseAddr("10.66.0.200")
		f := udpFrame(gateway, a.dev.MAC(), a.ip, nobody, []byte("to nobody"))
		before := a.vpn.Status().DropUnresolved
		if err := a.dev.Inject(f); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for a.vpn.Status().DropUnresolved == before {
			if time.Now().After(deadline) {
				t.Fatalf("a packet to %s was not counted as unresolved: %+v", nobody, a.vpn.Status().Counters)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
