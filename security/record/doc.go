// Package record seals and opens ringvpn's bulk data records.
//
// It sits under package security and beside package transport: a peer link
// is a DTLS 1.2 session (package security, pion/dtls) that only
// authenticates the peer and agrees keys; the caller exports keying material
// from it (RFC 5705, [ExporterLabel], [ExporterLen]), splits it with
// [KeysFromExporter] and builds one [Sealer] and one [Opener] per link.
// Every data packet then goes through this package instead of the DTLS
// record layer, the way DTLS-SRTP (RFC 5764) keys SRTP from a DTLS
// handshake: pion's record layer costs about 30 allocations per record,
// this one none. Like transport, this package imports nothing else of
// ringvpn, so the wire constants below are defined here again and must
// match package transport.
//
// A sealed record is a 16-byte header, the ciphertext and a 16-byte
// AES-128-GCM tag:
//
//	 0      1                               9      10                      16
//	+------+-------------------------------+------+------------------------+
//	| 0xE1 | receiver connection ID (8 B)  | kind | sequence number (48 b) |
//	+------+-------------------------------+------+------------------------+
//	| ciphertext ...                                      | AEAD tag (16 B) |
//	+------------------------------------------------------------------------+
//
// Why it looks like this:
//
//   - The first byte 0xE1 lies outside every range RFC 7983 (and RFC 9443)
//     assigns on a shared socket (STUN 0..3, ZRTP 16..19, DTLS 20..63,
//     TURN 64..79, RTP/RTCP 128..191), so the transport Mux tells sealed
//     records from DTLS records by that byte alone.
//   - The receiver's connection ID travels in clear, so the Mux routes a
//     record to its session without keys and a session survives the
//     sender's address changing (as RFC 9146 does for DTLS).
//   - The whole header is the additional data: the type byte, connection
//     ID, caller-chosen kind and sequence number are all authenticated.
//   - The nonce is a counter, never random: the 12-byte per-direction IV
//     XOR (4 zero bytes || 64-bit big-endian sequence number), as in
//     TLS 1.3 and DTLS-SRTP's AEAD mode (RFC 7714). Sequence numbers start at 0
//     and grow by one per record, so a nonce repeats only if a sequence
//     number does, and [Sealer.Seal] returns [ErrExhausted] rather than go
//     past [MaxSeq]. The sequence number doubles as the replay counter.
//   - The Opener drops duplicates and records older than its
//     [ReplayWindow] before decrypting (cheap), and marks a sequence number
//     seen only after the tag verifies, so forged records cannot move the
//     window.
//   - Each direction has its own key and IV from the exporter, so the two
//     peers never share a (key, nonce) pair even though both count from 0.
//
// The sequence number and packet sizes are visible on the wire, as in
// DTLS 1.2. Keys live as long as the DTLS session that exported them; the
// caller rekeys (a new handshake or exporter context) using [Sealer.Sent]:
// RFC 8446 §5.5 and RFC 9147 §4.5.3 put the AES-GCM confidentiality limit
// at about 2^24.5 full-size records per key, far below [MaxSeq].
package record
