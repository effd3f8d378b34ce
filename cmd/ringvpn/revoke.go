package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
)

func newCARevokeCommand(a *app) *cobra.Command {
	var (
		caCert, caKey, crlPath string
		certs, serials         []string
		reason                 = "unspecified"
		nextUpdate             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "revoke --crl FILE (--cert FILE | --serial HEX)... [flags]",
		Short: "Revoke member certificates: create or extend the CA's revocation list",
		Long: `Revoke member certificates: add them to the CA's revocation list (a
standard X.509 CRL) and sign it again with the CA key.

If the --crl file exists, its entries are kept and the new list gets the
next number; otherwise a list numbered 1 is created. Members take a list
only if its number is higher than the one they hold (so an old list can't
undo a revocation): always extend the newest list, and keep the file.
Without --cert or --serial an existing list is only signed again, with a
new number and next update.

Members apply the list from a file named in identity.crl (reloaded when it
changes), or from another member: "ringvpn crl publish FILE" hands it to a
running member, which spreads it to the whole group. They refuse revoked
members and close the links they have to them. A list stays in force after its next update, but members warn about
it daily: sign it again before then.`,
		Example: `  ringvpn ca revoke --crl group.crl --cert mallory.crt --reason key-compromise
  ringvpn ca revoke --crl group.crl --serial 5f3c0a9e81d2b4c6a7e8f90112233445
  ringvpn ca revoke --crl group.crl --next-update 2160h   # sign again, revoke nothing new`,
		Args: withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "crl"); err != nil {
				return err
			}
			if nextUpdate <= 0 {
				return usageErrorf("--next-update %s: must be positive", nextUpdate)
			}
			code, err := security.ParseReason(reason)
			if err != nil {
				return usageErrorf("--reason: %w", err)
			}
			var targets []revokeTarget
			for _, s := range serials {
				n, err := parseSerialFlag(s)
				if err != nil {
					return err
				}
				targets = append(targets, revokeTarget{serial: n, label: "serial " + n.Text(16)})
			}
			prev, err := readOwnList(crlPath)
			if err != nil {
				return err
			}
			if prev == nil && len(certs) == 0 && len(targets) == 0 {
				return usageErrorf("name a certificate to revoke with --cert FILE or --serial HEX (%s does not exist yet)", crlPath)
			}
			ca, err := security.LoadCA(caCert, caKey)
			if err != nil {
				return err
			}
			for _, path := range certs {
				t, err := certTarget(path, ca.Cert)
				if err != nil {
					return err
				}
				targets = append(targets, t)
			}

			now := time.Now().UTC().Truncate(time.Second)
			listed := map[string]x509.RevocationListEntry{}
			if prev != nil {
				for _, e := range prev.RevokedCertificateEntries {
					listed[string(e.SerialNumber.Bytes())] = e
				}
			}
			var (
				add   []x509.RevocationListEntry
				notes []string
			)
			for _, t := range targets {
				if e, ok := listed[string(t.serial.Bytes())]; ok {
					notes = append(notes, fmt.Sprintf("%s was already revoked at %s (%s)", t.label, fmtTime(e.RevocationTime), security.ReasonName(e.ReasonCode)))
					continue
				}
				listed[string(t.serial.Bytes())] = x509.RevocationListEntry{SerialNumber: t.serial, RevocationTime: now, ReasonCode: code}
				add = append(add, listed[string(t.serial.Bytes())])
				notes = append(notes, fmt.Sprintf("revoked %s (%s)", t.label, reason))
			}
			crl, err := ca.Revoke(prev, add, now, now.Add(nextUpdate))
			if err != nil {
				return fmt.Errorf("--crl %s: %w", crlPath, err)
			}
			if err := security.WriteRevocationList(crlPath, crl); err != nil {
				return err
			}
			w := a.stdout
			for _, n := range notes {
				fmt.Fprintln(w, n)
			}
			a.log.Debug("signed revocation list", zap.String("crl", crlPath), zap.String("number", crl.Number.String()),
				zap.Int("revoked", len(crl.RevokedCertificateEntries)))
			fmt.Fprintf(w, "revocation list %s: number %s of CA %q, %d revoked, next update %s\n",
				crlPath, crl.Number, ca.Cert.Subject.CommonName, len(crl.RevokedCertificateEntries), fmtTime(crl.NextUpdate))
			if prev == nil {
				fmt.Fprintf(w, "  a new list: if members already hold a list of this CA, extend that one instead (they ignore lower numbers)\n")
			}
			fmt.Fprintf(w, "  spread it to the group: `ringvpn crl publish %s` on any running member (or put it in a member's identity.crl); sign it again before %s\n",
				crlPath, fmtTime(crl.NextUpdate))
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&caCert, "ca-cert", "ca.crt", "the CA certificate")
	fs.StringVar(&caKey, "ca-key", "ca.key", "the CA private key")
	fs.StringVar(&crlPath, "crl", "", "the revocation list to extend, or create (required)")
	fs.StringArrayVar(&certs, "cert", nil, "a member certificate to revoke (repeatable)")
	fs.StringArrayVar(&serials, "serial", nil, "the serial number of a certificate to revoke, in hex as \"ringvpn cert show\" prints it (repeatable)")
	fs.Var(newEnum(&reason, security.RevocationReasons...), "reason", "why: "+strings.Join(security.RevocationReasons, ", "))
	fs.DurationVar(&nextUpdate, "next-update", 720*time.Hour, "when the list must be signed again, from now")
	return cmd
}

