// Package transport turns one datagram socket into many datagram pipes.
//
// It sits at the bottom of ringvpn: a PacketConn is a UDP socket (package
// transport/udp) or an in-memory network endpoint (package transport/memnet),
// and a Mux demultiplexes it into one Pipe per remote session. DTLS
// (package security) runs over a Pipe as if it were a socket, so the same
// session can run over a real network, an in-memory test network, or, later,
// a relay through another overlay node.
//
// The Mux classifies each datagram by its first byte (RFC 7983):
//
//	20..63   a DTLS record: routed by connection ID (RFC 9146) when it has
//	         one, else by source address while its session is handshaking;
//	         only a ClientHello may create a session.
//	0xE1     a sealed data record (see below): routed by connection ID.
//	other    dropped and counted.
//
// A sealed data record starts with a header the Mux can read without keys:
//
//	 0      1                               9      10                      16
//	+------+-------------------------------+------+------------------------+
//	| 0xE1 | receiver connection ID (8 B)  | kind | sequence number (48 b) |
//	+------+-------------------------------+------+------------------------+
//	| ciphertext ...                                      | AEAD tag (16 B) |
//	+------------------------------------------------------------------------+
//
// The Mux reads only the first 9 bytes; the rest belongs to the record layer
// in package security. This package imports nothing else of ringvpn.
package transport
