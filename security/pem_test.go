package security

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWritePrivateKey_ModeAndOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alice.key")
	key1, _ := GenerateKey("")
	key2, _ := GenerateKey(KeyKindEd25519)

	if err := WritePrivateKey(path, key1, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	before, _ := os.ReadFile(path)

	err := WritePrivateKey(path, key2, false)
	if err == nil || err.Error() != path+" exists; use --force to overwrite" || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write without force = %v, want %q wrapping fs.ErrExist", err, path+" exists; use --force to overwrite")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("refused write changed the file")
	}

	// With force the key is replaced, and the mode is 0600 even if the old
	// file's was not.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(path, key2, true); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	got, err := ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(got.Public(), key2.Public()) {
		t.Fatal("forced write did not replace the key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory has %d entries, want only the key (temporary file left behind?)", len(entries))
	}
}

func assertMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// A umask can only clear bits; it must not leave any bit beyond want.
	if got := fi.Mode().Perm(); got&^want != 0 || got&0o600 != 0o600 {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func TestWriteCertificate(t *testing.T) {
	ca := newTestCA(t, "group-ca", "")
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := WriteCertificate(path, ca.Cert, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o644)
	if err := WriteCertificate(path, ca.Cert, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite without force = %v, want fs.ErrExist", err)
	}
	if err := WriteCertificate(path, ca.Cert, true); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCertificate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(ca.Cert) {
		t.Error("read back a different certificate")
	}
}

func TestReadPrivateKey(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []string{KeyKindECDSAP256, KeyKindEd25519} {
		key, _ := GenerateKey(kind)
		path := filepath.Join(dir, kind+".key")
		if err := WritePrivateKey(path, key, false); err != nil {
			t.Fatal(err)
		}
		got, err := ReadPrivateKey(path)
		if err != nil {
			t.Fatal(err)
		}
		if !publicKeysEqual(got.Public(), key.Public()) {
			t.Errorf("%s: read back a different key", kind)
		}
	}

	ecKey, _ := GenerateKey("")
	sec1, _ := x509.MarshalECPrivateKey(ecKey.(*ecdsa.PrivateKey))
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got, err := ReadPrivateKey(write("sec1.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))); err != nil || !publicKeysEqual(got.Public(), ecKey.Public()) {
		t.Errorf("SEC 1 key: %v", err)
	}

	ca := newTestCA(t, "group-ca", "")
	bad := map[string]struct {
		data []byte
		want string
	}{
		"empty":       {nil, "no PEM block found"},
		"certificate": {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), "found a certificate, not a private key (are the certificate and key paths swapped?)"},
		"encrypted":   {pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted keys are not supported"},
		"garbage":     {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "read private key"},
		"other block": {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}}), `found a "RSA PRIVATE KEY" PEM block, want "PRIVATE KEY"`},
	}
	for name, tt := range bad {
		if _, err := ReadPrivateKey(write(name, tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ReadPrivateKey = %v, want an error containing %q", name, err, tt.want)
		}
	}
	if _, err := ReadPrivateKey(filepath.Join(dir, "missing.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestReadCertificates(t *testing.T) {
	dir := t.TempDir()
	a, b := newTestCA(t, "ca-a", ""), newTestCA(t, "ca-b", "")
	var data []byte
	for _, c := range []*x509.Certificate{a.Cert, b.Cert} {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	path := filepath.Join(dir, "bundle.crt")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	certs, err := ReadCertificates(path)
	if err != nil || len(certs) != 2 {
		t.Fatalf("ReadCertificates = %d certificates, %v; want 2", len(certs), err)
	}
	if _, err := ReadCertificate(path); err == nil || !strings.Contains(err.Error(), "holds 2 certificates, want one") {
		t.Errorf("ReadCertificate(bundle) = %v", err)
	}
	keyPath := filepath.Join(dir, "a.key")
	if err := WritePrivateKey(keyPath, a.Key, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCertificate(keyPath); err == nil || !strings.Contains(err.Error(), "is a private key, not a certificate") {
		t.Errorf("ReadCertificate(key) = %v", err)
	}
}
