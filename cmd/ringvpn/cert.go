package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
)

func newCertCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Issue, show and verify member certificates",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newCertIssueCommand(a), newCertShowCommand(a), newCertVerifyCommand(a))
	return cmd
}

func newCertIssueCommand(a *app) *cobra.Command {
	var (
		caCert, caKey, name, certPath, keyPath string
		ips, groups, subnets                   []string
		keyType                                = security.KeyKindECDSAP256
		force                                  bool
		valid                                  validityFlags
	)
	cmd := &cobra.Command{
		Use:   "issue --name NAME --ip ADDR/LEN [flags]",
		Short: "Create a member's key pair and certificate, signed by the group CA",
		Long: `Create a member's key pair and a certificate for it, signed by the group CA.

The certificate binds the member's name, its overlay address (the hash of
its public key), its virtual IP addresses, its groups and the subnets it may
route for. Copy the certificate, its key and the CA certificate to the
member; the CA key stays where it is.

An --ip with host bits is a fixed IP (10.20.0.5/16). An --ip that is the
network address itself, host bits all zero (10.20.0.0/16), grants a pool:
the member leases any free address of that network from the group through
the DHT when it starts (neither the network nor the broadcast address, nor
an address a fixed member holds), renews the lease while it runs, and lets
it expire when it stops.`,
		Example: `  ringvpn cert issue --name alice --ip 10.20.0.5/16 --group web
  ringvpn cert issue --name laptop-7 --ip 10.20.0.0/16
  ringvpn cert issue --name site-b --ip 10.20.0.9/16 --subnet 192.168.10.0/24 --validity 2160h`,
		Args: withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "ip"); err != nil {
				return err
			}
			if certPath == "" {
				certPath = name + ".crt"
			}
			if keyPath == "" {
				keyPath = name + ".key"
			}
			if certPath == keyPath {
				return usageErrorf("--cert and --key are the same file %s", certPath)
			}
			spec := security.MemberSpec{Name: name, Groups: groups}
			for _, s := range ips {
				p, err := parsePrefixFlag("ip", s, "10.20.0.5/16")
				if err != nil {
					return err
				}
				spec.IPs = append(spec.IPs, p)
			}
			for _, s := range subnets {
				p, err := parsePrefixFlag("subnet", s, "192.168.10.0/24")
				if err != nil {
					return err
				}
				spec.Subnets = append(spec.Subnets, p)
			}
			if err := spec.Validate(); err != nil {
				return fmt.Errorf("invalid member %q:\n  %s", name, strings.ReplaceAll(err.Error(), "\n", "\n  "))
			}
			now := time.Now()
			notAfter, err := valid.end(cmd, now)
			if err != nil {
				return err
			}
			if err := checkFree(force, certPath, keyPath); err != nil {
				return err
			}
			ca, err := security.LoadCA(caCert, caKey)
			if err != nil {
				return err
			}
			notBefore := now.Add(-clockSkew)
			if notBefore.Before(ca.Cert.NotBefore) {
				notBefore = ca.Cert.NotBefore
			}
			key, err := security.GenerateKey(keyType)
			if err != nil {
				return err
			}
			cert, err := ca.Issue(key.Public(), spec, notBefore, notAfter)
			if err != nil {
				return err
			}
			m, err := security.ParseMember(cert)
			if err != nil {
				return err
			}
			if err := writeKeyAndCert(keyPath, certPath, key, cert, force); err != nil {
				return err
			}
			a.log.Debug("issued certificate", zap.String("name", name), zap.Stringer("node", m.Address), zap.String("cert", certPath))
			w := a.stdout
			fmt.Fprintf(w, "issued certificate for %q (%s), signed by %q\n", name, keyType, ca.Cert.Subject.CommonName)
			fmt.Fprintf(w, "  overlay address  %s\n", m.Address)
			fmt.Fprintf(w, "  virtual IPs      %s\n", joinOrDash(ipStrings(m.IPs)))
			fmt.Fprintf(w, "  groups           %s\n", joinOrDash(m.Groups))
			fmt.Fprintf(w, "  subnets          %s\n", joinOrDash(prefixStrings(m.Subnets)))
			fmt.Fprintf(w, "  valid            %s to %s\n", fmtTime(m.NotBefore), fmtTime(m.NotAfter))
			fmt.Fprintf(w, "  certificate      %s\n", certPath)
			fmt.Fprintf(w, "  private key      %s\n", keyPath)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&caCert, "ca-cert", "ca.crt", "the CA certificate")
	fs.StringVar(&caKey, "ca-key", "ca.key", "the CA private key")
	fs.StringVar(&name, "name", "", "the member's name, e.g. alice (required)")
	fs.StringArrayVar(&ips, "ip", nil, "a virtual IP with its network length, e.g. 10.20.0.5/16, or a pool to lease one from, e.g. 10.20.0.0/16 (required; repeatable)")
	fs.StringArrayVar(&groups, "group", nil, "a group the member belongs to (repeatable)")
	fs.StringArrayVar(&subnets, "subnet", nil, "a subnet the member may route for, e.g. 192.168.10.0/24 (repeatable)")
	fs.StringVar(&certPath, "cert", "", "where to write the certificate (default NAME.crt)")
	fs.StringVar(&keyPath, "key", "", "where to write the private key, mode 0600 (default NAME.key)")
	fs.Var(newEnum(&keyType, security.KeyKindECDSAP256, security.KeyKindEd25519), "key-type", "key type: ecdsa-p256 or ed25519")
	fs.BoolVar(&force, "force", false, "overwrite existing files")
	valid.register(fs, 30*24*time.Hour)
	return cmd
}

