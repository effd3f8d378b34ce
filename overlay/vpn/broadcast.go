package vpn

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/tap/frame"
)

// IPv4 broadcasts (to 255.255.255.255 or to a virtual network's broadcast
// address) reach the other members through the ring's broadcast, which
// visits every node once and cannot loop. The nodes on the way could
// forge a broadcast's origin, so each frame travels as a record signed by
// its sender (NamespaceBroadcast, named by the sender's address and a
// sequence number, valid for broadcastTTL): a receiver checks the
// signature and the certificate, then the frame's source IP against that
// certificate, and writes the frame only if it is addressed to one of its
// own networks. Other multicast is not carried. The firewall sees a
// broadcast leave with no peer (only rules that name no member can match
// it) and arrive from its signer.

// TypeBroadcast is the ring-broadcast type of signed broadcast frames.
const TypeBroadcast overlay.Type = 0x80

// NamespaceBroadcast names signed broadcast frames; never stored.
const NamespaceBroadcast = "vpn-broadcast"

// broadcastTTL bounds how long a signed broadcast is accepted (against
// replays by a node on the way), so members' clocks must agree within it.
const broadcastTTL = 30 * time.Second

// maxVerifiesPerSecond bounds the signature checks broadcasts cost this
// node, whatever its peers send.
const maxVerifiesPerSecond = 200

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// bcastState is the sender's rate limit and the receiver's replay cache.
type bcastState struct {
	mu       sync.Mutex
	seq      uint64
	sendTok  float64
	sendAt   time.Time
	checkTok float64
	checkAt  time.Time
	seen     map[string]time.Time // record name -> expiry
}

// take takes a token from a bucket of rate per second (burst 2*rate).
func take(tokens *float64, at *time.Time, rate float64, now time.Time) bool {
	*tokens = min(2*rate, *tokens+now.Sub(*at).Seconds()*rate)
	*at = now
	if *tokens < 1 {
		return false
	}
	*tokens--
	return true
}

// broadcast signs frame f and broadcasts it over the ring.
func (v *VPN) broadcast(f []byte) {
	if v.cfg.BroadcastRate == 0 {
		v.stats.dropBroadcast.Add(1)
		return
	}
	now := time.Now()
	b := &v.bcast
	b.mu.Lock()
	ok := take(&b.sendTok, &b.sendAt, float64(v.cfg.BroadcastRate), now)
	b.seq++
	seq := b.seq
	b.mu.Unlock()
	if !ok {
		v.stats.dropBroadcast.Add(1)
		return
	}
	// The start time makes names unique across restarts.
	name := dht.ClaimName(v.node.Address(), strconv.FormatInt(v.started.UnixNano(), 36)+"."+strconv.FormatUint(seq, 36))
	rec, err := dht.Sign(v.id, NamespaceBroadcast, name, f, now.Add(broadcastTTL))
	if err != nil {
		v.stats.dropBroadcast.Add(1)
		return
	}
	b2, err := rec.MarshalBinary()
	if err == nil {
		err = v.node.Broadcast(TypeBroadcast, b2)
	}
	if err != nil {
		v.stats.dropBroadcast.Add(1)
		v.log.Debug("broadcast not sent", zap.Error(err))
		return
	}
	v.stats.broadcastsOut.Add(1)
}

// onBroadcast checks a signed broadcast frame from the ring and writes it
// to the device if it is for one of our networks.
func (v *VPN) onBroadcast(m *overlay.Message) {
	if m.Src == v.node.Address() {
		return // our own, back from the ring
	}
	now := time.Now()
	// Cheap checks first, so junk can't spend the signature budget.
	rec, err := dht.ParseRecord(m.Payload)
	if err != nil || rec.Namespace != NamespaceBroadcast || !checkBroadcastName(rec.Name, m.Src) {
		v.stats.dropMalformed.Add(1)
		return
	}
	if rec.Expires.After(now.Add(broadcastTTL+5*time.Second)) || !now.Before(rec.Expires) {
		v.stats.dropSpoofed.Add(1) // outside the window: a replay, or a clock far off
		return
	}
	b := &v.bcast
	b.mu.Lock()
	_, seen := b.seen[rec.Name]
	ok := !seen && take(&b.checkTok, &b.checkAt, maxVerifiesPerSecond, now)
	b.mu.Unlock()
	if !ok {
		v.stats.dropBroadcast.Add(1)
		return
	}
	member, err := v.verify.Verify(rec.Key(), rec, now)
	if err != nil || member.Address != m.Src {
		v.stats.dropSpoofed.Add(1)
		if ce := v.log.Check(zap.DebugLevel, "broadcast refused"); ce != nil {
			ce.Write(zap.Stringer("src", m.Src), zap.Error(err))
		}
		return
	}
	if !v.firstSighting(rec.Name, rec.Expires, now) {
		return // a replay
	}
	f := rec.Value
	eth, err := frame.ParseEthernet(f)
	if err != nil || eth.Type != frame.TypeIPv4 {
		v.stats.dropMalformed.Add(1)
		return
	}
	ip, err := frame.ParseIPv4(eth.Payload)
	if err != nil {
		v.stats.dropMalformed.Add(1)
		return
	}
	if !member.AllowsSource(ip.Src) && !v.leaseHeldBy(member, ip.Src) {
		v.stats.dropSpoofed.Add(1)
		return
	}
	if !v.broadcastForUs(ip.Src, ip.Dst) {
		v.stats.dropNotForUs.Add(1)
		return
	}
	if v.fw.Inbound(eth.Payload, member) != firewall.Accept {
		return // counted by the firewall
	}
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], gatewayMAC)
	v.stats.broadcastsIn.Add(1)
	v.stats.bytesIn.Add(uint64(len(f)))
	v.writeFrame(f)
}

// firstSighting records a broadcast's name; false if seen before.
func (v *VPN) firstSighting(name string, expires, now time.Time) bool {
	b := &v.bcast
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = make(map[string]time.Time)
	}
	if _, dup := b.seen[name]; dup {
		return false
	}
	if len(b.seen) >= 4096 {
		for k, exp := range b.seen {
			if now.After(exp) {
				delete(b.seen, k)
			}
		}
		if len(b.seen) >= 4096 {
			return false // flooded: refuse rather than forget
		}
	}
	b.seen[name] = expires
	return true
}

// broadcastForUs reports whether a broadcast from src to dst belongs on
// our device: the limited broadcast, or the broadcast address of one of
// our networks, sent from inside that network.
func (v *VPN) broadcastForUs(src, dst netip.Addr) bool {
	for _, p := range v.own {
		if !p.Addr().Is4() || !p.Masked().Contains(src) {
			continue
		}
		if dst == broadcast4 || dst == subnetBroadcast(p) {
			return true
		}
	}
	return false
}

// subnetBroadcast is the broadcast address of p's network (IPv4).
func subnetBroadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// checkBroadcastName is the verifier's rule for NamespaceBroadcast: the
// name starts with the signer's address.
func checkBroadcastName(name string, signer overlay.Address) bool {
	return strings.HasPrefix(name, dht.ClaimName(signer, ""))
}
