package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
	"github.com/ringvpn/ringvpn/security"
)

// syncBuffer is a bytes.Buffer a process may write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildBinary builds ringvpn once per test into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs processes; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "ringvpn")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// writeMember writes a CA-signed member's files into dir.
func writeMember(t *testing.T, dir, name string, ca *security.CA, from, to time.Time) (certPath, keyPath string) {
	t.Helper()
	key, err := security.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(key.Public(), security.MemberSpec{Name: name, IPs: []netip.Prefix{netip.MustParsePrefix("10.66.0.1/24")}}, from, to)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := security.WriteCertificate(certPath, cert, false); err != nil {
		t.Fatal(err)
	}
	if err := security.WritePrivateKey(keyPath, key, false); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestProcesses_FiftySessionsAndRefusals runs two ringvpn processes on
// loopback, one socket each: 50 sessions between them all authenticate;
// members from another CA or with an expired certificate are refused and
// the serving node's log says why; garbage on its socket is counted.
func TestProcesses_FiftySessionsAndRefusals(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	now := time.Now()
	ca, err := security.NewCA("group-ca", now.Add(-48*time.Hour), now.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := security.NewCA("rogue-ca", now.Add(-time.Hour), now.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.crt")
	security.WriteCertificate(caPath, ca.Cert, false)
	bothPath := filepath.Join(dir, "both.crt")
	pemOf := func(p string) []byte { b, _ := os.ReadFile(p); return b }
	security.WriteCertificate(filepath.Join(dir, "rogue.crt"), rogue.Cert, false)
	os.WriteFile(bothPath, append(pemOf(caPath), pemOf(filepath.Join(dir, "rogue.crt"))...), 0o644)

	config := func(name, certPath, keyPath, bundle, listen string) string {
		p := filepath.Join(dir, name+".yaml")
		yaml := fmt.Sprintf("identity: {cert: %s, key: %s, ca: %s}\nlisten: %q\ncontrol: {socket: %s}\nsecurity: {handshake_timeout: 4s}\nvpn: {enabled: false}\n",
			certPath, keyPath, bundle, listen, filepath.Join(dir, name+".sock"))
		if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	port := freeUDPPort(t)
	target := fmt.Sprintf("127.0.0.1:%d", port)
	serverCert, serverKey := writeMember(t, dir, "server", ca, now.Add(-time.Hour), now.Add(time.Hour))
	serverConf := config("server", serverCert, serverKey, caPath, target)

	var serverLog syncBuffer
	server := exec.Command(bin, "up", "--config", serverConf)
	server.Stdout, server.Stderr = &serverLog, &serverLog
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", serverLog.String())
		}
	})
	socket := filepath.Join(dir, "server.sock")
	status := func() node.Status {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := node.QueryStatus(ctx, socket)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := node.QueryStatus(ctx, socket)
		cancel()
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("server never answered status: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	probe := func(name, certPath, keyPath, bundle string, sessions int) (node.ProbeReport, string, error) {
		conf := config(name, certPath, keyPath, bundle, "127.0.0.1:0")
		cmd := exec.Command(bin, "probe", "--json", "--config", conf, "--sessions", fmt.Sprint(sessions), "--count", "2", target)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var r node.ProbeReport
		json.Unmarshal(out, &r) // empty when the probe could not start
		return r, stderr.String(), err
	}

	// 50 sessions from a second process, one socket, all authenticated.
	clientCert, clientKey := writeMember(t, dir, "client", ca, now.Add(-time.Hour), now.Add(time.Hour))
	r, stderr, err := probe("client", clientCert, clientKey, caPath, 50)
	if err != nil || r.Established != 50 || r.Peer != "server" {
		t.Fatalf("probe: %v; report %+v\n%s", err, r, stderr)
	}
	if r.PongsBack == 0 {
		t.Fatal("no pong came back through any session")
	}
	if s := status(); s.Handshakes.Completed < 50 {
		t.Fatalf("server completed %d handshakes", s.Handshakes.Completed)
	}

	// A member of another CA is refused, and the server's log says why.
	// (Peers refusing expired or address-forging certificates are tested
	// in package security; a process won't even start with its own expired
	// certificate, which is checked here.)
	rogueCert, rogueKey := writeMember(t, dir, "mallory", rogue, now.Add(-time.Minute), now.Add(time.Hour))
	if r, _, err := probe("mallory", rogueCert, rogueKey, bothPath, 1); err == nil || r.Established != 0 {
		t.Fatalf("mallory was not refused: %+v", r)
	}
	want := `certificate of "mallory" is signed by "rogue-ca", which is not in the trust bundle`
	if !strings.Contains(strings.ReplaceAll(serverLog.String(), `\"`, `"`), want) {
		t.Fatalf("server log lacks %q", want)
	}
	oldCert, oldKey := writeMember(t, dir, "old", ca, now.Add(-24*time.Hour), now.Add(-time.Hour))
	if _, stderr, err := probe("old", oldCert, oldKey, caPath, 1); err == nil || !strings.Contains(stderr, `certificate of "old" expired`) {
		t.Fatalf("expired member started: %v\n%s", err, stderr)
	}

	// Garbage and truncated datagrams are dropped and counted.
	before := status().Transport
	c, err := net.Dial("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range [][]byte{[]byte("garbage"), {0xE1, 1, 2}, {23, 0xfe}, {22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1}} {
		c.Write(d)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		after := status().Transport
		if after.Dropped()-before.Dropped() >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drops before %+v after %+v", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if server.ProcessState != nil {
		t.Fatal("server exited")
	}
}