// parsePrefixFlag parses the value of --flag as an address with its
// network length.
func parsePrefixFlag(flag, s, example string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err == nil {
		return p, nil
	}
	if _, aerr := netip.ParseAddr(s); aerr == nil {
		return p, usageErrorf("--%s %s: add the network length, like %s", flag, s, example)
	}
	return p, usageErrorf("--%s %q: want an address with its network length, like %s", flag, s, example)
}

// certJSON is the --json form of `cert show`. Member fields are absent for
// a CA certificate.
type certJSON struct {
	Kind        string    `json:"kind"` // "member" or "ca"
	Name        string    `json:"name"`
	Address     string    `json:"address,omitempty"`
	IPs         []string  `json:"ips,omitzero"`
	Pools       []string  `json:"pools,omitzero"`
	Groups      []string  `json:"groups,omitzero"`
	Subnets     []string  `json:"subnets,omitzero"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Issuer      string    `json:"issuer"`
	KeyType     string    `json:"key_type"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"fingerprint"`
}

func newCertShowCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [--json] FILE",
		Short: "Print what a member (or CA) certificate says",
		Long: `Print what a certificate says: name, overlay address, virtual IPs, groups,
subnets, validity, issuer and fingerprint. It checks nothing about who
signed it; use "ringvpn cert verify" for that.`,
		Args: oneFile,
		RunE: func(_ *cobra.Command, args []string) error {
			path := args[0]
			c, err := security.ReadCertificate(path)
			if err != nil {
				return err
			}
			info, err := describeCert(c)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			return printCert(a.stdout, info, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func describeCert(c *x509.Certificate) (*certJSON, error) {
	keyType, err := security.KeyKindOf(c.PublicKey)
	if err != nil {
		keyType = fmt.Sprintf("%T", c.PublicKey)
	}
	sum := sha256.Sum256(c.Raw)
	info := &certJSON{
		Kind:        "ca",
		Name:        c.Subject.CommonName,
		NotBefore:   c.NotBefore.UTC(),
		NotAfter:    c.NotAfter.UTC(),
		Issuer:      c.Issuer.CommonName,
		KeyType:     keyType,
		Serial:      c.SerialNumber.Text(16),
		Fingerprint: "sha256:" + hex.EncodeToString(sum[:]),
	}
	if c.IsCA {
		return info, nil
	}
	m, err := security.ParseMember(c)
	if err != nil {
		return nil, err
	}
	info.Kind = "member"
	info.Address = m.Address.String()
	info.IPs = nonNil(prefixStrings(m.FixedIPs()))
	info.Pools = nonNil(prefixStrings(m.Pools()))
	info.Groups = nonNil(m.Groups)
	info.Subnets = nonNil(prefixStrings(m.Subnets))
	return info, nil
}

func printCert(w io.Writer, c *certJSON, now time.Time) error {
	row := func(k, v string) { fmt.Fprintf(w, "%-12s %s\n", k+":", v) }
	if c.Kind == "ca" {
		row("CA", c.Name)
	} else {
		row("name", c.Name)
		row("address", c.Address)
		ips := slices.Clone(c.IPs)
		for _, p := range c.Pools {
			ips = append(ips, "pool "+p)
		}
		row("ips", joinOrDash(ips))
		row("groups", joinOrDash(c.Groups))
		row("subnets", joinOrDash(c.Subnets))
	}
	row("not before", fmtTime(c.NotBefore))
	after := fmtTime(c.NotAfter)
	switch {
	case now.After(c.NotAfter):
		after += "  (expired)"
	case now.Before(c.NotBefore):
		after += "  (not valid yet)"
	default:
		after += fmt.Sprintf("  (in %s)", roundDuration(c.NotAfter.Sub(now)))
	}
	row("not after", after)
	row("issuer", c.Issuer)
	row("key type", c.KeyType)
	row("serial", c.Serial)
	row("fingerprint", c.Fingerprint)
	return nil
}

func newCertVerifyCommand(a *app) *cobra.Command {
	var bundles, crls []string
	cmd := &cobra.Command{
		Use:   "verify [--ca ca.crt] [--crl FILE]... FILE",
		Short: "Check a member certificate against the group's trust bundle",
		Long: `Check a member certificate against the trust bundle (one or more CA
certificates) as a node would during a handshake: the signature of a
trusted CA, validity now, the member extension, that the overlay address
is the hash of the certificate's key, and, with --crl, that no revocation
list revokes it. Exits non-zero, naming the reason, if the certificate
would be refused.`,
		Args: oneFile,
		RunE: func(_ *cobra.Command, args []string) error {
			path := args[0]
			var cas []*x509.Certificate
			for _, b := range bundles {
				certs, err := security.ReadCertificates(b)
				if err != nil {
					return err
				}
				cas = append(cas, certs...)
			}
			bundle, err := security.NewTrustBundle(cas...)
			if err != nil {
				return fmt.Errorf("%s: %w", strings.Join(bundles, ", "), err)
			}
			c, err := security.ReadCertificate(path)
			if err != nil {
				return err
			}
			revs := security.NewRevocations(bundle)
			for _, f := range crls {
				data, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--crl: %w", err)
				}
				ders, err := security.DecodeRevocationListsPEM(data)
				if err != nil {
					return fmt.Errorf("--crl %s: %w", f, err)
				}
				for _, der := range ders {
					// Of two lists of one CA the newer counts, as on a node.
					if _, err := revs.Add(der); err != nil && !errors.Is(err, security.ErrStaleRevocationList) {
						return fmt.Errorf("--crl %s: %w", f, err)
					}
				}
			}
			m, err := bundle.VerifyMember([][]byte{c.Raw}, time.Now())
			if err == nil {
				err = revs.Check(c)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			fmt.Fprintf(a.stdout, "%s: valid: %q, overlay address %s, issued by %q, expires %s\n",
				path, m.Name, m.Address, m.CAName, fmtTime(m.NotAfter))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&bundles, "ca", []string{"ca.crt"}, "trust bundle: a file of one or more CA certificates (repeatable)")
	cmd.Flags().StringArrayVar(&crls, "crl", nil, "a revocation list file from \"ringvpn ca revoke\" (repeatable)")
	return cmd
}

// oneFile accepts exactly one argument, a certificate file.
func oneFile(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageErrorf("want one certificate file, got %d arguments", len(args))
	}
	return nil
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// ipStrings renders a member's IPs, pools as "pool 10.20.0.0/16".
func ipStrings(ps []netip.Prefix) []string {
	out := prefixStrings(ps)
	for i, p := range ps {
		if security.IsPool(p) {
			out[i] = "pool " + out[i]
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func joinOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

// roundDuration renders d in days once it is more than two days.
func roundDuration(d time.Duration) string {
	if d > 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return d.Round(time.Minute).String()
}
