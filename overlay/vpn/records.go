package vpn

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/security"
)

// NamespaceVIP holds who owns a virtual IP: the record named by the IP
// (its canonical text form, "10.20.0.5" or "fd00::5") is signed by the
// member whose certificate carries that IP. The owner's overlay address
// is the signer's; the value repeats it for readers that skip the
// certificate.
const NamespaceVIP = "vip"

// Verifier returns a record verifier for the DHT of a VPN member: base's
// checks (chain to the group CA, signature, expiry) and, for NamespaceVIP,
// that the signer's certificate carries the IP or grants a pool holding it
// (a lease, lease.go); for NamespaceName, that the signer's certificate
// has the name and carries or may lease every IP of the value (names.go). Every node of the ring
// stores and serves records, so every node needs it, not only VPN members.
func Verifier(base dht.Verifier) dht.Verifier { return vipVerifier{base} }

type vipVerifier struct{ base dht.Verifier }

func (v vipVerifier) Verify(key overlay.Address, rec *dht.SignedRecord, now time.Time) (*security.Member, error) {
	m, err := v.base.Verify(key, rec, now)
	if err != nil {
		return nil, err
	}
	switch rec.Namespace {
	case NamespaceBroadcast:
		if !checkBroadcastName(rec.Name, m.Address) {
			return nil, fmt.Errorf("%w: broadcast %q is not named by its signer %s", dht.ErrBadRecord, rec.Name, m.Address)
		}
		return m, nil
	case NamespaceVIP:
	case NamespaceName:
		if err := checkNameRecord(rec, m); err != nil {
			return nil, err
		}
		return m, nil
	default:
		return m, nil
	}
	ip, err := netip.ParseAddr(rec.Name)
	if err != nil || ip.String() != rec.Name {
		return nil, fmt.Errorf("%w: vip record %q: the name is not an IP address in canonical form", dht.ErrBadRecord, rec.Name)
	}
	if _, pooled := m.PoolOf(ip); !m.HasFixedIP(ip) && !pooled {
		return nil, fmt.Errorf("%w: vip record %q is signed by %q (%s), whose certificate neither carries that IP nor grants a pool holding it", dht.ErrBadRecord, rec.Name, m.Name, m.Address)
	}
	if len(rec.Value) != len(m.Address) || overlay.Address(rec.Value) != m.Address {
		return nil, fmt.Errorf("%w: vip record %q: the value is not the signer's address", dht.ErrBadRecord, rec.Name)
	}
	return m, nil
}
