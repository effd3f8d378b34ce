package main

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
)

func newCACommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the group certificate authority and its revocation list",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newCAInitCommand(a), newCARevokeCommand(a), newCACRLCommand(a))
	return cmd
}

func newCAInitCommand(a *app) *cobra.Command {
	var (
		name, certPath, keyPath string
		keyType                 = security.KeyKindECDSAP256
		force                   bool
		valid                   validityFlags
	)
	cmd := &cobra.Command{
		Use:   "init --name NAME [--cert ca.crt] [--key ca.key]",
		Short: "Create a group CA: a new key and its self-signed certificate",
		Long: `Create a group CA: a new key pair and a self-signed CA certificate.

The certificate is the group's trust bundle: every member needs it. The
private key issues member certificates: keep it secret, ideally offline.
To rotate the CA, create a new one and give members a bundle holding both
certificates (concatenated) until every member has a new certificate.`,
		Example: `  ringvpn ca init --name acme-vpn-ca
  ringvpn ca init --name acme-vpn-ca-2027 --cert ca-2027.crt --key ca-2027.key --not-after 2028-01-01`,
		Args: withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name"); err != nil {
				return err
			}
			if certPath == keyPath {
				return usageErrorf("--cert and --key are the same file %s", certPath)
			}
			now := time.Now()
			notAfter, err := valid.end(cmd, now)
			if err != nil {
				return err
			}
			if err := checkFree(force, certPath, keyPath); err != nil {
				return err
			}
			ca, err := security.NewCA(name, now.Add(-clockSkew), notAfter, keyType)
			if err != nil {
				return err
			}
			if err := writeKeyAndCert(keyPath, certPath, ca.Key, ca.Cert, force); err != nil {
				return err
			}
			a.log.Debug("created CA", zap.String("name", name), zap.String("cert", certPath), zap.String("key", keyPath))
			fmt.Fprintf(a.stdout, "created CA %q (%s), valid until %s\n", name, keyType, fmtTime(ca.Cert.NotAfter))
			fmt.Fprintf(a.stdout, "  certificate  %s  (the trust bundle: give it to every member)\n", certPath)
			fmt.Fprintf(a.stdout, "  private key  %s  (keep it secret: it issues members)\n", keyPath)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&name, "name", "", "the CA's name (its certificate's CN), e.g. acme-vpn-ca (required)")
	fs.StringVar(&certPath, "cert", "ca.crt", "where to write the CA certificate")
	fs.StringVar(&keyPath, "key", "ca.key", "where to write the CA private key (mode 0600)")
	fs.Var(newEnum(&keyType, security.KeyKindECDSAP256, security.KeyKindEd25519), "key-type", "key type: ecdsa-p256 or ed25519")
	fs.BoolVar(&force, "force", false, "overwrite existing files")
	valid.register(fs, 365*24*time.Hour)
	return cmd
}

// writeKeyAndCert writes a private key and then its certificate. If the
// certificate can't be written, the new key file is removed again, so no
// key is left without its certificate.
func writeKeyAndCert(keyPath, certPath string, key crypto.Signer, cert *x509.Certificate, force bool) error {
	if err := security.WritePrivateKey(keyPath, key, force); err != nil {
		return err
	}
	if err := security.WriteCertificate(certPath, cert, force); err != nil {
		os.Remove(keyPath)
		return fmt.Errorf("%w (removed the new key %s again)", err, keyPath)
	}
	return nil
}
