package udp_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/ringvpn/ringvpn/transport/udp"
)

// BenchmarkConn_Loopback moves BatchSize datagrams of 1400 B per operation
// over IPv4 loopback, with Conn (sendmmsg/recvmmsg) and with a plain
// net.UDPConn (one system call per datagram), so MB/s compare directly.
func BenchmarkConn_Loopback(b *testing.B) {
	const size = 1400
	batch := udp.Default().BatchSize

	b.Run("batch", func(b *testing.B) {
		r := listen(b, netip.AddrPortFrom(lo4, 0))
		w := listen(b, netip.AddrPortFrom(lo4, 0))
		out := make([][]byte, batch)
		to := make([]netip.AddrPort, batch)
		in := make([][]byte, batch)
		for i := range batch {
			out[i] = make([]byte, size)
			to[i] = r.LocalAddr()
			in[i] = make([]byte, 2048)
		}
		sizes := make([]int, batch)
		from := make([]netip.AddrPort, batch)
		b.ReportAllocs()
		b.SetBytes(int64(batch * size))
		for b.Loop() {
			if n, err := w.WriteBatch(out, to); n != batch || err != nil {
				b.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for got := 0; got < batch; {
				n, err := r.ReadBatch(in, sizes, from)
				if err != nil {
					b.Fatal(err)
				}
				got += n
			}
		}
	})

	b.Run("stdlib", func(b *testing.B) {
		open := func() *net.UDPConn {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo4.AsSlice()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = c.Close() })
			if err := c.SetReadBuffer(udp.Default().ReceiveBuffer); err != nil {
				b.Fatal(err)
			}
			if err := c.SetWriteBuffer(udp.Default().SendBuffer); err != nil {
				b.Fatal(err)
			}
			return c
		}
		r, w := open(), open()
		dst := r.LocalAddr().(*net.UDPAddr).AddrPort()
		out := make([]byte, size)
		in := make([]byte, 2048)
		b.ReportAllocs()
		b.SetBytes(int64(batch * size))
		for b.Loop() {
			for range batch {
				if _, err := w.WriteToUDPAddrPort(out, dst); err != nil {
					b.Fatal(err)
				}
			}
			for range batch {
				if _, _, err := r.ReadFromUDPAddrPort(in); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
