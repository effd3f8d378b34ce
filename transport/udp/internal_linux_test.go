package udp

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMmsghdr_Size(t *testing.T) {
	want := uintptr(64) // struct mmsghdr on 64-bit Linux
	if unsafe.Sizeof(uintptr(0)) == 4 {
		want = 32
	}
	if got := unsafe.Sizeof(mmsghdr{}); got != want {
		t.Fatalf("sizeof(mmsghdr) = %d, want %d", got, want)
	}
}

func TestPort_NetworkByteOrder(t *testing.T) {
	var p uint16
	putPort(&p, 0x1234)
	if b := (*[2]byte)(unsafe.Pointer(&p)); b[0] != 0x12 || b[1] != 0x34 {
		t.Fatalf("putPort(0x1234) stored % x, want 12 34", b[:])
	}
	if got := getPort(&p); got != 0x1234 {
		t.Fatalf("getPort = %#x, want 0x1234", got)
	}
}

func readSysctl(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/" + name)
	if err != nil {
		t.Skipf("read %s: %v", name, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// canForce reports whether this process may exceed net.core.*mem_max.
func canForce(t *testing.T) bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20) == nil
}

func TestListen_SetsBuffers(t *testing.T) {
	rmax, wmax := readSysctl(t, "rmem_max"), readSysctl(t, "wmem_max")
	force := canForce(t)
	cfg := Default()
	cfg.ReceiveBuffer = 2 * rmax // beyond the limit: only FORCE gets it
	cfg.SendBuffer = 2 * wmax
	c, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rcv, snd int
	var rerr, serr error
	if err := c.rc.Control(func(fd uintptr) {
		rcv, rerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}); err != nil || rerr != nil || serr != nil {
		t.Fatal(err, rerr, serr)
	}
	// Linux doubles the value set to account for its bookkeeping.
	wantRcv, wantSnd := 2*rmax, 2*wmax // capped by the plain option
	if force {
		wantRcv, wantSnd = 2*cfg.ReceiveBuffer, 2*cfg.SendBuffer
	}
	t.Logf("FORCE allowed: %v; SO_RCVBUF %d, SO_SNDBUF %d", force, rcv, snd)
	if rcv != wantRcv || snd != wantSnd {
		t.Errorf("SO_RCVBUF, SO_SNDBUF = %d, %d; want %d, %d", rcv, snd, wantRcv, wantSnd)
	}
}

func TestListen_ZeroBuffersKeepDefault(t *testing.T) {
	cfg := Default()
	cfg.ReceiveBuffer = 0
	c, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rcv int
	var gerr error
	if err := c.rc.Control(func(fd uintptr) {
		rcv, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if def := readSysctl(t, "rmem_default"); rcv != def {
		t.Errorf("SO_RCVBUF = %d, want the system default %d", rcv, def)
	}
}
