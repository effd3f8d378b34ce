package vpn

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// Address pools: IPOP's DHCP over a DHT.
//
// A certificate grants a pool by carrying a network address as one of its
// IPs (10.20.0.0/16: host bits all zero; see security.IsPool). The trust
// stays with the CA: only the certificate says which network a member may
// take an address from.
//
// A lease is a NamespaceVIP record like a fixed member's: named by the IP,
// its value the holder's overlay address, signed by the holder. The
// Verifier accepts it when the signer's certificate carries the IP fixed
// or grants a pool that contains it (neither its network nor, for IPv4,
// its broadcast address). Sharing the namespace makes leases and fixed
// IPs one keyspace: a create-if-absent on an IP some member holds, fixed
// or leased, fails, and a lookup of any virtual IP is one DHT get.
//
// A member picks an address by hashing its overlay address into the
// pool, creates the record if absent and, on a conflict, probes the next
// address. It renews the record at a third of vpn.lease_ttl (a create by
// the same signer renews); if a renewal finds another member's record
// there (a fixed member took its IP back, or two creates raced during
// churn), it gives the address up and leases another. On shutdown it
// replaces the record with one that expires in a few seconds.
//
// Fixed wins: a fixed member that finds a lease on its own IP overwrites
// it (a put), and the leaseholder moves at its next renewal. Members that
// lease are trusted by the CA as far as their pool goes: the DHT cannot
// tell a put from a create at a storing node, so a misbehaving pool member
// could overwrite another's lease (not a fixed IP for long: its holder
// takes it back at its next publish). Keep fixed IPs outside pools, or
// grant pools only to members trusted that far.
//
// Anti-spoofing: a packet from a member is accepted from its fixed IPs,
// its subnets, or an address of its pool that the VPN mapped to it from
// its verified lease record; the first packet from an address not yet
// looked up starts the lookup and is dropped (DropUnverified).

// maxProbes bounds the addresses tried in one round before waiting.
const maxProbes = 64

// leaseRetry is the wait after a round of conflicts or a DHT failure.
const leaseRetry = 2 * time.Second

// releaseTTL is how long a released lease lingers.
const releaseTTL = 3 * time.Second

// candidate returns the attempt-th address of pool to try for a member
// with key seed: a hash of seed into the pool's host addresses, then the
// next ones, skipping the network and broadcast addresses.
func candidate(pool netip.Prefix, seed []byte, attempt uint64) netip.Addr {
	pool = pool.Masked()
	hostBits := pool.Addr().BitLen() - pool.Bits()
	var usable uint64
	switch {
	case hostBits >= 64:
		usable = 1 << 63
	case pool.Addr().Is4():
		usable = 1<<hostBits - 2 // no network, no broadcast
	default:
		usable = 1<<hostBits - 1 // no network (subnet-router anycast)
	}
	h := sha256.Sum256(append(slices.Clone(seed), pool.String()...))
	off := 1 + (binary.BigEndian.Uint64(h[:8])+attempt)%usable
	if pool.Addr().Is4() {
		b := pool.Addr().As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(off))
		return netip.AddrFrom4(b)
	}
	b := pool.Addr().As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+off)
	return netip.AddrFrom16(b)
}

// poolSize is how many addresses of pool can be leased, at most max.
func poolSize(pool netip.Prefix, max uint64) uint64 {
	hostBits := pool.Addr().BitLen() - pool.Bits()
	if hostBits >= 63 {
		return max
	}
	n := uint64(1)<<hostBits - 1
	if pool.Addr().Is4() {
		n--
	}
	return min(n, max)
}

// Leases returns the addresses this member holds from its pools now,
// with their pools' lengths.
func (v *VPN) Leases() []netip.Prefix {
	if l := v.leases.Load(); l != nil {
		return *l
	}
	return nil
}

// setLease records that this member holds ip of pool (or, with an
// invalid ip, nothing of pool), configures the device and publishes the
// change.
func (v *VPN) setLease(pool netip.Prefix, ip netip.Addr) {
	v.leaseMu.Lock()
	var old netip.Prefix
	cur := v.Leases()
	next := make([]netip.Prefix, 0, len(cur)+1)
	for _, p := range cur {
		if p.Masked() == pool.Masked() {
			old = p
			continue
		}
		next = append(next, p)
	}
	var added netip.Prefix
	if ip.IsValid() {
		added = netip.PrefixFrom(ip, pool.Bits())
		next = append(next, added)
	}
	v.leases.Store(&next)
	v.leaseMu.Unlock()

	if a := v.addresser; a != nil {
		if old.IsValid() && old != added {
			if err := a.RemoveAddress(old); err != nil {
				v.log.Warn("leased address not removed from the device", zap.Stringer("ip", old), zap.Error(err))
			}
		}
		if added.IsValid() {
			if err := a.AddAddress(added); err != nil {
				v.log.Error("leased address not added to the device", zap.Stringer("ip", added), zap.Error(err))
			}
		}
	}
	if v.names != nil {
		v.names.kick()
	}
	if v.dnsSrv != nil {
		v.dnsSrv.listenOn(v.ownIPs())
	}
}

