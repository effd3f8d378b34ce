// Package revoke spreads the group's revocation lists over the ring, so
// that a member revoked by its CA is cut off by every other member within
// seconds, with no central server.
//
// It sits on top of one overlay.Node (and its DHT), above security: the
// lists are the X.509 CRLs of security.Revocations, signed by a CA of the
// trust bundle. A Spreader runs on each member. When the member's
// Revocations take a list from a local source (a file of identity.crl,
// `ringvpn crl publish`, Publish), the Spreader sends it
//
//   - over a ring broadcast (overlay.Node.Broadcast), which reaches every
//     member once, in about as many hops as a routed message takes;
//   - into the DHT, under a well-known key per CA, where a member that was
//     away, or missed the broadcast, finds it: every member reads that key
//     soon after it joins the ring and every check_interval after;
//   - to its neighbours by gossip: a member tells each new peer, and all
//     its peers shortly after its lists change, which lists it holds (a
//     digest of CA, number and hash), and a peer holding a newer list
//     pushes it over that one link. So a list also spreads hop by hop,
//     around a member that drops broadcasts and across a ring that healed
//     after a partition.
//
// A list received on any of these ways is handed to Revocations.Add,
// which takes it only if a CA of the bundle signed it and its number is
// higher than the one held: a member can't forge a list or roll one back,
// so none of the ways needs to trust the members that carry it. The lists
// held then close links to the revoked members and refuse their
// handshakes (security.Endpoint.SetRevocations).
//
// # Cost
//
// Junk costs little: a message is parsed in constant time and copied once;
// lists are named by their SHA-256, and a list already taken or refused is
// dropped by its hash before any other work; a list older than the one
// held is refused without checking its signature; and signature checks
// are limited to verifyRate per second. Handlers only copy messages to a
// bounded queue served by the Spreader's goroutine.
//
// # Wire format
//
// A list travels cut in chunks of ChunkSize bytes (the last may be
// shorter), at most MaxChunks, so every message fits in one unfragmented
// UDP datagram and every DHT value in dht.max_value_size (1,024 bytes by
// default). Multi-byte integers are big-endian. A piece (TypeBroadcast
// over the ring, TypePiece over one link) carries one chunk:
//
//	 0       1                               33          37          39
//	+-------+-------------------------------+-----------+-----------+--------------+
//	|version|   list hash: SHA-256 (32)     | total (4) | index (2) | chunk        |
//	+-------+-------------------------------+-----------+-----------+--------------+
//
// total is the list's length (at most MaxListSize), index the chunk's
// number; the chunk is ChunkSize bytes, or what is left of the list for
// the last one. A digest (TypeDigest, one link) lists what the sender
// holds:
//
//	+-------+-------+-------+---------------------------------------------------+
//	|version| flags | count | count x ( CA id (16) | number (8) | list hash (32) ) |
//	+-------+-------+-------+---------------------------------------------------+
//
// The CA id is the first 16 bytes of SHA-256 over the CA certificate's
// SubjectPublicKeyInfo; number is the CRL number (2^64-1 if larger); flag
// 1 marks a reply, which is not answered. Numbers in digests are hints:
// only Revocations.Add decides.
//
// # DHT records
//
// Records are dht.SignedRecords of namespace "crl", signed by the member
// that stores them (any member may). The head of a CA's list is named by
// the CA id in hex (32 digits); its value:
//
//	+-------+-------------------------------+-----------+-----------+-----------------------+
//	|version|   list hash: SHA-256 (32)     | total (4) | count (2) | list, if count is 0;   |
//	|       |                               |           |           | else count x chunk     |
//	|       |                               |           |           | hash (16)              |
//	+-------+-------------------------------+-----------+-----------+-----------------------+
//
// A list of up to InlineMax bytes (about 15 entries) is in the head
// itself. A longer one is in count chunk records, each named
// "<CA id>/<chunk hash>" (chunk hash: the first 16 bytes of the chunk's
// SHA-256, in hex), whose value is the chunk. Chunk records are content
// addressed (Verifier refuses a chunk that does not match its name, on
// the storing node and the reader), so only the head can be overwritten
// with something else: a member that writes an older list there, or junk,
// is corrected at the next check of any member holding the newer list,
// and the broadcast and the gossip do not depend on the DHT at all.
package revoke
