package node

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
)

// Reload applies what a new configuration changes of the keys a running
// member can take (SIGHUP): the certificate and key (same key: the
// overlay address is the node), the CA bundle (links to peers of a CA
// that left it close; the others stay up), the revocation list files and
// the firewall rules. Everything is read and checked before anything is
// applied, so a bad file changes nothing. Other keys need a restart;
// Reload logs the sections that differ.
func (n *Node) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	now := time.Now()
	bundle, err := loadBundle(cfg.Identity.CA)
	if err != nil {
		return err
	}
	identity, err := security.LoadIdentity(cfg.Identity.Cert, cfg.Identity.Key, bundle, now)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if identity.Member.Address != n.identity.Member.Address {
		return fmt.Errorf("identity.cert: the new certificate is for overlay address %s, this member is %s: a new key makes a new member, restart it",
			identity.Member.Address, n.identity.Member.Address)
	}
	if err := n.revs.Check(identity.Cert); err != nil {
		return fmt.Errorf("identity: %w (ask the CA for a new certificate)", err)
	}
	if n.vpn == nil && cfg.VPN.Enabled != n.cfg.VPN.Enabled {
		n.log.Warn("reload: vpn.enabled changed; restart to apply it")
	}

	// Apply.
	ep := n.linker.Endpoint()
	if err := ep.SetIdentity(identity); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	n.revs.SetTrustBundle(bundle)
	closed := ep.ReplaceTrustBundle(bundle, now)
	var errs []error
	if !slices.Equal(cfg.Identity.CRL, n.cfg.Identity.CRL) {
		// New files are read now; the periodic reload goes on watching the
		// files the member started with.
		if _, err := security.LoadRevocationFiles(n.revs, cfg.Identity.CRL, n.log); err != nil {
			errs = append(errs, fmt.Errorf("identity.crl: %w", err))
		}
		n.log.Warn("reload: identity.crl lists other files; they were read once, restart to watch them")
	} else if n.crlFiles != nil {
		n.crlFiles.Reload()
	}
	if n.vpn != nil {
		if err := n.vpn.ReloadFirewall(cfg.VPN.Firewall); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Listen != n.cfg.Listen || !slices.Equal(cfg.Overlay.Bootstrap, n.cfg.Overlay.Bootstrap) || cfg.TAP != n.cfg.TAP {
		n.log.Warn("reload: listen, overlay or tap settings changed; restart to apply them")
	}
	n.log.Info("configuration reloaded",
		zap.String("cert_expires", identity.Member.NotAfter.UTC().Format(time.RFC3339)),
		zap.Int("cas", len(bundle.CAs())), zap.Int("links_closed", closed))
	return errors.Join(errs...)
}
