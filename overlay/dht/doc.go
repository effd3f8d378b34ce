// Package dht is the replicated key/value store on the ring: put with a
// TTL (soft state), get, create-if-absent, replicated on the r nodes
// closest to each key and re-replicated under churn. It carries what the
// VPN layer looks up (virtual IP to overlay address, names, revocations);
// records that claim something about a node are signed by that node and
// checked against the group CA.
//
// It sits on top of one overlay.Node, using only its public surface:
// closest-mode routing (overlay.FlagClosest) to reach the owner of a key,
// exact routing for replies, one-hop SendTo for replica traffic, and
// ClosestPeers/Peers for the node's view of the ring. It imports security
// for certificates and nothing above overlay.
//
// # Placement
//
// A key is a ring address. The node closest to it is the owner: requests
// are routed there. The owner stores a write and pushes it, one hop, to the
// r-1 other nodes closest to the key among its linked peers (its near links
// are exactly the nodes around it). Every value carries an absolute expiry
// and a version (the writer's clock, then a random tie-breaker; a retry
// keeps its version): whatever order pushes arrive in, each node keeps the
// newest version, so replicas converge. Expired values are never returned
// and are swept.
//
// Every republish_interval each node walks its values, computes each one's
// replica set from its own view (itself and ClosestPeers, the r closest)
// and pushes the value to the other members. A node no longer in the set
// pushes too and drops its copy after three rounds. An owner asked for a
// key it lacks (a new owner right after churn) asks its closest peers
// before it answers not-found, and before it decides a create.
//
// # Signed records
//
// A SignedRecord (namespace, name, value, expiry, certificate chain,
// signature) lives under KeyOf(namespace, name). With a Verifier
// (VerifyWith a trust bundle) only records are accepted, and they are
// checked by the writer, by every node that stores them and by every
// reader: the chain verifies against the group CA, the signature against
// the certificate's key, the key is KeyOf(namespace, name), the record has
// not expired, and a claim (namespace "node", or one the Verifier is told
// about) is named by its signer's own address. Without a Verifier
// (simulations) plain values are accepted and records are checked without
// the CA.
//
// # Wire format
//
// Every payload starts with the version byte (WireVersion, 1); multi-byte
// integers are big-endian; addresses and keys are 20 bytes. Requests
// (TypeRequest, routed closest to the key), replies (TypeReply, routed
// exactly to the requester, through its via if it named one), fetches and
// fetch replies (TypeFetch, TypeFetchReply, one hop) are messages:
//
//	 0       1       2       3       4                               12
//	+-------+-------+-------+-------+-------------------------------+
//	|version|  op   |status | flags |        request id (8)         |
//	+-------+-------+-------+-------+-------------------------------+
//	|                          key (20)                            |
//	+--------------------------------------------------------------+
//	|         via (20)                      if flags & 1           |
//	|         item (below)                  if flags & 2           |
//	|         text len (2) | text (UTF-8)   if flags & 4           |
//	+--------------------------------------------------------------+
//
// op is 1 put, 2 create, 3 get (echoed in the reply); status is 0 ok,
// 1 not found, 2 exists, 3 bad record, 4 too large, 5 full, 6 unsigned,
// 7 bad request; text says why a write was refused.
//
// An item is one stored value:
//
//	 0       1                               9                              17
//	+-------+-------------------------------+-------------------------------+
//	| kind  |    version: time (8, ns)      |    version: tie-breaker (8)   |
//	+-------+-------------------------------+-------+-------+---------------+
//	|      expires (8, Unix ns)             |  len (2)      | data (len)    |
//	+---------------------------------------+---------------+---------------+
//
// kind 0 is a plain value, kind 1 an encoded SignedRecord (whose expiry
// must equal the item's). A push (TypePush, one hop to a replica) packs
// items:
//
//	+-------+---------------+--------------------------------------------+
//	|version|  count (2)    | count x ( key (20) | item )                 |
//	+-------+---------------+--------------------------------------------+
//
// and an encoded SignedRecord is:
//
//	+-------+------+-----------+------+------+---------------------+
//	|version|ns len| namespace |name l| name | expires (8, Unix ns)|
//	+-------+------+-----------+------+------+---------------------+
//	| value len (2) | value | certs (1) | certs x ( len (2) | DER ) |
//	+---------------+-------+-----------+---------------------------+
//	| sig len (1) | signature                                       |
//	+-------------+-------------------------------------------------+
//
// The signature (ECDSA P-256 over SHA-256, ASN.1; or Ed25519) covers the
// string "ringvpn dht record v1\x00" followed by the record's encoding
// from the namespace length to the value.
package dht
