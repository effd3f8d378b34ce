package tap

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/ringvpn/ringvpn/tap/frame"
	"github.com/ringvpn/ringvpn/tap/taptest"
)

// inNetns runs f on a goroutine of its own in a fresh network namespace
// and returns its error. What f creates (devices, sockets) stays in the
// namespace, usable from any goroutine; the namespace goes when they are
// closed.
func inNetns(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in its namespace, ends with the
		// goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// bridge copies frames from src to dst, in the batches Read returns,
// until src is closed.
func bridge(src, dst Device, wg *sync.WaitGroup) {
	defer wg.Done()
	bufs, sizes := make([][]byte, src.BatchSize()), make([]int, src.BatchSize())
	out := make([][]byte, src.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, 16+FrameLen(src.MTU()))
	}
	for {
		n, err := src.Read(bufs, sizes, 16)
		if err != nil {
			return
		}
		for i := range n {
			out[i] = bufs[i][:16+sizes[i]]
		}
		dst.Write(out[:n], 16)
	}
}

// TestDevice_TCPStreamThroughOffloads joins two TAP devices in two
// namespaces back to back through Read and Write, and sends a TCP stream
// across: with offloads, the sending kernel's super-segments are cut up
// by Read and merged again by Write for the receiving kernel, and every
// byte must arrive intact.
func TestDevice_TCPStreamThroughOffloads(t *testing.T) {
	taptest.RequireRoot(t)
	tests := []struct {
		name       string
		a, b       Offload
		local, far netip.Prefix
	}{
		{"IPv4", OffloadOn, OffloadOn, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("10.77.0.2/24")},
		{"IPv6", OffloadOn, OffloadOn, netip.MustParsePrefix("fd77::1/64"), netip.MustParsePrefix("fd77::2/64")},
		{"sender without offloads", OffloadOff, OffloadOn, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("10.77.0.2/24")},
		{"receiver without offloads", OffloadOn, OffloadOff, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("10.77.0.2/24")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const size = 32 << 20
			log := zaptest.NewLogger(t)
			var a, b Device
			var ln net.Listener
			far := netip.AddrPortFrom(tt.far.Addr(), 5201)
			if err := inNetns(func() (err error) {
				if b, err = Open(Config{Name: "rvb", MTU: 1400, Addresses: []netip.Prefix{tt.far}, Offload: tt.b}, log); err != nil {
					return err
				}
				ln, err = net.Listen("tcp", far.String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			defer ln.Close()

			// The client's namespace lives as long as its goroutine, which
			// dials once the bridge runs.
			opened, start := make(chan error, 1), make(chan struct{})
			var conn net.Conn
			dialed := make(chan error, 1)
			go func() {
				dialed <- inNetns(func() (err error) {
					a, err = Open(Config{Name: "rva", MTU: 1400, Addresses: []netip.Prefix{tt.local}, Offload: tt.a}, log)
					opened <- err
					if err != nil {
						return err
					}
					<-start
					conn, err = net.DialTimeout("tcp", far.String(), 5*time.Second)
					return err
				})
			}()
			if err := <-opened; err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(2)
			go bridge(a, b, &wg)
			go bridge(b, a, &wg)
			t.Cleanup(func() {
				a.Close()
				b.Close()
				wg.Wait()
			})
			close(start)
			if err := <-dialed; err != nil {
				t.Fatal(err)
			}
			defer conn.Close()

			// Send size random bytes; the far end hashes what it reads.
			got := make(chan [32]byte, 1)
			gotErr := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					gotErr <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				h := sha256.New()
				n, err := io.Copy(h, c)
				if err != nil || n != size {
					gotErr <- fmt.Errorf("read %d bytes, %v; want %d", n, err, size)
					return
				}
				got <- [32]byte(h.Sum(nil))
			}()
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			r := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 256<<10)
			h := sha256.New()
			started := time.Now()
			for sent := 0; sent < size; sent += len(buf) {
				for i := 0; i < len(buf); i += 8 {
					v := r.Uint64()
					for j := range 8 {
						buf[i+j] = byte(v >> (8 * j))
					}
				}
				h.Write(buf)
				if _, err := conn.Write(buf); err != nil {
					t.Fatalf("write after %d bytes: %v", sent, err)
				}
			}
			conn.(*net.TCPConn).CloseWrite()
			select {
			case sum := <-got:
				if sum != [32]byte(h.Sum(nil)) {
					t.Fatal("the stream arrived corrupted")
				}
			case err := <-gotErr:
				t.Fatal(err)
			}
			elapsed := time.Since(started)
			da, db := a.(*device), b.(*device)
			t.Logf("%d MB in %v (%.0f Mbit/s); sender's device: %d super-segment reads; receiver's: %d frames merged, %d dropped",
				size>>20, elapsed.Round(time.Millisecond), float64(size)*8/elapsed.Seconds()/1e6, da.superReads.Load(), db.mergedFrames.Load(), da.dropped.Load()+db.dropped.Load())
			if tt.a.Enabled() && da.superReads.Load() == 0 {
				t.Error("the sending kernel never handed the device a super-segment")
			}
			// Only batches of frames merge: from a sender with offloads.
			if tt.a.Enabled() && tt.b.Enabled() && db.mergedFrames.Load() == 0 {
				t.Error("the receiving device never merged segments")
			}
		})
	}
}

// TestDevice_OversizedFrame: a frame longer than the MTU allows (the
// interface's MTU raised behind the device's back) comes out whole in
// bufs[0] when it fits there, and is dropped when it does not.
func TestDevice_OversizedFrame(t *testing.T) {
	for _, mode := range []Offload{OffloadOn, OffloadOff} {
		for _, tt := range []struct {
			buf, want int
		}{
			{FrameLen(1400), 14 + 28 + 100}, // dropped; the small one behind it comes through
			{4000, 14 + 28 + 2500},
		} {
			t.Run(fmt.Sprintf("offload %s, %d-byte buffer", mode, tt.buf), func(t *testing.T) {
				peer := netip.MustParseAddr("10.77.0.2")
				d := openTestTAP(t, Config{Name: "rvtest0", MTU: 1400, Addresses: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24")}, Offload: mode})
				ifi, err := net.InterfaceByName(d.Name())
				if err != nil {
					t.Fatal(err)
				}
				r, err := dialRTNL()
				if err != nil {
					t.Fatal(err)
				}
				defer r.close()
				if err := r.setLink(ifi.Index, 3000, nil, false); err != nil {
					t.Fatal(err)
				}
				rd := startReader(t, d, tt.buf)
				sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(sock)
				for _, n := range []int{2500, 100} {
					if err := unix.Sendto(sock, make([]byte, n), 0, &unix.SockaddrInet4{Port: 9, Addr: peer.As4()}); err != nil {
						t.Fatal(err)
					}
				}
				answerNeighbor(t, d, rd, peer, net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02})
				f := rd.next(t, "UDP datagram", func(f []byte) bool { return isIPTo(f, frame.ProtoUDP, peer) })
				if len(f) != tt.want {
					t.Fatalf("first frame of %d bytes, want %d", len(f), tt.want)
				}
			})
		}
	}
}
