package vpn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// NamespaceName holds what a member's name resolves to: the record named
// by the member's certificate name in lower case ("alice", "web-1.eu")
// is signed by that member and binds the name to its overlay address and
// its virtual IPs, fixed and leased:
//
//	+-------------------------+-------+------------------------------+
//	| overlay address (20)    | count | count x ( len (1) | IP )     |
//	+-------------------------+-------+------------------------------+
//
// len is 4 or 16; count is at most security.MaxIPs. The Verifier accepts
// the record only if the signer's certificate has the name, the address
// is the signer's, and every IP is one of the certificate's fixed IPs or
// lies in one of its pools (a leased address: the record says where the
// member is, the vip record who holds the address).
const NamespaceName = "name"

// nameKey is the record name for a member name: DNS names are not case
// sensitive.
func nameKey(name string) string { return strings.ToLower(name) }

// appendNameValue encodes a name record's value.
func appendNameValue(b []byte, addr overlay.Address, ips []netip.Addr) []byte {
	b = append(b, addr[:]...)
	b = append(b, byte(len(ips)))
	for _, ip := range ips {
		s := ip.AsSlice()
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// errNameValue is why a name record's value does not decode.
var errNameValue = errors.New("malformed name record value")

// parseNameValue decodes a name record's value.
func parseNameValue(b []byte) (overlay.Address, []netip.Addr, error) {
	var addr overlay.Address
	if len(b) < len(addr)+1 {
		return addr, nil, errNameValue
	}
	copy(addr[:], b)
	n := int(b[len(addr)])
	if n > security.MaxIPs {
		return addr, nil, errNameValue
	}
	b = b[len(addr)+1:]
	ips := make([]netip.Addr, 0, n)
	for range n {
		if len(b) < 1 {
			return addr, nil, errNameValue
		}
		l := int(b[0])
		if (l != 4 && l != 16) || len(b) < 1+l {
			return addr, nil, errNameValue
		}
		ip, _ := netip.AddrFromSlice(b[1 : 1+l])
		ips = append(ips, ip)
		b = b[1+l:]
	}
	if len(b) != 0 {
		return addr, nil, errNameValue
	}
	return addr, ips, nil
}

// checkNameRecord is the Verifier's rule for NamespaceName.
func checkNameRecord(rec *dht.SignedRecord, m *security.Member) error {
	if rec.Name != nameKey(m.Name) {
		return fmt.Errorf("%w: name record %q is signed by %q (%s), a member of another name", dht.ErrBadRecord, rec.Name, m.Name, m.Address)
	}
	addr, ips, err := parseNameValue(rec.Value)
	if err != nil {
		return fmt.Errorf("%w: name record %q: %w", dht.ErrBadRecord, rec.Name, err)
	}
	if addr != m.Address {
		return fmt.Errorf("%w: name record %q: the address is not the signer's", dht.ErrBadRecord, rec.Name)
	}
	for _, ip := range ips {
		if _, pooled := m.PoolOf(ip); !m.HasFixedIP(ip) && !pooled {
			return fmt.Errorf("%w: name record %q: %s is neither a virtual IP of %q nor in its pools", dht.ErrBadRecord, rec.Name, ip, m.Name)
		}
	}
	return nil
}

// LookupName returns the virtual IPs the member called name published,
// from its verified name record. An unknown name is an error wrapping
// dht.ErrNotFound.
func (v *VPN) LookupName(ctx context.Context, name string) ([]netip.Addr, error) {
	return v.lookupName(ctx, name)
}

func (v *VPN) lookupName(ctx context.Context, name string) ([]netip.Addr, error) {
	key := nameKey(name)
	if key == "" || len(key) > security.MaxNameLen {
		return nil, fmt.Errorf("%w: no member is called %q", dht.ErrNotFound, name)
	}
	rec, err := v.dht.GetRecord(ctx, NamespaceName, key)
	if err != nil {
		return nil, err
	}
	if _, err := v.verify.Verify(rec.Key(), rec, time.Now()); err != nil {
		return nil, err
	}
	_, ips, err := parseNameValue(rec.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", dht.ErrBadRecord, err) // not reached: Verify parsed it
	}
	return ips, nil
}

// namePublisher keeps this member's name record in the DHT, republishing
// it when its addresses change.
type namePublisher struct {
	v       *VPN
	changed chan struct{}
}

func newNamePublisher(v *VPN) *namePublisher {
	return &namePublisher{v: v, changed: make(chan struct{}, 1)}
}

// kick asks for a publish now (a lease came or went).
func (p *namePublisher) kick() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *namePublisher) loop() {
	v := p.v
	for {
		wait := v.cfg.RecordTTL / 3
		if len(v.pools) > 0 {
			wait = v.cfg.LeaseTTL / 3
		}
		if !p.publish() {
			wait = leaseRetry
		}
		select {
		case <-time.After(wait):
		case <-p.changed:
		case <-v.ctx.Done():
			return
		}
	}
}

// publish writes the record; false if it failed.
func (p *namePublisher) publish() bool {
	v := p.v
	own := v.ownIPs()
	if len(own) == 0 {
		return true // nothing to say until a lease comes (kick)
	}
	ips := make([]netip.Addr, len(own))
	for i, q := range own {
		ips[i] = q.Addr()
	}
	// Leased addresses say where the member is only while it runs: the
	// record lives no longer than a lease.
	ttl := v.cfg.RecordTTL
	if len(v.pools) > 0 {
		ttl = min(ttl, v.cfg.LeaseTTL)
	}
	name := v.id.Member.Name
	rec, err := dht.Sign(v.id, NamespaceName, nameKey(name), appendNameValue(nil, v.node.Address(), ips), time.Now().Add(ttl))
	if err == nil {
		ctx, cancel := context.WithTimeout(v.ctx, v.cfg.ResolveTimeout)
		err = v.dht.PutRecord(ctx, rec)
		cancel()
	}
	if err != nil {
		if v.ctx.Err() == nil {
			v.log.Debug("name not published yet", zap.String("name", name), zap.Error(err))
		}
		return false
	}
	return true
}
