// Package memnet is an in-memory network behind transport.PacketConn.
//
// It sits under package transport as the fake of transport/udp: tests and
// the thousand-node simulation (overlay/overlaytest, `ringvpn sim`) run
// whole overlays in one process over a Network, with per-link latency,
// jitter, loss, reordering and duplication, and with NAT rebinding.
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
// (a draw is made only when its probability or jitter is non-zero); Listen
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
// A Conn is bound to LocalAddr and, until it is rebound, is reachable at
// the same public address. Rebind gives it a new public port, as a NAT does
// when a mapping expires. Every NAT decision (which public address a
// datagram leaves from, which arriving datagrams pass) is made in nat.go,
// where per-Conn NAT policies (endpoint-independent mapping,
// address-dependent filtering, symmetric) will slot in. IPv4-mapped IPv6
// addresses are unmapped, as transport/udp does.
package memnet
