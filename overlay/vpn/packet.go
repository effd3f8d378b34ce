package vpn

import (
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/tap/frame"
)

// outbound handles one frame the kernel wrote to the device; pkt is
// headroom, then the frame.
func (v *VPN) outbound(pkt []byte) {
	f := pkt[headroom:]
	eth, err := frame.ParseEthernet(f)
	if err != nil {
		v.stats.dropMalformed.Add(1)
		return
	}
	var dst netip.Addr
	switch eth.Type {
	case frame.TypeARP:
		v.answerARP(eth)
		return
	case frame.TypeIPv4:
		ip, err := frame.ParseIPv4(eth.Payload)
		if err != nil {
			v.stats.dropMalformed.Add(1)
			return
		}
		dst = ip.Dst
		if ip.Dst == broadcast4 || v.isSubnetBroadcast(ip.Dst) {
			// To every member: no one peer for the rules to name.
			if v.fw.Outbound(eth.Payload, nil) != firewall.Accept {
				return // counted by the firewall
			}
			v.broadcast(f)
			return
		}
		if ip.Dst.IsMulticast() {
			v.stats.dropBroadcast.Add(1)
			return
		}
	case frame.TypeIPv6:
		ip, err := frame.ParseIPv6(eth.Payload)
		if err != nil {
			v.stats.dropMalformed.Add(1)
			return
		}
		dst = ip.Dst
		if ip.Dst.IsMulticast() {
			if ip.Protocol == frame.ProtoICMPv6 && v.answerNDP(eth, ip) {
				return
			}
			v.stats.dropBroadcast.Add(1)
			return
		}
	default:
		v.stats.dropNotIP.Add(1)
		return
	}
	if len(eth.Payload) > v.maxPacket {
		// The kernel keeps to the device MTU; this is a packet routed in
		// with a larger one (router mode) or a lowered MTU.
		v.answerTooBig(f)
		return
	}
	if frame.ClampMSS(eth.Payload, v.mss(dst)) {
		v.stats.mssClamped.Add(1)
	}
	if v.isOwn(dst) {
		return
	}
	r := v.route(dst, pkt)
	if r == nil {
		return
	}
	v.send(r, pkt)
}

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// isSubnetBroadcast reports whether ip is the broadcast address of one
// of our virtual networks.
func (v *VPN) isSubnetBroadcast(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	for _, p := range v.own {
		if p.Addr().Is4() && p.Bits() < 31 && subnetBroadcast(p) == ip {
			return true
		}
	}
	return false
}

// mss is the largest TCP segment that fits the device MTU.
func (v *VPN) mss(dst netip.Addr) uint16 {
	if dst.Is4() {
		return uint16(v.maxPacket - 40)
	}
	return uint16(v.maxPacket - 60)
}

// answerARP answers an ARP request for a virtual address (any address in
// our networks but our own) with gatewayMAC.
func (v *VPN) answerARP(eth frame.Ethernet) {
	arp, err := frame.ParseARP(eth.Payload)
	if err != nil {
		v.stats.dropMalformed.Add(1)
		return
	}
	if arp.Op != frame.ARPRequest || v.isOwn(arp.TargetIP) || !v.inOurNetworks(arp.TargetIP) {
		return
	}
	var buf [64]byte
	reply := frame.AppendARPReply(buf[:0], arp, gatewayMAC)
	v.stats.arpAnswered.Add(1)
	v.writeFrame(reply)
}

// answerNDP answers a neighbour solicitation for a virtual address;
// false if f is not one.
func (v *VPN) answerNDP(eth frame.Ethernet, ip frame.IPv6) bool {
	ns, err := frame.ParseNeighborSolicitation(ip)
	if err != nil {
		return false
	}
	if v.isOwn(ns.Target) || !v.inOurNetworks(ns.Target) {
		return true // the kernel's own DAD or a foreign address: nothing to say
	}
	var buf [128]byte
	reply := frame.AppendNeighborAdvertisement(buf[:0], ns, eth.Src, gatewayMAC)
	v.stats.ndpAnswered.Add(1)
	v.writeFrame(reply)
	return true
}

// answerTooBig tells the sender of an oversized packet the MTU.
func (v *VPN) answerTooBig(f []byte) {
	v.stats.tooBig.Add(1)
	var buf [1400]byte
	reply, err := frame.AppendTooBig(buf[:0], f, v.maxPacket, netip.Addr{})
	if err != nil {
		return
	}
	v.writeFrame(reply)
}

// receive handles a data packet from a direct link.
func (v *VPN) receive(from *security.Member, f []byte) {
	v.mu.Lock()
	r := v.byAddr[from.Address]
	if r == nil && !v.closed {
		// Senders are authenticated members; the housekeeper trims the
		// table, never the packet path.
		r = v.remoteLocked(from.Address)
	}
	v.mu.Unlock()
	if r == nil {
		return
	}
	v.receiveFrom(r, from, f)
}

// receiveFrom checks one frame from member (sender r) and writes it to
// the device: it must be IP, from one of the member's own addresses, to
// one of ours. It is rewritten in place to come from gatewayMAC to the
// device's MAC.
func (v *VPN) receiveFrom(r *remote, member *security.Member, f []byte) {
	eth, err := frame.ParseEthernet(f)
	if err != nil {
		v.stats.dropMalformed.Add(1)
		return
	}
	var src, dst netip.Addr
	switch eth.Type {
	case frame.TypeIPv4:
		ip, err := frame.ParseIPv4(eth.Payload)
		if err != nil {
			v.stats.dropMalformed.Add(1)
			return
		}
		src, dst = ip.Src, ip.Dst
	case frame.TypeIPv6:
		ip, err := frame.ParseIPv6(eth.Payload)
		if err != nil {
			v.stats.dropMalformed.Add(1)
			return
		}
		src, dst = ip.Src, ip.Dst
	default:
		v.stats.dropNotIP.Add(1)
		return
	}
	verdict := leaseOK
	if !member.AllowsSource(src) {
		verdict = v.leaseCheck(member, src)
	}
	if verdict == leasePending {
		return // counted: the lookup of src's lease is under way
	}
	if verdict != leaseOK {
		v.stats.dropSpoofed.Add(1)
		if ce := v.log.Check(zap.DebugLevel, "spoofed packet dropped"); ce != nil {
			ce.Write(zap.String("member", member.Name), zap.Stringer("src", src), zap.Stringer("dst", dst))
		}
		return
	}
	if !v.isOwn(dst) {
		v.stats.dropNotForUs.Add(1)
		return
	}
	// Only now, so that the rules see a packet from the member's own
	// address to ours; before any state is touched, so that a member the
	// rules keep out can't keep its entry alive or earn a shortcut.
	if v.fw.Inbound(eth.Payload, member) != firewall.Accept {
		return // counted by the firewall
	}
	now := time.Now()
	r.packetsIn.Add(1)
	r.heard.Add(1)
	r.touch(now)
	v.learn(r, member)
	copy(f[0:6], v.mac)
	copy(f[6:12], gatewayMAC)
	v.stats.bytesIn.Add(uint64(len(f)))
	v.writeFrame(f)
}
