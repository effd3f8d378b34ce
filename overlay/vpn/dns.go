package vpn

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay/dht"
)

// The DNS responder answers `<member>.<vpn.dns.domain>` from the members'
// name records (names.go), on port 53 of this member's own virtual IPs
// only (UDP and TCP): the group's names for the programs of this host.
// Messages are parsed and written by github.com/miekg/dns; this file only
// decides answers. It is authoritative for its zone and nothing else: A
// and AAAA answers, NXDOMAIN for a name no member published, an empty
// answer for other types, REFUSED for every other zone, no recursion. At
// most vpn.dns.max_in_flight DHT lookups run at once; a query beyond
// that gets SERVFAIL at once.

// dnsLookupTimeout bounds one query's DHT lookup.
const dnsLookupTimeout = 3 * time.Second

// DNSStatus describes the DNS responder.
type DNSStatus struct {
	Domain    string   `json:"domain"`
	Listening []string `json:"listening"`
	Queries   uint64   `json:"queries"`
	Answered  uint64   `json:"answered"`
	NXDomain  uint64   `json:"nxdomain"`
	Refused   uint64   `json:"refused"`
	ServFail  uint64   `json:"servfail"`
	Busy      uint64   `json:"busy"` // SERVFAIL because max_in_flight lookups ran
}

type dnsServer struct {
	// immutable after newDNSServer
	lookup func(ctx context.Context, name string) ([]netip.Addr, error)
	domain string // canonical, fully qualified
	ttl    uint32
	log    *zap.Logger
	sem    chan struct{}

	queries, answered, nxdomain, refused, servfail, busy atomic.Uint64

	mu      sync.Mutex
	closed  bool
	servers map[netip.Addr][]*dns.Server
	wg      sync.WaitGroup
}

func newDNSServer(lookup func(context.Context, string) ([]netip.Addr, error), cfg DNSConfig, log *zap.Logger) *dnsServer {
	return &dnsServer{
		lookup:  lookup,
		domain:  dns.CanonicalName(cfg.Domain),
		ttl:     uint32(cfg.TTL / time.Second),
		log:     log.Named("dns"),
		sem:     make(chan struct{}, cfg.MaxInFlight),
		servers: make(map[netip.Addr][]*dns.Server),
	}
}

// listenOn serves on port 53 of each address of ips and stops serving on
// the addresses no longer among them. A failure to listen is logged: the
// VPN runs without names on that address.
func (s *dnsServer) listenOn(ips []netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	want := make(map[netip.Addr]bool, len(ips))
	for _, p := range ips {
		want[p.Addr()] = true
	}
	for ip, srvs := range s.servers {
		if !want[ip] {
			delete(s.servers, ip)
			for _, srv := range srvs {
				_ = srv.Shutdown()
			}
		}
	}
	for ip := range want {
		if s.servers[ip] != nil {
			continue
		}
		ap := netip.AddrPortFrom(ip, 53).String()
		pc, err := net.ListenPacket("udp", ap)
		if err != nil {
			s.log.Warn("DNS responder not listening", zap.String("addr", ap), zap.Error(err))
			continue
		}
		srvs := []*dns.Server{{PacketConn: pc, Handler: s}}
		if l, err := net.Listen("tcp", ap); err == nil {
			srvs = append(srvs, &dns.Server{Listener: l, Handler: s})
		} else {
			s.log.Warn("DNS responder not listening on TCP", zap.String("addr", ap), zap.Error(err))
		}
		s.servers[ip] = srvs
		for _, srv := range srvs {
			s.serve(srv)
		}
		s.log.Info("DNS responder listening", zap.String("addr", ap), zap.String("domain", s.domain))
	}
}

// serve runs srv (its PacketConn or Listener set) until Shutdown.
func (s *dnsServer) serve(srv *dns.Server) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Debug("DNS server stopped", zap.Error(err))
		}
	}()
}

// close stops every server and waits for them.
func (s *dnsServer) close() {
	s.mu.Lock()
	s.closed = true
	for ip, srvs := range s.servers {
		delete(s.servers, ip)
		for _, srv := range srvs {
			_ = srv.Shutdown()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *dnsServer) status() DNSStatus {
	st := DNSStatus{
		Domain: s.domain, Queries: s.queries.Load(), Answered: s.answered.Load(), NXDomain: s.nxdomain.Load(),
		Refused: s.refused.Load(), ServFail: s.servfail.Load(), Busy: s.busy.Load(),
	}
	s.mu.Lock()
	for ip := range s.servers {
		st.Listening = append(st.Listening, netip.AddrPortFrom(ip, 53).String())
	}
	s.mu.Unlock()
	slices.Sort(st.Listening)
	return st
}

// ServeDNS answers one query (dns.Handler).
func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	resp := s.answer(req)
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// answer builds the reply to req.
func (s *dnsServer) answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = false
	switch {
	case req.Opcode != dns.OpcodeQuery:
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp
	case len(req.Question) != 1:
		resp.SetRcode(req, dns.RcodeFormatError)
		return resp
	}
	q := req.Question[0]
	qname := dns.CanonicalName(q.Name)
	if (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) || !dns.IsSubDomain(s.domain, qname) {
		s.refused.Add(1)
		resp.SetRcode(req, dns.RcodeRefused)
		return resp
	}
	resp.Authoritative = true
	if qname == s.domain {
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			resp.Answer = append(resp.Answer, s.soa())
		} else {
			resp.Ns = append(resp.Ns, s.soa())
		}
		s.answered.Add(1)
		return resp
	}
	name := strings.TrimSuffix(qname, "."+s.domain)
	select {
	case s.sem <- struct{}{}:
	default:
		s.busy.Add(1)
		s.servfail.Add(1)
		resp.SetRcode(req, dns.RcodeServerFailure)
		return resp
	}
	ctx, cancel := context.WithTimeout(context.Background(), dnsLookupTimeout)
	ips, err := s.lookup(ctx, name)
	cancel()
	<-s.sem
	switch {
	case err == nil:
	case errors.Is(err, dht.ErrNotFound), errors.Is(err, dht.ErrBadRecord):
		s.nxdomain.Add(1)
		resp.SetRcode(req, dns.RcodeNameError)
		resp.Ns = append(resp.Ns, s.soa())
		return resp
	default:
		s.servfail.Add(1)
		s.log.Debug("name not resolved", zap.String("name", name), zap.Error(err))
		resp.SetRcode(req, dns.RcodeServerFailure)
		return resp
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl}
	}
	for _, ip := range ips {
		switch {
		case ip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip.AsSlice()})
		case ip.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip.AsSlice()})
		}
	}
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, s.soa()) // the name exists, without that type
	}
	s.answered.Add(1)
	return resp
}

// soa is the zone's SOA record, for negative answers.
func (s *dnsServer) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.ttl},
		Ns:      "ns." + s.domain,
		Mbox:    "hostmaster." + s.domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}
