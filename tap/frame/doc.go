// Package frame parses and builds the Ethernet frames a TAP device carries:
// Ethernet II (with at most one 802.1Q tag), ARP for IPv4 over Ethernet,
// IPv4, IPv6 with its extension headers, ICMPv6 neighbour discovery, the
// ICMP errors that make path MTU discovery work through the VPN, and TCP
// MSS clamping.
//
// It sits under package tap and above nothing: overlay/vpn uses it to answer
// ARP and neighbour solicitations for virtual addresses locally, to map
// packets to peers by their IP addresses, and to keep packets within the
// MTU of the overlay.
//
// Parsers return small structs by value whose byte slices are views into
// the input (valid as long as the input is), so parsing a valid packet
// allocates nothing. Malformed input never panics: it yields an *Error that
// names the layer, the field and the value that were wrong, and unwraps to
// ErrTruncated, ErrMalformed or ErrUnsupported. Builders append to a caller
// buffer and allocate only if it is too small.
//
// An Ethernet II frame as the TAP device delivers it (no preamble, no FCS):
//
//	 0                   6                  12          14
//	+-------------------+-------------------+-----------+------------ - -
//	| destination MAC   | source MAC        | EtherType | payload
//	+-------------------+-------------------+-----------+------------ - -
//
// With an 802.1Q tag, 0x8100 and a 16-bit tag (priority, DEI, VLAN ID) come
// before the EtherType:
//
//	+---------+---------+--------+-----+-----------+------------ - -
//	| dst MAC | src MAC | 0x8100 | TCI | EtherType | payload
//	+---------+---------+--------+-----+-----------+------------ - -
//
// Frames with a second tag (QinQ) or an 802.3 length instead of an
// EtherType are refused with ErrUnsupported: the VPN carries neither.
package frame