// leaseLoop holds an address of pool for as long as the VPN runs.
func (v *VPN) leaseLoop(pool netip.Prefix) {
	addr := v.node.Address()
	var (
		held    netip.Addr
		attempt uint64
		probes  uint64
	)
	size := poolSize(pool, maxProbes)
	for {
		wait := time.Duration(0)
		if held.IsValid() {
			err := v.writeLease(held, v.cfg.LeaseTTL)
			switch {
			case err == nil:
				wait = v.cfg.LeaseTTL / 3
			case errors.Is(err, dht.ErrExists):
				v.stats.leasesLost.Add(1)
				v.log.Warn("leased address taken by another member; leasing another", zap.Stringer("ip", held), zap.Error(err))
				held = netip.Addr{}
				v.setLease(pool, held)
				attempt++
			default:
				wait = leaseRetry
				if v.ctx.Err() == nil {
					v.log.Debug("lease not renewed yet", zap.Stringer("ip", held), zap.Error(err))
				}
			}
		} else {
			ip := candidate(pool, addr[:], attempt)
			v.waitInRing()
			err := v.writeLease(ip, v.cfg.LeaseTTL)
			if err == nil {
				err = v.confirmLease(ip)
			}
			switch {
			case err == nil:
				held, probes = ip, 0
				v.stats.leasesTaken.Add(1)
				v.log.Info("address leased", zap.Stringer("ip", netip.PrefixFrom(ip, pool.Bits())), zap.Uint64("attempt", attempt))
				v.setLease(pool, ip)
				wait = v.cfg.LeaseTTL / 3
			case errors.Is(err, dht.ErrExists), errors.Is(err, dht.ErrBadRecord):
				v.stats.leaseConflicts.Add(1)
				attempt++
				probes++
				if probes >= size {
					probes = 0
					wait = leaseRetry
					v.log.Warn("no free address in the pool yet", zap.Stringer("pool", pool), zap.Uint64("tried", size))
				}
			default:
				wait = leaseRetry // the ring may not be there yet
				if v.ctx.Err() == nil {
					v.log.Debug("no lease yet", zap.Stringer("ip", ip), zap.Error(err))
				}
			}
		}
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-v.ctx.Done():
			}
		}
		if v.ctx.Err() != nil {
			if held.IsValid() {
				// Let it go: a record that expires in a moment.
				_ = v.writeLeaseCtx(context.Background(), held, releaseTTL, time.Second)
			}
			return
		}
	}
}

// Confirmation. While the ring forms, members that start at once see
// different owners for one key, and two creates of one address can both
// succeed on different nodes. Replicas converge as the ring does (the
// newest write wins), so a new lease is renewed a few times, spaced by
// leaseConfirmEvery, and read back before the address is used: a rival's
// record found on the way is a conflict like any other.
const (
	leaseConfirmRounds = 3
	leaseConfirmEvery  = 2 * time.Second
	// ringWait bounds the wait for the ring before a first lease: a
	// member alone (the first of a group) leases anyway.
	ringWait = 10 * time.Second
)

// waitInRing waits until the node is linked on both sides of the ring,
// or ringWait passes.
func (v *VPN) waitInRing() {
	for deadline := time.Now().Add(ringWait); !v.node.InRing() && time.Now().Before(deadline); {
		select {
		case <-time.After(250 * time.Millisecond):
		case <-v.ctx.Done():
			return
		}
	}
}

