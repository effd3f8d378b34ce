package security

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/transport"
	"github.com/ringvpn/ringvpn/transport/memnet"
	"github.com/ringvpn/ringvpn/transport/udp"
)

const benchPacket = 1400

// deliveredRate sends n packets with send and reports how many per second
// arrived, counted by got: the receiver's pace, whatever the sender did.
func deliveredRate(n int, send func([]byte), got *atomic.Int64) float64 {
	pkt := make([]byte, benchPacket)
	start := got.Load()
	t0 := time.Now()
	for range n {
		send(pkt)
	}
	last, lastChange := got.Load(), time.Now()
	for got.Load()-start < int64(n) {
		time.Sleep(time.Millisecond)
		if c := got.Load(); c != last {
			last, lastChange = c, time.Now()
		} else if time.Since(lastChange) > 100*time.Millisecond {
			break // the rest were dropped
		}
	}
	return float64(last-start) / lastChange.Sub(t0).Seconds()
}

func udpMux(b *testing.B, cfg transport.Config) *transport.Mux {
	conn, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udp.Default())
	if err != nil {
		b.Fatal(err)
	}
	m, err := transport.NewMux(conn, cfg, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkLink_UDP compares, in one run over real UDP on loopback with
// 1400-byte packets: a sealed Link, the same packets unencrypted through
// the same Mux, and pion's own DTLS data path over the same kind of pipe.
// It reports packets/s for each and the ratios the design targets
// (sealed/pion >= 3, sealed/plain >= 0.8).
func BenchmarkLink_UDP(b *testing.B) {
	const perRound = 20000
	g := newTestGroup(b, "bench-ca")
	muxCfg := transport.Default()
	muxCfg.ControlQueue = 4096 // pion's records queue here
	ma, mb := udpMux(b, muxCfg), udpMux(b, muxCfg)
	cfg := testConfig()
	epA, _ := NewEndpoint(g.validMember(b, "a"), g.bundle, cfg, muxDialer(ma), zap.NewNop())
	epB, _ := NewEndpoint(g.validMember(b, "b"), g.bundle, cfg, muxDialer(mb), zap.NewNop())
	b.Cleanup(func() { epA.Close(); epB.Close() })
	go func() {
		p, err := mb.Accept(context.Background())
		if err == nil {
			epB.Serve(p)
		}
	}()
	la, err := epA.Dial(context.Background(), mb.LocalAddr())
	if err != nil {
		b.Fatal(err)
	}
	lb := accept(b, epB)
	var sealedGot atomic.Int64
	lb.SetHandler(func([]byte) { sealedGot.Add(1) })

	// Unencrypted: a pipe on each side, records carrying only the header.
	pa, _ := ma.Dial(context.Background(), mb.LocalAddr())
	pb, _ := mb.Dial(context.Background(), ma.LocalAddr())
	pa.Established()
	pb.Established()
	var plainGot atomic.Int64
	pb.SetHandler(func([]byte, netip.AddrPort) { plainGot.Add(1) })
	plain := make([]byte, transport.SealedHeaderLen+benchPacket)
	plain[0] = transport.SealedRecordType
	id := pb.LocalID()
	copy(plain[1:], id[:])
	sendPlain := func(pkt []byte) {
		copy(plain[transport.SealedHeaderLen:], pkt)
		pa.Send(plain)
	}

	// pion: a DTLS session kept alive and used for data.
	pionA, pionB := pionPair(b, ma, mb, g)
	var pionGot atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := pionB.Read(buf); err != nil {
				return
			}
			pionGot.Add(1)
		}
	}()

	var sealed, unencrypted, pion float64
	rounds := 0
	b.ResetTimer()
	for b.Loop() {
		sealed += deliveredRate(perRound, func(p []byte) { la.Send(p) }, &sealedGot)
		unencrypted += deliveredRate(perRound, sendPlain, &plainGot)
		pion += deliveredRate(perRound/4, func(p []byte) { pionA.Write(p) }, &pionGot)
		rounds++
	}
	sealed, unencrypted, pion = sealed/float64(rounds), unencrypted/float64(rounds), pion/float64(rounds)
	b.ReportMetric(sealed, "sealed-pkt/s")
	b.ReportMetric(unencrypted, "plain-pkt/s")
	b.ReportMetric(pion, "pion-pkt/s")
	b.ReportMetric(sealed/pion, "sealed/pion")
	b.ReportMetric(sealed/unencrypted, "sealed/plain")
}

// pionPair runs a DTLS handshake over two fresh pipes and keeps pion's
// record layer for data, the way a plain pion/dtls VPN would.
func pionPair(b *testing.B, ma, mb *transport.Mux, g *testGroup) (*dtls.Conn, *dtls.Conn) {
	pa, err := ma.Dial(context.Background(), mb.LocalAddr())
	if err != nil {
		b.Fatal(err)
	}
	accepted := make(chan *transport.Pipe, 1)
	go func() {
		p, err := mb.Accept(context.Background())
		if err == nil {
			accepted <- p
		}
	}()
	opts := func(id *Identity, p *transport.Pipe) []dtls.Option {
		cid := p.LocalID()
		return []dtls.Option{
			dtls.WithCertificates(id.TLSCertificate()),
			dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
			dtls.WithInsecureSkipVerify(true),
			dtls.WithConnectionIDGenerator(func() []byte { return cid[:] }),
		}
	}
	clientOpts := func(o []dtls.Option) (out []dtls.ClientOption) {
		for _, x := range o {
			out = append(out, x)
		}
		return out
	}
	serverOpts := func(o []dtls.Option) (out []dtls.ServerOption) {
		for _, x := range o {
			out = append(out, x)
		}
		return out
	}
	ca, err := dtls.ClientWithOptions(pa.ControlConn(), net.UDPAddrFromAddrPort(mb.LocalAddr()), clientOpts(opts(g.validMember(b, "pa"), pa))...)
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- ca.HandshakeContext(context.Background()) }()
	pb := <-accepted
	cb, err := dtls.ServerWithOptions(pb.ControlConn(), net.UDPAddrFromAddrPort(ma.LocalAddr()), serverOpts(opts(g.validMember(b, "pb"), pb))...)
	if err != nil {
		b.Fatal(err)
	}
	if err := cb.HandshakeContext(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	pa.Established()
	pb.Established()
	b.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

// BenchmarkEndpoint_Handshake measures complete link setups (DTLS with
// certificate verification both ways, key export, confirmation) on an
// in-memory network, and the memory each idle link holds on both sides.
func BenchmarkEndpoint_Handshake(b *testing.B) {
	g := newTestGroup(b, "bench-ca")
	net := memnet.New(1)
	log := zap.NewNop()
	a := newTestNode(b, net, "10.0.0.1:4820", g.validMember(b, "a"), g.bundle, testConfig(), log)
	c := newTestNode(b, net, "10.0.0.2:4820", g.validMember(b, "c"), g.bundle, testConfig(), log)
	var links []*Link
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for b.Loop() {
		l, err := a.ep.Dial(context.Background(), netip.MustParseAddrPort("10.0.0.2:4820"))
		if err != nil {
			b.Fatal(err)
		}
		links = append(links, l, accept(b, c.ep))
	}
	elapsed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := len(links) / 2
	b.ReportMetric(float64(n)/elapsed.Seconds(), "handshakes/s")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heap-bytes/link-pair")
	runtime.KeepAlive(links)
}
