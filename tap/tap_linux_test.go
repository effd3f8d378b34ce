package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/ringvpn/ringvpn/tap/frame"
	"github.com/ringvpn/ringvpn/tap/offload"
	"github.com/ringvpn/ringvpn/tap/taptest"
)

// openTestTAP opens a TAP in a fresh network namespace that the calling
// goroutine enters for good (see taptest.LockNetns).
func openTestTAP(t *testing.T, cfg Config) Device {
	t.Helper()
	taptest.RequireRoot(t)
	taptest.LockNetns(t)
	d, err := Open(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// reader reads frames from d on its own goroutine, so the test can wait
// for them with a deadline. Stopped by closing d.
type reader struct {
	frames chan []byte
	done   chan struct{}
	err    error
}

func startReader(t *testing.T, d Device, bufLen int) *reader {
	r := &reader{frames: make(chan []byte, 64), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		bufs, sizes := [][]byte{make([]byte, 8+bufLen)}, []int{0}
		for {
			n, err := d.Read(bufs, sizes, 8)
			if err != nil {
				r.err = err
				return
			}
			if n != 1 {
				r.err = fmt.Errorf("Read = %d frames, want 1", n)
				return
			}
			r.frames <- bytes.Clone(bufs[0][8 : 8+sizes[0]])
		}
	}()
	t.Cleanup(func() {
		d.Close()
		<-r.done
		if !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("Read ended with %v, want net.ErrClosed", r.err)
		}
	})
	return r
}

// next returns the first frame for which match returns true, skipping the
// kernel's other chatter (IPv6 router solicitations, MLD reports). The
// wait is long: a new IPv6 address is unusable until its duplicate address
// detection ends, which a busy machine stretches.
func (r *reader) next(t *testing.T, what string, match func(f []byte) bool) []byte {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case f := <-r.frames:
			if match(f) {
				return f
			}
		case <-timeout:
			t.Fatalf("no %s within 15s", what)
		}
	}
}

func TestOpen_ConfiguresDevice(t *testing.T) {
	mac := MACFromBytes([]byte(t.Name()))
	d := openTestTAP(t, Config{
		Name:      "rvtest%d",
		MTU:       1400,
		MAC:       MAC(mac),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd77::1/64"), netip.MustParsePrefix("10.78.0.1/32")},
	})
	if d.Name() != "rvtest0" || d.MTU() != 1400 || !bytes.Equal(d.MAC(), mac) || d.BatchSize() != offload.MaxSegments {
		t.Errorf("device %s: mtu %d, mac %v, batch %d", d.Name(), d.MTU(), d.MAC(), d.BatchSize())
	}

	ifi, err := net.InterfaceByName(d.Name())
	if err != nil {
		t.Fatal(err)
	}
	if ifi.MTU != 1400 || !bytes.Equal(ifi.HardwareAddr, mac) || ifi.Flags&net.FlagUp == 0 {
		t.Errorf("kernel sees %s: mtu %d, mac %v, flags %v", ifi.Name, ifi.MTU, ifi.HardwareAddr, ifi.Flags)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.String())
	}
	for _, want := range []string{"10.77.0.1/24", "fd77::1/64", "10.78.0.1/32"} {
		if !strings.Contains(strings.Join(got, " "), want) {
			t.Errorf("addresses %v lack %s", got, want)
		}
	}

	// iproute2 agrees it is a TAP, and the IPv6 address skipped DAD.
	if _, err := exec.LookPath("ip"); err != nil {
		t.Logf("no ip command: %v", err)
		return
	}
	out, err := exec.Command("ip", "-d", "addr", "show", "dev", d.Name()).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -d addr show: %v\n%s", err, out)
	}
	for _, want := range []string{"mtu 1400", "tun type tap", "inet 10.77.0.1/24 brd 10.77.0.255", "inet6 fd77::1/64", "nodad", "link/ether " + mac.String()} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ip -d addr show lacks %q:\n%s", want, out)
		}
	}
}

