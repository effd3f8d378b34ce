// Package overlay is the structured ring: 160-bit addresses, the
// connection table with its kinds of links (leaf, near, far), greedy
// routing with exact and closest delivery, the connect-to-me linking
// protocol and the maintainers that keep the ring whole.
//
// It sits above security (authenticated links) and transport (pipes):
// a Node sees its peers only through the Link and Linker interfaces, so
// the same node runs over DTLS on a UDP socket, over DTLS on an
// in-memory network, or over plain in-memory links in a simulation of
// thousands of nodes.
//
// Every message on a link starts with the routed-message header:
//
//	 0       1       2       3       4       5       6       7
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|version| type  | flags |  ttl  | hops  |       reserved        |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|                     source address (20 bytes)                 |
//	|                  destination address (20 bytes)               |
//	|          via address (20 bytes, only if FlagVia is set)       |
//	+---------------------------------------------------------------+
//	|                           payload                             |
//
// Link-local messages (ping, pong, neighbour lists) use the same header
// with the peer as destination and are never forwarded.
package overlay