// revokeTarget is a certificate to revoke.
type revokeTarget struct {
	serial *big.Int
	label  string // for output: `"alice" (serial ...)` or `serial ...`
}

// certTarget reads a member certificate that ca issued.
func certTarget(path string, ca *x509.Certificate) (revokeTarget, error) {
	c, err := security.ReadCertificate(path)
	if err != nil {
		return revokeTarget{}, fmt.Errorf("--cert: %w", err)
	}
	if c.IsCA {
		return revokeTarget{}, fmt.Errorf("--cert %s: %q is a CA certificate, not a member's", path, c.Subject.CommonName)
	}
	if err := c.CheckSignatureFrom(ca); err != nil {
		return revokeTarget{}, fmt.Errorf("--cert %s: the certificate of %q was not issued by CA %q (issuer %q); use that CA's --ca-cert, --ca-key and list",
			path, c.Subject.CommonName, ca.Subject.CommonName, c.Issuer.CommonName)
	}
	return revokeTarget{serial: c.SerialNumber, label: fmt.Sprintf("%q (serial %s)", c.Subject.CommonName, c.SerialNumber.Text(16))}, nil
}

// parseSerialFlag parses the value of --serial: hex, as `cert show`
// prints it, optionally with a 0x prefix or colons between bytes.
func parseSerialFlag(s string) (*big.Int, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(s), "0x"), ":", "")
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return nil, usageErrorf("--serial %q: want a certificate's serial number in hex, as `ringvpn cert show` prints it", s)
	}
	return n, nil
}

// readOwnList reads the list that `ca revoke` extends: nil if path does
// not exist.
func readOwnList(path string) (*x509.RevocationList, error) {
	crls, err := security.ReadRevocationLists(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--crl: %w", err)
	}
	if len(crls) != 1 {
		return nil, fmt.Errorf("--crl %s holds %d revocation lists; `ca revoke` extends a file of one CA's list", path, len(crls))
	}
	return crls[0], nil
}

func newCACRLCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crl",
		Short: "Inspect revocation lists",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newCACRLShowCommand(a))
	return cmd
}

// crlJSON is the --json form of one list of `ca crl show`.
type crlJSON struct {
	Issuer     string         `json:"issuer"`
	Number     string         `json:"number"`
	ThisUpdate time.Time      `json:"this_update"`
	NextUpdate time.Time      `json:"next_update"`
	Revoked    []crlEntryJSON `json:"revoked"`
}

type crlEntryJSON struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason"`
}

func newCACRLShowCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [--json] FILE",
		Short: "Print the entries of a revocation list",
		Long: `Print what a revocation list says: its CA, number, dates, and the serial
numbers it revokes with when and why. It checks nothing about who signed
it; "ringvpn cert verify --crl FILE" checks a certificate against it as a
member would.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("want one revocation list file, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			crls, err := security.ReadRevocationLists(args[0])
			if err != nil {
				return err
			}
			out := make([]crlJSON, len(crls))
			for i, crl := range crls {
				out[i] = describeCRL(crl)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			for i, c := range out {
				if i > 0 {
					fmt.Fprintln(a.stdout)
				}
				printCRL(a.stdout, c, time.Now())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (an array: a file may hold several lists)")
	return cmd
}

func describeCRL(crl *x509.RevocationList) crlJSON {
	c := crlJSON{
		Issuer:     crl.Issuer.CommonName,
		Number:     crl.Number.String(),
		ThisUpdate: crl.ThisUpdate.UTC(),
		NextUpdate: crl.NextUpdate.UTC(),
		Revoked:    []crlEntryJSON{},
	}
	for _, e := range crl.RevokedCertificateEntries {
		c.Revoked = append(c.Revoked, crlEntryJSON{Serial: e.SerialNumber.Text(16), RevokedAt: e.RevocationTime.UTC(), Reason: security.ReasonName(e.ReasonCode)})
	}
	return c
}

func printCRL(w io.Writer, c crlJSON, now time.Time) {
	row := func(k, v string) { fmt.Fprintf(w, "%-12s %s\n", k+":", v) }
	row("CA", c.Issuer)
	row("number", c.Number)
	row("this update", fmtTime(c.ThisUpdate))
	next := fmtTime(c.NextUpdate)
	switch {
	case c.NextUpdate.IsZero():
		next = "-"
	case now.After(c.NextUpdate):
		next += "  (past: still applied; sign it again with `ringvpn ca revoke`)"
	default:
		next += fmt.Sprintf("  (in %s)", roundDuration(c.NextUpdate.Sub(now)))
	}
	row("next update", next)
	row("revoked", fmt.Sprint(len(c.Revoked)))
	for _, e := range c.Revoked {
		fmt.Fprintf(w, "  %-32s  %s  %s\n", e.Serial, fmtTime(e.RevokedAt), e.Reason)
	}
}