// confirmLease renews the new lease of ip and reads it back; an error
// wrapping dht.ErrExists means another member holds ip.
func (v *VPN) confirmLease(ip netip.Addr) error {
	self := v.node.Address()
	for range leaseConfirmRounds {
		select {
		case <-time.After(leaseConfirmEvery):
		case <-v.ctx.Done():
			return dht.ErrClosed
		}
		if err := v.writeLease(ip, v.cfg.LeaseTTL); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(v.ctx, v.cfg.ResolveTimeout)
	defer cancel()
	rec, err := v.dht.GetRecord(ctx, NamespaceVIP, ip.String())
	if err != nil {
		return err
	}
	m, err := v.verify.Verify(rec.Key(), rec, time.Now())
	if err != nil {
		return err
	}
	if m.Address != self {
		return fmt.Errorf("%w: %s is held by %q (%s)", dht.ErrExists, ip, m.Name, m.Address)
	}
	return nil
}

// writeLease creates (or, ours, renews) the record of ip for ttl.
func (v *VPN) writeLease(ip netip.Addr, ttl time.Duration) error {
	return v.writeLeaseCtx(v.ctx, ip, ttl, v.cfg.ResolveTimeout)
}

func (v *VPN) writeLeaseCtx(ctx context.Context, ip netip.Addr, ttl, timeout time.Duration) error {
	addr := v.node.Address()
	rec, err := dht.Sign(v.id, NamespaceVIP, ip.String(), addr[:], time.Now().Add(ttl))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return v.dht.CreateRecord(ctx, rec)
}

// reclaim takes ip, one of our fixed IPs whose record another member
// holds, back if that member holds it by lease; true if it did.
func (v *VPN) reclaim(ip netip.Addr) bool {
	ctx, cancel := context.WithTimeout(v.ctx, v.cfg.ResolveTimeout)
	defer cancel()
	rec, err := v.dht.GetRecord(ctx, NamespaceVIP, ip.String())
	if err != nil {
		return false
	}
	holder, err := v.verify.Verify(rec.Key(), rec, time.Now())
	if err != nil || holder.HasFixedIP(ip) {
		return false
	}
	addr := v.node.Address()
	mine, err := dht.Sign(v.id, NamespaceVIP, ip.String(), addr[:], time.Now().Add(v.cfg.RecordTTL))
	if err != nil {
		return false
	}
	if err := v.dht.PutRecord(ctx, mine); err != nil {
		return false
	}
	v.log.Warn("fixed virtual IP taken back from a lease", zap.Stringer("ip", ip), zap.String("holder", holder.Name), zap.Stringer("member", holder.Address))
	return true
}

// leaseVerdict is what leaseCheck says of a source address.
type leaseVerdict int

const (
	leaseNo      leaseVerdict = iota // not in the member's pools: spoofed
	leaseOK                          // the member's verified lease
	leasePending                     // in its pool, not (yet) known as its lease: dropped, counted
)

// leaseCheck says whether member may send from src by a lease: src is
// in one of its pools and the VPN mapped src to member
// from its verified lease record. When src is in its pool but not mapped
// to it yet, the lookup starts and the packet is dropped (DropUnverified).
func (v *VPN) leaseCheck(member *security.Member, src netip.Addr) leaseVerdict {
	if _, ok := member.PoolOf(src); !ok {
		return leaseNo
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.byIP[src]
	if m != nil && m.remote != nil && m.remote.addr == member.Address {
		if now.After(m.expires) && !m.resolving && v.resolving.Load() < maxResolving {
			m.resolving = true
			v.resolving.Add(1)
			v.spawn(func() { v.resolve(src) })
		}
		return leaseOK
	}
	switch {
	case v.closed:
	case m == nil:
		if len(v.byIP) < v.cfg.MaxPeers && v.resolving.Load() < maxResolving {
			m = &mapping{resolving: true}
			v.byIP[src] = m
			v.resolving.Add(1)
			v.spawn(func() { v.resolve(src) })
		}
	case !m.resolving && v.resolving.Load() < maxResolving &&
		(m.remote == nil && now.After(m.expires.Add(-v.cfg.NegativeTTL+time.Second/4)) ||
			m.remote != nil && now.After(m.expires.Add(-v.cfg.CacheTTL+time.Second))):
		// Nobody, or another holder, when last asked: the lease may be
		// new. Ask again, at most a few times a second per address.
		m.resolving = true
		v.resolving.Add(1)
		v.spawn(func() { v.resolve(src) })
	}
	v.stats.dropUnverified.Add(1)
	if ce := v.log.Check(zap.DebugLevel, "packet from an address not known as the sender's lease dropped"); ce != nil {
		ce.Write(zap.String("member", member.Name), zap.Stringer("src", src))
	}
	return leasePending
}

// leaseHeldBy reports whether the VPN maps src to member from its
// verified lease record (for broadcasts: no lookup starts).
func (v *VPN) leaseHeldBy(member *security.Member, src netip.Addr) bool {
	if _, ok := member.PoolOf(src); !ok {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.byIP[src]
	return m != nil && m.remote != nil && m.remote.addr == member.Address
}

// ownIPs returns this member's addresses: fixed, then leased.
func (v *VPN) ownIPs() []netip.Prefix {
	return append(slices.Clone(v.fixed), v.Leases()...)
}
