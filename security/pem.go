package security

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PEM block types.
const (
	pemPrivateKey  = "PRIVATE KEY" // PKCS#8
	pemECKey       = "EC PRIVATE KEY"
	pemCertificate = "CERTIFICATE"
)

// WritePrivateKey writes key to path as a PKCS#8 PEM file with mode 0600.
// Unless force is set, it refuses to replace an existing file (the error
// wraps fs.ErrExist).
func WritePrivateKey(path string, key crypto.Signer, force bool) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("write private key %s: %w", path, err)
	}
	return writePEM(path, &pem.Block{Type: pemPrivateKey, Bytes: der}, 0o600, force)
}

// WriteCertificate writes cert to path as a PEM file with mode 0644. Unless
// force is set, it refuses to replace an existing file (the error wraps
// fs.ErrExist).
func WriteCertificate(path string, cert *x509.Certificate, force bool) error {
	return writePEM(path, &pem.Block{Type: pemCertificate, Bytes: cert.Raw}, 0o644, force)
}

// ReadPrivateKey reads a PEM private key: PKCS#8 ("PRIVATE KEY") or SEC 1
// ("EC PRIVATE KEY").
func ReadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("read private key %s: no PEM block found", path)
	}
	var key any
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("read private key %s: encrypted keys are not supported", path)
	case pemCertificate:
		return nil, fmt.Errorf("read private key %s: found a certificate, not a private key (are the certificate and key paths swapped?)", path)
	default:
		return nil, fmt.Errorf("read private key %s: found a %q PEM block, want %q", path, block.Type, pemPrivateKey)
	}
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read private key %s: %T keys can't sign", path, key)
	}
	return signer, nil
}

// ReadCertificate reads a PEM file that holds exactly one certificate.
func ReadCertificate(path string) (*x509.Certificate, error) {
	certs, err := ReadCertificates(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("read certificate %s: holds %d certificates, want one", path, len(certs))
	}
	return certs[0], nil
}

// ReadCertificates reads a PEM file of one or more certificates, such as a
// trust bundle.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	certs, err := parseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("read certificates %s: %w", path, err)
	}
	return certs, nil
}

// parseCertificatesPEM parses all PEM blocks of data, which must all be
// certificates. Text between blocks is ignored.
func parseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			if block.Type == pemPrivateKey || block.Type == pemECKey {
				return nil, fmt.Errorf("PEM block %d is a private key, not a certificate (are the certificate and key paths swapped?)", n)
			}
			return nil, fmt.Errorf("PEM block %d is a %q, want %q", n, block.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// writePEM writes block to path with the given mode. Without force it
// creates the file exclusively; with force it replaces the file atomically
// (a temporary file in the same directory, renamed over path), so the new
// file has mode perm even if the old one did not.
func writePEM(path string, block *pem.Block, perm fs.FileMode, force bool) error {
	data := pem.EncodeToMemory(block)
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			return &detailError{msg: fmt.Sprintf("%s exists; use --force to overwrite", path), errs: []error{fs.ErrExist}}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := writeAndClose(f, data); err != nil {
			os.Remove(path)
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		err = writeAndClose(f, data)
	} else {
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeAndClose(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
