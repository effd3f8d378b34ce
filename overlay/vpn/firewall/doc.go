// Package firewall is the VPN's stateful packet filter: rules on the
// peer's certificate (member name, groups, CA) and on the packet
// (protocol, port, remote and local addresses) decide which flows may
// start, inbound and outbound, and a table of flows (connection tracking)
// lets the rest of an allowed flow, its replies included, through
// without a rule.
//
// It sits under overlay/vpn, which calls [Firewall.Outbound] for each IP
// packet it is about to send to a member and [Firewall.Inbound] for each
// one a member sent, after its own checks (the sender may use the source
// address; the destination is ours), and [Firewall.Sweep] from its
// housekeeping. It imports security (for the peer's certificate) and
// tap/frame (to parse IP headers), and keeps no globals: each VPN has its
// own *Firewall.
//
// # The default
//
// With no `vpn.firewall` section, or one without `inbound` and `outbound`
// lists, the firewall is off: everything passes both ways, as before the
// firewall existed, at the cost of one atomic load per packet.
//
// Once a list is present, what its rules do not allow is dropped that
// way. A list that is absent still lets everything through its way; an
// empty list (`inbound: []`) lets nothing start that way. (A key with no
// value, `inbound:` alone, is absent in YAML terms: write [] to mean an
// empty list.) Replies to allowed flows always pass. The usual setup is
// "outbound anything, inbound what this member serves":
//
//	vpn:
//	  firewall:
//	    conntrack:
//	      tcp_timeout: 2h30m
//	      udp_timeout: 3m
//	      default_timeout: 10m
//	      max_entries: 65536
//	    outbound:
//	      # This member may start anything with any member.
//	      - port: any
//	        proto: any
//	        host: any
//	    inbound:
//	      # Ping (and ICMPv6 echo) from every member.
//	      - port: any
//	        proto: icmp
//	        host: any
//	      # The web server, for the members of group web.
//	      - port: 80
//	        proto: tcp
//	        group: web
//	      # SSH for members in both groups ops and laptop.
//	      - port: 22
//	        proto: tcp
//	        groups: [ops, laptop]
//	      # DNS from the 10.20.0.0/16 addresses, to this member's own one.
//	      - port: 53
//	        proto: udp
//	        cidr: 10.20.0.0/16
//	        local_cidr: 10.20.0.1/32
//	      # A port range for one member, by its certificate's name.
//	      - port: 6000-6010
//	        proto: udp
//	        host: media-01
//
// # Rules
//
// Rules only allow; there is no deny rule, and their order does not
// matter. They are tried for the first packet of a flow, in its
// direction: inbound rules for a flow a peer starts, outbound rules for
// one this member starts. A packet matches a rule when every field the
// rule sets matches:
//   - port: the destination port of that first packet (the local port
//     inbound, the remote port outbound): 80, 1000-2000 or any. Only TCP
//     and UDP have ports: a rule with a port matches nothing else.
//   - proto: any, tcp, udp or icmp; icmp covers ICMPv6 too. Both port
//     and proto are required; an icmp rule's port is any.
//   - host: the peer's member name; group: a group it is in; groups: a
//     list of groups it must all be in; ca_name: the name of the CA that
//     issued its certificate. "any" (or leaving it out) matches all.
//   - cidr: the peer's side of the packet (its source inbound, its
//     destination outbound) is in this prefix (or is this address);
//     local_cidr: this member's side is. 0.0.0.0/0 is all of IPv4, ::/0
//     all of IPv6, any both.
//
// A rule must name its peers with at least one of host, group, groups,
// cidr or ca_name (host: any for every member), so that a rule never
// opens a port to everybody by leaving something out. Outbound, the peer
// is the member that owns the destination; when the VPN does not know it
// (a broadcast), only rules without host, group, groups and ca_name can
// match, and the flow is tied to addresses alone: the VPN has checked
// that whoever answers owns the address it answers from.
//
// # Flows
//
// A flow is named by its protocol and the addresses and ports of both
// ends (the identifier of ICMP echo stands for the ports), and belongs to
// one member. Its first packet, if the rules allow it, enters it in the
// flow table; every later packet, either way, passes on that entry and
// keeps it alive. A flow idle longer than its timeout is forgotten (its
// next packet is a first packet again, under the rules):
//   - TCP: tcp_timeout (default 2h30m) once answered: longer than the 2h
//     of silence after which Linux and Windows send their first TCP
//     keepalive, so a connection kept alive by their defaults is never
//     forgotten. Not yet answered: 2m at most (a SYN is retried for about
//     that long). Closed, by a RST or a FIN each way: 30s at most, then a
//     SYN on the same ports starts a new flow, under the rules again.
//   - UDP: udp_timeout (default 3m).
//   - ICMP echo and every other protocol: default_timeout (default 10m).
//
// Other packets:
//   - An ICMP error (destination unreachable, fragmentation needed,
//     packet too big, time exceeded, parameter problem) passes if the
//     packet it quotes belongs to a tracked flow, so path MTU discovery
//     works; otherwise, like other ICMP messages, under the rules, and
//     it is not tracked.
//   - ICMPv6 neighbour solicitations and advertisements (hop limit 255)
//     always pass: they are the link's own plumbing, like ARP, which the
//     firewall never sees.
//   - A later fragment has no ports: it passes if the first fragment of
//     its datagram (same addresses, protocol and identification) passed
//     in the last 30s. A later fragment that overtakes its first one is
//     dropped, and its datagram lost. The first fragment must hold the
//     whole TCP or UDP header.
//   - A packet that does not parse is dropped (bad_packet).
//
// # Reloading
//
// [Firewall.Reload] swaps in new rules atomically; the flow table stays.
// If the rules changed, each flow is checked against the new rules (those
// of its first packet's direction) at its next packet; a flow they no
// longer allow is forgotten and its packet handled as a first packet, so
// in practice dropped. A reload that only changes timeouts re-checks
// nothing.
//
// # Memory and time
//
// The flow table holds at most conntrack.max_entries flows (default
// 65536, about 10 MB when full), in up to 64 shards, each behind its own
// read-write lock: a packet of a known flow takes a read lock, reads a map
// and updates the entry with atomic operations; it allocates nothing. A
// first packet takes the write lock; entries are allocated 64 at a time
// and reused, so memory stays at the table's high-water mark. When a
// shard is full, a new flow takes the place of an expired, closed or
// never-answered flow found among a few entries of the shard (so a flood
// of new flows, or a port scan, pushes out only its kind); if all of them
// are open and answered, the new flow is dropped (table_full) rather
// than cut a flow in use. The shards are chosen by a hash with a random
// key, so nobody can aim at one.
//
// The firewall has no goroutine and reads no clock on the packet path:
// [Firewall.Sweep] sets its clock and forgets idle flows, and packets are
// stamped with the time of the last Sweep. Call it about once a second; a
// flow's timeout is then exact to a second. Without Sweeps, time stands
// still and no flow expires.
//
// The firewall parses IP headers itself rather than through tap/frame:
// it needs a few fields of each packet, not frame's full view, and must
// not allocate even for a malformed one. A fuzz test holds its parser to
// accept exactly what frame's does.
//
// # Counters and logs
//
// [Firewall.Stats] counts dropped packets by direction and reason
// (no_rule, bad_packet, table_full, fragment) and flows by fate. At debug
// level, dropped packets are logged, at most 10 lines between two Sweeps.
//
// # Differences from Nebula
//
// The configuration reads like Nebula's, with these differences:
//   - Nebula matches a rule when host OR group OR groups OR cidr matches
//     (so `host: any` next to `group: web` allows every host); here every
//     field set must match (AND).
//   - Nebula denies what is not listed even without a firewall section;
//     here an absent section, or an absent list, allows everything (the
//     VPN worked that way before), and only a present list restricts.
//   - port 0 and port fragment are refused (Nebula reads 0 as any, and
//     fragment as a rule for later fragments): use any; later fragments
//     follow their first fragment.
//   - cidr "any" means both IP families, as in recent Nebula; an address
//     without a length means that one address.
//   - local_cidr unset matches any local address (Nebula's default is its
//     own VPN addresses): the VPN itself delivers only packets for this
//     member's addresses. Set local_cidr on a router member to keep
//     rules off the site networks it carries.
//   - Flows are bounded (max_entries); Nebula's table grows without
//     limit. TCP flows have states (answered, closed) and a longer
//     timeout (Nebula: 12m for every TCP flow), and ICMP errors about a
//     flow pass with it.
//   - No inbound_action/outbound_action (reject): packets are dropped,
//     and no ca_sha selector.
package firewall