func TestOpen_KernelChoosesNameAndMAC(t *testing.T) {
	d := openTestTAP(t, Config{MTU: 1500})
	if !strings.HasPrefix(d.Name(), "tap") || len(d.MAC()) != 6 {
		t.Errorf("device %q, mac %v", d.Name(), d.MAC())
	}
}

func TestOpen_Errors(t *testing.T) {
	t.Run("invalid config", func(t *testing.T) {
		_, err := Open(Config{MTU: 10}, zaptest.NewLogger(t))
		if err == nil || !strings.Contains(err.Error(), "tap.mtu") {
			t.Errorf("Open = %v, want a tap.mtu error", err)
		}
	})
	t.Run("name taken by another kind of device", func(t *testing.T) {
		taptest.RequireRoot(t)
		taptest.LockNetns(t)
		// The loopback interface exists in every namespace.
		_, err := Open(Config{Name: "lo", MTU: 1500}, zaptest.NewLogger(t))
		if err == nil || !strings.Contains(err.Error(), "tap.name") {
			t.Errorf("Open = %v, want an error naming tap.name", err)
		}
	})
}

func TestDevice_CloseUnblocksRead(t *testing.T) {
	d := openTestTAP(t, Config{Name: "rvtest0", MTU: 1400})
	done := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, FrameLen(1400))}, []int{0}
		for {
			// The kernel may still send IPv6 chatter; only the error counts.
			if _, err := d.Read(bufs, sizes, 0); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond) // let Read block
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v, want net.ErrClosed", err)
		}
		t.Logf("Read returned %v after %v", err, time.Since(start))
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock Read within a second")
	}
	if _, err := d.Write([][]byte{make([]byte, 60)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// TestDevice_Ping pings a peer on the TAP's subnet from the kernel side and
// plays the peer on the device: answers its ARP request, reads the echo
// request, writes the echo reply, which the kernel delivers to the pinging
// socket.
func TestDevice_Ping(t *testing.T) {
	for _, mode := range []Offload{OffloadOn, OffloadOff} {
		t.Run("offload "+string(mode), func(t *testing.T) { testPing(t, mode) })
	}
}

func testPing(t *testing.T, mode Offload) {
	peerMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	self, peer := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	d := openTestTAP(t, Config{
		Name:      "rvtest0",
		MTU:       1400,
		MAC:       MAC(MACFromBytes([]byte(t.Name()))),
		Addresses: []netip.Prefix{netip.PrefixFrom(self, 24), netip.MustParsePrefix("fd77::1/64")},
		Offload:   mode,
	})
	if _, err := d.Read([][]byte{make([]byte, FrameLen(1400))}, []int{0}, 1); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Read into a buffer too short for the MTU = %v, want io.ErrShortBuffer", err)
	}
	r := startReader(t, d, FrameLen(1400))

	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	tv := unix.NsecToTimeval((3 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	const id = 0x4242
	to := &unix.SockaddrInet4{Addr: peer.As4()}
	big, small := echoRequest(id, 1, 1000), echoRequest(id, 2, 32)
	for _, m := range [][]byte{big, small} {
		if err := unix.Sendto(sock, m, 0, to); err != nil {
			t.Fatal(err)
		}
	}

	arpFrame := r.next(t, "ARP request for "+peer.String(), func(f []byte) bool {
		eth, err := frame.ParseEthernet(f)
		if err != nil || eth.Type != frame.TypeARP {
			return false
		}
		a, err := frame.ParseARP(eth.Payload)
		return err == nil && a.Op == frame.ARPRequest && a.TargetIP == peer
	})
	eth, _ := frame.ParseEthernet(arpFrame)
	req, _ := frame.ParseARP(eth.Payload)
	if !frame.IsBroadcast(eth.Dst) || !bytes.Equal(eth.Src, d.MAC()) || req.SenderIP != self {
		t.Errorf("ARP request from %v (%v) to %v", eth.Src, req.SenderIP, eth.Dst)
	}
	reply := frame.AppendARPReply(make([]byte, 16, 128)[:16], req, peerMAC)
	if n, err := d.Write([][]byte{reply}, 16); n != 1 || err != nil {
		t.Fatalf("Write ARP reply = %d, %v", n, err)
	}

	// Both echo requests were queued on the ARP entry and now follow.
	var ip frame.IPv4
	for _, want := range [][]byte{big, small} {
		echo := r.next(t, "ICMP echo request", func(f []byte) bool {
			eth, err := frame.ParseEthernet(f)
			if err != nil || eth.Type != frame.TypeIPv4 {
				return false
			}
			ip, err := frame.ParseIPv4(eth.Payload)
			return err == nil && ip.Protocol == frame.ProtoICMP && ip.Dst == peer && len(ip.Payload) >= 8 && ip.Payload[0] == 8
		})
		eth, _ = frame.ParseEthernet(echo)
		ip, _ = frame.ParseIPv4(eth.Payload)
		if !bytes.Equal(eth.Dst, peerMAC) || ip.Src != self || !ip.ChecksumValid() || !bytes.Equal(ip.Payload, want) {
			t.Errorf("echo request %v -> %v (MAC %v, checksum valid %v): %x, want %x", ip.Src, ip.Dst, eth.Dst, ip.ChecksumValid(), ip.Payload, want)
		}
	}

	// Answer it; the kernel hands the reply to the raw socket.
	if _, err := d.Write([][]byte{echoReplyFrame(eth, ip)}, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(sock, buf, 0)
		if err != nil {
			t.Fatalf("no echo reply: %v", err)
		}
		got, err := frame.ParseIPv4(buf[:n])
		if err == nil && got.Src == peer && len(got.Payload) >= 8 && got.Payload[0] == 0 && binary.BigEndian.Uint16(got.Payload[4:]) == id {
			break
		}
	}
}

// echoRequest returns an ICMP echo request with size bytes of data.
func echoRequest(id, seq uint16, size int) []byte {
	m := make([]byte, 8+size)
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	for i := range size {
		m[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(m[2:], frame.Checksum(m, 0))
	return m
}

// echoReplyFrame answers the echo request in eth and ip.
func echoReplyFrame(eth frame.Ethernet, ip frame.IPv4) []byte {
	f := frame.AppendEthernet(nil, eth.Src, eth.Dst, frame.TypeIPv4)
	hdr := len(f)
	f = append(f, eth.Payload[:ip.TotalLen]...)
	p := f[hdr:]
	s, dst := ip.Dst.As4(), ip.Src.As4()
	copy(p[12:], s[:])
	copy(p[16:], dst[:])
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], frame.Checksum(p[:ip.HeaderLen], 0))
	icmp := p[ip.HeaderLen:]
	icmp[0], icmp[2], icmp[3] = 0, 0, 0
	binary.BigEndian.PutUint16(icmp[2:], frame.Checksum(icmp, 0))
	return f
}

// answerNeighbor reads the kernel's ARP request or neighbour solicitation
// for peer and answers it for peerMAC, with the frame package's builders.
func answerNeighbor(t *testing.T, d Device, r *reader, peer netip.Addr, peerMAC net.HardwareAddr) {
	t.Helper()
	var reply []byte
	r.next(t, "address resolution for "+peer.String(), func(f []byte) bool {
		eth, err := frame.ParseEthernet(f)
		if err != nil {
			return false
		}
		switch eth.Type {
		case frame.TypeARP:
			a, err := frame.ParseARP(eth.Payload)
			if err == nil && a.Op == frame.ARPRequest && a.TargetIP == peer {
				reply = frame.AppendARPReply(nil, a, peerMAC)
			}
		case frame.TypeIPv6:
			ip, err := frame.ParseIPv6(eth.Payload)
			if err != nil {
				return false
			}
			if ns, err := frame.ParseNeighborSolicitation(ip); err == nil && ns.Target == peer {
				reply = frame.AppendNeighborAdvertisement(nil, ns, eth.Src, peerMAC)
			}
		}
		return reply != nil
	})
	if _, err := d.Write([][]byte{reply}, 0); err != nil {
		t.Fatal(err)
	}
}

// isIPTo reports whether f is an IP frame of protocol proto to dst.
func isIPTo(f []byte, proto uint8, dst netip.Addr) bool {
	eth, err := frame.ParseEthernet(f)
	if err != nil {
		return false
	}
	switch eth.Type {
	case frame.TypeIPv4:
		ip, err := frame.ParseIPv4(eth.Payload)
		return err == nil && ip.Protocol == proto && ip.Dst == dst
	case frame.TypeIPv6:
		ip, err := frame.ParseIPv6(eth.Payload)
		return err == nil && ip.Protocol == proto && ip.Dst == dst
	}
	return false
}

// TestDevice_NeighborDiscoveryAndMSS connects over TCP to an IPv6 peer: the
// kernel accepts the neighbour advertisement frame.AppendNeighborAdvertisement
// builds, sends its SYN to the peer's MAC, and frame.ClampMSS lowers the
// SYN's MSS keeping its checksum valid.
func TestDevice_NeighborDiscoveryAndMSS(t *testing.T) {
	peerMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	peer := netip.MustParseAddr("fd77::2")
	d := openTestTAP(t, Config{Name: "rvtest0", MTU: 1400, Addresses: []netip.Prefix{netip.MustParsePrefix("fd77::1/64")}})
	r := startReader(t, d, FrameLen(1400))

	sock, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	if err := unix.Connect(sock, &unix.SockaddrInet6{Port: 80, Addr: peer.As16()}); err != unix.EINPROGRESS {
		t.Fatalf("connect = %v, want EINPROGRESS", err)
	}
	answerNeighbor(t, d, r, peer, peerMAC)
	syn := r.next(t, "TCP SYN", func(f []byte) bool { return isIPTo(f, frame.ProtoTCP, peer) })
	eth, _ := frame.ParseEthernet(syn)
	if !bytes.Equal(eth.Dst, peerMAC) {
		t.Errorf("SYN sent to %v, want %v", eth.Dst, peerMAC)
	}
	ip, _ := frame.ParseIPv6(eth.Payload)
	if mss := binary.BigEndian.Uint16(ip.Upper[22:]); ip.Upper[20] != 2 || mss != 1400-60 {
		t.Fatalf("SYN options %x: want MSS 1340 first", ip.Upper[20:])
	}
	if !frame.ClampMSS(eth.Payload, 1200) {
		t.Fatal("ClampMSS did not change the SYN")
	}
	if mss := binary.BigEndian.Uint16(ip.Upper[22:]); mss != 1200 {
		t.Errorf("MSS %d after ClampMSS, want 1200", mss)
	}
	if frame.Checksum(ip.Upper, frame.PseudoHeaderSum(frame.ProtoTCP, ip.Src, ip.Dst, len(ip.Upper))) != 0 {
		t.Error("TCP checksum invalid after ClampMSS")
	}
}

// TestDevice_PathMTU sends a datagram that the "overlay" cannot carry and
// answers with frame.AppendTooBig: the kernel lowers the path MTU to the
// peer, for IPv4 and IPv6.
func TestDevice_PathMTU(t *testing.T) {
	peerMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	d := openTestTAP(t, Config{
		Name:      "rvtest0",
		MTU:       1400,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd77::1/64")},
	})
	r := startReader(t, d, FrameLen(1400))
	tests := []struct {
		name               string
		family             int
		peer               netip.Addr
		sa                 unix.Sockaddr
		level, disc, mtuOp int
		pathMTU            int
	}{
		{"IPv4", unix.AF_INET, netip.MustParseAddr("10.77.0.2"), &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 77, 0, 2}}, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_MTU, 1200},
		{"IPv6", unix.AF_INET6, netip.MustParseAddr("fd77::2"), &unix.SockaddrInet6{Port: 9, Addr: netip.MustParseAddr("fd77::2").As16()}, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_MTU, 1280},
	}
	// Sockets are made here, on the goroutine inside the namespace.
	for _, tt := range tests {
		sock, err := unix.Socket(tt.family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(sock)
		if err := unix.SetsockoptInt(sock, tt.level, tt.disc, unix.IP_PMTUDISC_DO); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(sock, tt.sa); err != nil {
			t.Fatal(err)
		}
		if mtu, err := unix.GetsockoptInt(sock, tt.level, tt.mtuOp); err != nil || mtu != 1400 {
			t.Fatalf("%s: path MTU %d, %v before; want 1400", tt.name, mtu, err)
		}
		if err := unix.Send(sock, make([]byte, 1300), 0); err != nil {
			t.Fatal(err)
		}
		answerNeighbor(t, d, r, tt.peer, peerMAC)
		big := r.next(t, tt.name+" datagram", func(f []byte) bool { return isIPTo(f, frame.ProtoUDP, tt.peer) })
		tooBig, err := frame.AppendTooBig(nil, big, tt.pathMTU, netip.Addr{})
		if err != nil {
			t.Fatalf("%s: AppendTooBig: %v", tt.name, err)
		}
		if _, err := d.Write([][]byte{tooBig}, 0); err != nil {
			t.Fatal(err)
		}
		var mtu int
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if mtu, err = unix.GetsockoptInt(sock, tt.level, tt.mtuOp); err != nil || mtu == tt.pathMTU {
				break
			}
		}
		if mtu != tt.pathMTU || err != nil {
			t.Errorf("%s: path MTU %d, %v after the ICMP error; want %d", tt.name, mtu, err, tt.pathMTU)
		}
	}
}

func TestDevice_WriteNoAllocs(t *testing.T) {
	for _, mode := range []Offload{OffloadOn, OffloadOff} {
		t.Run("offload "+string(mode), func(t *testing.T) { testWriteNoAllocs(t, mode) })
	}
}

func testWriteNoAllocs(t *testing.T, mode Offload) {
	d := openTestTAP(t, Config{Name: "rvtest0", MTU: 1400, Addresses: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24")}, Offload: mode})
	// A gratuitous ARP from a peer, behind 32 bytes of header room.
	peerMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	peer := netip.MustParseAddr("10.77.0.2")
	f := frame.AppendARP(make([]byte, 32, 128), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, frame.ARP{Op: frame.ARPRequest, SenderMAC: peerMAC, SenderIP: peer, TargetMAC: peerMAC, TargetIP: peer})
	bufs := [][]byte{f, f}
	if allocs := testing.AllocsPerRun(100, func() {
		if n, err := d.Write(bufs, 32); n != 2 || err != nil {
			t.Fatal(n, err)
		}
	}); allocs != 0 {
		t.Errorf("Write allocates %v times per batch, want 0", allocs)
	}
	if n, err := d.Write([][]byte{f[:32+13]}, 32); n != 0 || err == nil {
		t.Errorf("Write of a 13-byte frame = %d, %v; want an error", n, err)
	}
}

func TestOpenError_NamesTheFix(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&os.PathError{Op: "open", Path: "/dev/net/tun", Err: unix.EACCES}, "needs root or CAP_NET_ADMIN"},
		{os.NewSyscallError("ioctl", unix.EPERM), "needs root or CAP_NET_ADMIN"},
		{&os.PathError{Op: "open", Path: "/dev/net/tun", Err: unix.ENOENT}, "modprobe tun"},
		{os.NewSyscallError("ioctl", unix.EBUSY), "choose another tap.name"},
	}
	for _, tt := range tests {
		if got := openError("rv0", tt.err).Error(); !strings.Contains(got, tt.want) {
			t.Errorf("openError(%v) = %q, want it to contain %q", tt.err, got, tt.want)
		}
	}
}
