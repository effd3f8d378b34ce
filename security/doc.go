// Package security holds ringvpn's identities: key pairs, overlay addresses
// derived from them, the group certificate authority (CA), member
// certificates and trust bundles. (The DTLS links that use them live in
// this package too.)
//
// It sits between package transport (datagram pipes) and package overlay:
// every overlay link is a DTLS session whose two ends present member
// certificates issued by a CA of the group, and each end checks the other's
// with [TrustBundle.VerifyMember]. The package imports nothing else of
// ringvpn.
//
// # Overlay addresses
//
// A node's overlay address ([Address]) is the first 160 bits of SHA-256 over
// the DER SubjectPublicKeyInfo of its public key. A node can't claim an
// address without holding the matching private key, and the address of any
// certificate can be recomputed from the certificate alone.
//
// # Keys
//
// Members and CAs use ECDSA P-256 by default; Ed25519 is supported for both
// ([KeyKindECDSAP256], [KeyKindEd25519]). These are the certificate key types
// that pion/dtls v3 can both present and verify.
//
// # Member certificates
//
// A member certificate is an X.509 v3 leaf signed by a group CA:
//   - Subject CN: the member name;
//   - KeyUsage digitalSignature; ExtKeyUsage clientAuth and serverAuth (a
//     link may be opened from either end);
//   - a random 128-bit serial number;
//   - no subject alternative names at all;
//   - one non-critical extension, the member extension, that carries
//     everything ringvpn needs.
//
// The member extension's value is DER (encoding/asn1):
//
//	MemberExtension ::= SEQUENCE {
//	    version   INTEGER,                  -- 1
//	    address   OCTET STRING (SIZE (20)), -- overlay address
//	    name      UTF8String,               -- equals the Subject CN
//	    ips       SEQUENCE OF Prefix,       -- virtual IPs, with network length
//	    groups    SEQUENCE OF UTF8String,
//	    subnets   SEQUENCE OF Prefix        -- subnets the member may route
//	}
//	Prefix ::= SEQUENCE {
//	    addr  OCTET STRING (SIZE (4 | 16)),
//	    bits  INTEGER
//	}
//
// Decoders ignore elements appended after subnets, so later additions that
// old nodes may safely skip keep version 1; an incompatible change bumps the
// version, and old nodes then refuse such certificates with a clear error.
//
// Why one private extension rather than URIs in the subject alternative
// name: the fields are typed (prefixes are prefixes, not strings to parse),
// the encoding is compact (it travels in every handshake), and a member
// certificate can't be mistaken for a web certificate: it names no host, so
// no ordinary TLS client accepts it for a server, and no ringvpn node
// accepts a certificate that lacks the extension.
//
// # The extension's OID
//
// The extension is identified by 1.3.6.1.4.1.32473.1.1: a placeholder under
// the IANA enterprise number that RFC 5612 sets aside for documentation. It
// is defined once, as oidMemberExtension in cert.go, and must be replaced by
// an arc the project owns before the first release, since changing it later
// invalidates every issued certificate. An IANA Private Enterprise Number is
// free and is the natural choice.
//
// The registration-free arc 2.25.<UUID as a 128-bit integer> (ITU-T X.667)
// was the first choice but cannot be used: Go's crypto/x509 (and so
// pion/dtls, which parses peer certificates with it) rejects any certificate
// carrying an extension whose OID has an arc of 2^31 or more, with
// "x509: malformed extension OID field".
//
// # Verification
//
// [TrustBundle.VerifyMember] does not use x509.Certificate.Verify and its
// generic errors. It finds the issuing CA in the bundle (issuer name and
// signature), checks the CA's and the leaf's validity windows, decodes the
// member extension and recomputes the overlay address from the leaf's key.
// Every failure wraps one of the sentinel errors in errors.go and names the
// certificate and the cause, for example:
//
//	certificate of "alice" is signed by "other-ca", which is not in the trust bundle (trusted: "group-ca")
//
// A trust bundle may hold several CAs, so a group can rotate its CA: members
// of the old and the new CA are accepted while both are in the bundle.
//
// # Revocation
//
// A CA revokes members with standard X.509 v2 revocation lists (CRLs, RFC
// 5280), made by [CA.Revoke] (`ringvpn ca revoke`): each list keeps the
// entries of the one before, and its CRL number is one higher. A node
// holds the newest list of each CA of its bundle in [Revocations], which
// takes a list only if a CA of the bundle signed it and its number is
// higher than the one held, so replaying an old list can't undo a
// revocation. Lists past their nextUpdate are still applied (they only
// ever take access away) and warned about. An [Endpoint] given the set
// with SetRevocations refuses revoked peers in handshakes, like any other
// bad certificate, and closes its links to members as soon as a list
// revoking them arrives, telling the peer. Lists come from files
// ([RevocationFiles], reloaded when they change) and, as DER bytes, from
// other members ([Revocations.Add], [Revocations.Lists] to publish).
//
// # Expiry
//
// A link closes when its peer's certificate, or the CA that issued it,
// expires: one runtime timer per link (no goroutine), re-checked against
// the wall clock. A [Monitor] warns ahead of the expiry of the node's own
// certificate and of its CA, then daily.
//
// # Files
//
// Private keys are PKCS#8 PEM files written with mode 0600; certificates and
// trust bundles are PEM "CERTIFICATE" blocks (a bundle is several
// concatenated). Existing files are not overwritten unless forced.
// Revocation lists are PEM "X509 CRL" blocks, replaced atomically when a
// CA extends its list.
package security
