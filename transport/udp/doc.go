// Package udp is the real network socket of ringvpn: a UDP socket that
// implements transport.PacketConn, the batched datagram interface that
// transport.Mux demultiplexes into one pipe per remote session.
//
//	transport.Mux
//	      |  ReadBatch / WriteTo / WriteBatch
//	udp.Conn  (this package)   or   memnet (in-memory tests)
//	      |  recvmmsg(2) / sendmmsg(2)
//	kernel UDP socket
//
// On Linux a Conn moves up to Config.BatchSize datagrams per system call
// with recvmmsg(2) and sendmmsg(2). The calls are written by hand on top of
// golang.org/x/sys/unix and syscall.RawConn rather than taken from
// golang.org/x/net/ipv4 and ipv6, whose ReadBatch allocates a *net.UDPAddr
// for every message received: on the packet path that is one garbage object
// per datagram. Here every buffer the kernel needs (mmsghdr, iovec and
// sockaddr arrays) is allocated once per Conn, source addresses are parsed
// straight from the raw sockaddr into a netip.AddrPort, and the RawConn
// callbacks are method values stored once, so ReadBatch, WriteTo and
// WriteBatch allocate nothing. Going through RawConn keeps the Go netpoller
// in charge of blocking, so a Conn parks goroutines, not threads, and Close
// unblocks a pending ReadBatch.
//
// A socket listening on an unspecified address or on an IPv6 address is
// dual-stack: IPv4 peers arrive as IPv4-mapped IPv6 addresses, which Conn
// unmaps, so callers only ever see plain IPv4 netip.Addrs for IPv4 peers and
// may pass plain IPv4 destinations back.
//
// Other systems get a portable fallback that moves one datagram per call.
package udp
