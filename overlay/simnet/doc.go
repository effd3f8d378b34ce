// Package simnet is a plain, in-memory link fabric behind overlay.Linker
// and overlay.Link, for running thousands of ring nodes in one process.
//
// It sits under package overlay as the no-crypto fake of its secure links
// (DTLS over transport): `ringvpn sim` at 1,000 and 10,000 nodes and
// overlay tests build their nodes on Linkers of one Fabric. It has no
// packets on a wire, no handshakes and no keys: a Dial takes one simulated
// round trip and yields both ends of a link, and a packet sent on one end
// reaches the other end's handler half a round trip later. Round-trip
// times come from a LatencyModel: Constant, or Plane, which places hosts on
// a map so that distances, and so RTTs, are consistent between pairs.
//
//	Link.Send ──> Fabric (mu: loss dice, event heap) ──(one timer)──┐
//	                                                               v
//	              handler <── worker[node's shard] <── due events in time order
//
// # Cost
//
// Nodes and links are structs and map entries; no goroutine belongs to a
// node, a link or a packet. Send copies the packet into a buffer from a
// bounded free list (size classes of 256 B, 2 KiB and MaxPacket; at most
// 8 MiB idle per class) and pushes it on one time-ordered heap per Fabric,
// served by one time.Timer. When events are due, the timer's callback
// moves them to the queue of a worker: Config.Workers goroutines
// (GOMAXPROCS by default), each serving a fixed share of the nodes. In the
// steady state a Send allocates nothing.
//
// # Ordering and concurrency
//
// Each node is served by one worker, so its handlers run one at a time, in
// the order its packets became due; packets from one link end arrive in
// the order they were sent, and a link's end follows the packets sent on
// it before it was closed. Handlers may Send, Dial, Close and Kill; no lock
// is held while a handler runs. A handler blocks its worker, and with it
// the other nodes of its share, so a Dial from a handler holds them up for
// a round trip: long work belongs on the node's own goroutines.
//
// # Failures
//
// Linker.Close is a clean leave: its links close and each peer's end ends
// one one-way latency later, as when told. Linker.Kill is a crash: nothing
// more is sent or received, and peers' ends stay open, swallowing what is
// sent to them, until Config.DeadAfter after the crash, when they end
// without notice, as a liveness timeout would end them. A dial to an
// address where no live node listens fails after Config.DialTimeout (3s)
// with an error wrapping ErrNoAnswer. Packets are lost with probability
// Config.Loss.
//
// # Time and determinism
//
// All timing uses package time, so inside a testing/synctest bubble a
// Dial takes exactly the RTT and a packet exactly half of it, and a
// simulated hour passes in milliseconds; outside a bubble the fabric runs
// in real time. Loss decisions come from one PCG generator seeded with
// Config.Seed, drawn in the order packets are sent. With one worker the
// handlers of all nodes run in a fixed order, so a simulation in a bubble
// whose other goroutines do not race each other to send or dial is
// reproducible; with several workers, handlers of different nodes run in
// parallel and the order of their sends, and so of the draws, varies.
package simnet
