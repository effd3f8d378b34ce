// Package memnet is an in-memory network behind transport.PacketConn.
//
// It sits under package transport as the fake of transport/udp: tests and
// the thousand-node simulation (overlay/overlaytest, `ringvpn sim`) run
// whole overlays in one process over a Network, with per-link latency,
// jitter, loss, reordering and duplication, and with NATs.
//
//	Conn.WriteTo ──> Network (mu: dice, routing) ──┬─> receive queue ──> Conn.ReadBatch
//	                                               └─> in-flight heap ──(one timer)──┘
//
// # Cost
//
// An endpoint is a map entry and a receive queue that grows on demand; no
// goroutine belongs to an endpoint or to a packet. A datagram on a link
// without delay is copied into a buffer from the network's bounded free list
// and queued at the receiver inside WriteTo. A delayed datagram waits in one
// heap per Network, served by one time.Timer whose callback runs only when a
// datagram is due. A queued or delayed datagram holds a buffer of
// transport.MaxPacket bytes; at most 1024 idle buffers are kept for reuse.
// All sends of a Network take one mutex, which is what makes the order of
// random draws well defined; the copy into the reader's buffers happens
// outside it.
//
// # Determinism
//
// All random decisions come from one PCG generator seeded by New and are
// drawn under the network's mutex in the order datagrams are sent: for each
// datagram loss, then duplication, then for each copy jitter and reordering
// (a draw is made only when its probability or jitter is non-zero), each
// draw preceded by a port if the datagram needs a new NAT mapping; Listen
// on port 0 and Conn.Rebind draw ports. Delays are measured with package
// time, so inside a testing/synctest bubble a datagram sent at t on a link
// with latency L arrives exactly at t+L, and arrivals due at the same
// instant are delivered in send order. A program that sends in a
// deterministic order therefore sees the same losses, delays, duplicates
// and ports on every run with the same seed. Goroutines that race each
// other to send make the order, and so the outcome, depend on the
// scheduler.
//
// A Network used inside a synctest bubble must be created and used only
// inside that bubble: its timer belongs to the bubble that first delays a
// datagram.
//
// # Ordering
//
// Datagrams between two hosts arrive in the order they were sent unless the
// link reorders them: jitter varies the delay but never lets a later
// datagram overtake an earlier one. A datagram picked for reordering gets an
// extra delay (LinkConfig.ReorderDelay) and is overtaken by what follows.
//
// # Addresses and NAT
//
// A Conn from Network.Listen is on the public network: bound to LocalAddr
// and, until it is rebound, reachable at the same public address. Rebind
// gives it a new public port, as a NAT does when a mapping expires.
// IPv4-mapped IPv6 addresses are unmapped, as transport/udp does.
//
// A NAT (Network.NewNAT) is a router with one public IP address in front of
// its own private address space; NAT.Listen binds Conns in it. Conns behind
// one NAT reach each other directly at their private addresses, on a LAN
// that ignores what other NATs use the same addresses for. A datagram from
// inside to any other address leaves from a public port of a mapping,
// which the NAT draws at random from the ephemeral range when the datagram
// needs a new one; what "new" means is NATConfig.Mapping (RFC 4787):
//
//	endpoint-independent      one mapping per inside Conn (cone NATs)
//	address-dependent         one per inside Conn and destination IP
//	address-and-port-dep.     one per inside Conn and destination (symmetric)
//
// A datagram arriving at a public port gets in if the mapping is alive and
// NATConfig.Filtering lets it: anyone (full cone), only an IP address the
// inside Conn has sent to (restricted cone), or only an address and port it
// has sent to (port-restricted cone, symmetric). So two cone NATs let hole
// punching work once both sides have sent, while the port a symmetric NAT
// shows a reflector is useless to anyone else. A datagram from inside to
// the NAT's own public address is hairpinned (looped back through the
// mappings, arriving from the sender's public address) unless
// NATConfig.NoHairpin. Every datagram a NAT drops counts in
// Stats.DroppedFiltered.
//
// Mappings and filter permissions expire NATConfig.Timeout (default 30 s)
// after the last datagram sent out through them; datagrams coming in don't
// keep them alive. Expiry is checked lazily when state is used, and each
// NAT sweeps what expired at most once per timeout, from the send path: no
// goroutine or timer belongs to a NAT or a mapping, and under
// testing/synctest a mapping dies exactly on time. NAT.Flush forgets every
// mapping, as `conntrack -F` does, and Rebind of a Conn behind a NAT
// forgets its own. A Conn on the public network pays one nil check per
// datagram for all this; one behind a NAT pays a clock read per batch and
// one to three map look-ups per datagram each way.
//
// Links are looked up by the addresses on the wire: SetLink with a NAT's
// public IP governs the paths between the hosts behind it and the rest of
// the network, and SetLink with two private addresses a LAN path (shared
// by every NAT whose hosts use those addresses). Not modelled: NATs in
// series (carrier-grade NAT), port preservation or sequential port
// allocation, mappings that outlive a closed Conn, ICMP.
package memnet
