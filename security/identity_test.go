package security

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"go.uber.org/goleak"
)

func TestGenerateKey(t *testing.T) {
	for _, kind := range []string{"", KeyKindECDSAP256, KeyKindEd25519} {
		key, err := GenerateKey(kind)
		if err != nil {
			t.Fatalf("GenerateKey(%q): %v", kind, err)
		}
		got, err := KeyKindOf(key.Public())
		want := kind
		if want == "" {
			want = KeyKindECDSAP256
		}
		if err != nil || got != want {
			t.Errorf("KeyKindOf(GenerateKey(%q)) = %q, %v; want %q", kind, got, err, want)
		}
	}
}

// writeIdentity writes key and cert to files in dir and returns their
// paths.
func writeIdentity(t *testing.T, dir string, key crypto.Signer, cert *x509.Certificate) (certPath, keyPath string) {
	t.Helper()
	certPath, keyPath = filepath.Join(dir, cert.Subject.CommonName+".crt"), filepath.Join(dir, cert.Subject.CommonName+".key")
	if err := WriteCertificate(certPath, cert, true); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(keyPath, key, true); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "group-ca", "")
	bundle := mustBundle(t, ca)
	key, cert := issueTestMember(t, ca, aliceSpec(), KeyKindEd25519)
	certPath, keyPath := writeIdentity(t, dir, key, cert)

	id, err := LoadIdentity(certPath, keyPath, bundle, now)
	if err != nil {
		t.Fatal(err)
	}
	if id.Member.Name != "alice" || !id.Cert.Equal(cert) {
		t.Errorf("identity of %q, want alice", id.Member.Name)
	}
	tc := id.TLSCertificate()
	if len(tc.Certificate) != 1 || string(tc.Certificate[0]) != string(cert.Raw) || tc.PrivateKey.(crypto.Signer) == nil || tc.Leaf != id.Cert {
		t.Errorf("TLSCertificate = %+v", tc)
	}

	t.Run("key of another member", func(t *testing.T) {
		bobKey, _ := GenerateKey("")
		otherKey := filepath.Join(dir, "bob.key")
		if err := WritePrivateKey(otherKey, bobKey, false); err != nil {
			t.Fatal(err)
		}
		_, err := LoadIdentity(certPath, otherKey, bundle, now)
		if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), `private key `+otherKey+` does not belong to certificate of "alice"`) {
			t.Fatalf("LoadIdentity = %v, want ErrKeyMismatch naming the files", err)
		}
	})
	t.Run("other CA", func(t *testing.T) {
		_, err := LoadIdentity(certPath, keyPath, mustBundle(t, newTestCA(t, "other-ca", "")), now)
		if !errors.Is(err, ErrUnknownCA) || !strings.HasPrefix(err.Error(), certPath+": ") {
			t.Fatalf("LoadIdentity = %v, want ErrUnknownCA prefixed with the file name", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		_, err := LoadIdentity(certPath, keyPath, bundle, t0.Add(memberLife+time.Hour))
		if !errors.Is(err, ErrExpired) {
			t.Fatalf("LoadIdentity = %v, want ErrExpired", err)
		}
	})
	t.Run("no bundle", func(t *testing.T) {
		if _, err := LoadIdentity(certPath, keyPath, nil, now); err == nil {
			t.Fatal("LoadIdentity without a bundle succeeded")
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadIdentity(filepath.Join(dir, "nope.crt"), keyPath, bundle, now); err == nil || !strings.Contains(err.Error(), "nope.crt") {
			t.Fatalf("LoadIdentity = %v, want an error naming the file", err)
		}
	})
}

// TestIdentity_PionHandshake checks that pion/dtls accepts what this package
// makes: both key kinds, for CAs and members, presented through
// TLSCertificate and checked through VerifyMember; and that a member of a
// CA outside the bundle is refused by VerifyMember's error.
func TestIdentity_PionHandshake(t *testing.T) {
	defer goleak.VerifyNone(t)
	kinds := []string{KeyKindECDSAP256, KeyKindEd25519}
	for _, caKind := range kinds {
		for _, memberKind := range kinds {
			t.Run("ca="+caKind+"/member="+memberKind, func(t *testing.T) {
				ca := newTestCA2(t, "group-ca", caKind)
				bundle := mustBundle(t, ca)
				a := newTestIdentity(t, ca, "alice", memberKind, bundle)
				b := newTestIdentity(t, ca, "bob", memberKind, bundle)
				peerOfA, peerOfB, errA, errB := handshake(t, a, b, bundle, bundle)
				if errA != nil || errB != nil {
					t.Fatalf("handshake: alice: %v; bob: %v", errA, errB)
				}
				if peerOfA.Name != "bob" || peerOfB.Name != "alice" || peerOfA.Address != b.Member.Address {
					t.Errorf("alice sees %q %s, bob sees %q", peerOfA.Name, peerOfA.Address, peerOfB.Name)
				}
			})
		}
	}
	t.Run("unknown CA is refused", func(t *testing.T) {
		ca, other := newTestCA2(t, "group-ca", ""), newTestCA2(t, "other-ca", "")
		bundle := mustBundle(t, ca)
		a := newTestIdentity(t, ca, "alice", "", bundle)
		m := newTestIdentity(t, other, "mallory", "", mustBundle(t, other))
		_, _, errA, _ := handshake(t, a, m, bundle, mustBundle(t, other))
		if errA == nil || !strings.Contains(errA.Error(), `certificate of "mallory" is signed by "other-ca", which is not in the trust bundle`) {
			t.Fatalf("alice's handshake error = %v, want the unknown-CA error", errA)
		}
	})
}

// newTestCA2 is newTestCA valid around the real clock, since pion checks
// nothing about time but VerifyMember is called with time.Now.
func newTestCA2(t *testing.T, name, kind string) *CA {
	t.Helper()
	ca, err := NewCA(name, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), kind)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newTestIdentity(t *testing.T, ca *CA, name, kind string, bundle *TrustBundle) *Identity {
	t.Helper()
	key, err := GenerateKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(key.Public(), MemberSpec{Name: name}, ca.Cert.NotBefore, ca.Cert.NotAfter)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(key, cert, bundle, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// handshake runs a DTLS handshake between a (client) and b (server) over
// loopback UDP, each verifying the other with its bundle, and returns what
// each side verified and each side's error.
func handshake(t *testing.T, a, b *Identity, bundleA, bundleB *TrustBundle) (peerOfA, peerOfB *Member, errA, errB error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pcA, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pcB, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	verify := func(bundle *TrustBundle, out **Member) func([][]byte, [][]*x509.Certificate) error {
		return func(raw [][]byte, _ [][]*x509.Certificate) error {
			m, err := bundle.VerifyMember(raw, time.Now())
			*out = m
			return err
		}
	}
	common := func(id *Identity, bundle *TrustBundle, out **Member) []dtls.Option {
		return []dtls.Option{
			dtls.WithCertificates(id.TLSCertificate()),
			dtls.WithInsecureSkipVerify(true), // VerifyMember does the checking
			dtls.WithVerifyPeerCertificate(verify(bundle, out)),
			dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		}
	}
	var clientOpts []dtls.ClientOption
	for _, o := range common(a, bundleA, &peerOfA) {
		clientOpts = append(clientOpts, o)
	}
	serverOpts := []dtls.ServerOption{dtls.WithClientAuth(dtls.RequireAnyClientCert)}
	for _, o := range common(b, bundleB, &peerOfB) {
		serverOpts = append(serverOpts, o)
	}
	client, err := dtls.ClientWithOptions(pcA, pcB.LocalAddr(), clientOpts...)
	if err != nil {
		t.Fatal(err)
	}
	server, err := dtls.ServerWithOptions(pcB, pcA.LocalAddr(), serverOpts...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- server.HandshakeContext(ctx) }()
	errA = client.HandshakeContext(ctx)
	if errA != nil {
		cancel() // the server would wait for the client's next flight
	}
	errB = <-done
	client.Close()
	server.Close()
	pcA.Close()
	pcB.Close()
	return peerOfA, peerOfB, errA, errB
}
