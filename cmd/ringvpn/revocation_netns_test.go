package main

import (
	"context"
	"fmt"
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

// revocationCut reports whether m holds list number n of the group CA
// and has no link to the member named gone.
func revocationCut(st node.Status, n, gone string) (bool, string) {
	ls := st.Revocations.Lists
	if len(ls) != 1 || ls[0].Number != n {
		return false, fmt.Sprintf("%s holds %+v, want list number %s", st.Name, ls, n)
	}
	for _, l := range st.Links {
		if l.Peer == gone {
			return false, fmt.Sprintf("%s still has a link to %s", st.Name, gone)
		}
	}
	return true, ""
}

// waitCut polls the status of every member of ms (100ms apart) until
// each holds list n and has no link to gone, and returns how long that
// took from start; within bounds the wait.
func waitCut(t *testing.T, ms []*vpnMember, n, gone string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within+5*time.Second)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last time.Duration
	)
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			why := "no status"
			for ctx.Err() == nil {
				if st, err := m.status(ctx); err == nil {
					var ok bool
					if ok, why = revocationCut(st, n, gone); ok {
						mu.Lock()
						last = max(last, time.Since(start))
						mu.Unlock()
						return
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Errorf("%s: %s", m.name, why)
		}()
	}
	wg.Wait()
	return last
}

// mustRun runs the ringvpn binary and returns its output.
func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ringvpn %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pingsFail checks that from cannot ping any of to.
func pingsFail(t *testing.T, from *vpnMember, to []*vpnMember) {
	t.Helper()
	var wg sync.WaitGroup
	for _, m := range to {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if took, err := pingUntil(from.host, m.vip, 3*time.Second); err == nil {
				t.Errorf("%s pinged %s (after %v)", from.name, m.name, took.Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
}

// TestRevocation_Namespaces_SixMembers: six members in namespaces ping
// each other. m6 is revoked with `ringvpn ca revoke` and the list handed
// to m1 alone (`ringvpn crl publish`): within 10s every other member
// holds it and has no link to m6, and m6's pings fail. Restarted without
// the list, m6 can't get back in: every handshake is refused. Then m5 is
// revoked through the identity.crl file of m2, which reloads it every
// second: the others drop m5 within 10s too.
func TestRevocation_Namespaces_SixMembers(t *testing.T) {
	l := newVPNLab(t, 6)
	dir := l.dir
	caKey := filepath.Join(dir, "ca.key")
	if err := security.WritePrivateKey(caKey, l.ca.Key, false); err != nil {
		t.Fatal(err)
	}
	// The operator's list starts empty (number 1); m2 applies a copy of it
	// from identity.crl.
	groupCRL, m2CRL := filepath.Join(dir, "group.crl"), filepath.Join(dir, "m2.crl")
	now := time.Now()
	first, err := l.ca.Revoke(nil, nil, now, now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{groupCRL, m2CRL} {
		if err := security.WriteRevocationList(p, first); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 6 {
		m := l.add(i, l.ca, l.caPath, "")
		if i == 1 {
			b, err := os.ReadFile(m.conf)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.Replace(string(b), "identity: {", fmt.Sprintf("identity: {crl: [%s], crl_reload: 1s, ", m2CRL), 1))
			if err := os.WriteFile(m.conf, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		m.start(t, l.bin)
	}
	ms := l.members
	m1, m2, m5, m6 := ms[0], ms[1], ms[4], ms[5]
	allPairs(t, ms, 30*time.Second)
	if t.Failed() {
		return
	}
	// m2 spread its list 1 when it joined the ring.
	waitCut(t, ms, "1", "", time.Now(), 20*time.Second)
	if t.Failed() {
		return
	}

	// Revoke m6 and publish the list through m1 only.
	out := mustRun(t, l.bin, "ca", "revoke", "--ca-cert", l.caPath, "--ca-key", caKey, "--crl", groupCRL,
		"--cert", filepath.Join(dir, "m6.crt"), "--reason", "key-compromise")
	t.Logf("ringvpn ca revoke:\n%s", out)
	start := time.Now()
	out = mustRun(t, l.bin, "crl", "publish", "--socket", m1.socket, groupCRL)
	t.Logf("ringvpn crl publish (through m1):\n%s", out)
	took := waitCut(t, ms[:5], "2", m6.name, start, 10*time.Second)
	if t.Failed() {
		return
	}
	t.Logf("m6 revoked: every other member holds the list and has no link to m6 %v after `crl publish`", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the revocation took %v, more than 10s", took)
	}
	pingsFail(t, m6, ms[:5])
	st, err := m6.status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Links) != 0 {
		t.Errorf("m6 still has links: %+v", st.Links)
	}

	// m6 restarts without the list: the others refuse it.
	logFrom := len(m1.proc.Log())
	if err := m6.proc.Stop(); err != nil {
		t.Logf("m6 stopped: %v", err)
	}
	m6.start(t, l.bin)
	time.Sleep(8 * time.Second)
	pingsFail(t, m6, ms[:5])
	if st, err = m6.status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(st.Links) != 0 {
		t.Errorf("the restarted m6 got links: %+v", st.Links)
	}
	if log := m1.proc.Log()[logFrom:]; !strings.Contains(log, "peer refused") || !strings.Contains(log, "was revoked by CA") {
		t.Errorf("m1's log does not say it refuses the restarted m6:\n%s", tail(log, 3000))
	}

	// Revoke m5 through m2's identity.crl file, replaced atomically.
	mustRun(t, l.bin, "ca", "revoke", "--ca-cert", l.caPath, "--ca-key", caKey, "--crl", groupCRL, "--cert", filepath.Join(dir, "m5.crt"))
	data, err := os.ReadFile(groupCRL)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := os.WriteFile(m2CRL+".new", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m2CRL+".new", m2CRL); err != nil {
		t.Fatal(err)
	}
	took = waitCut(t, ms[:4], "3", m5.name, start, 10*time.Second)
	if t.Failed() {
		return
	}
	t.Logf("m5 revoked through m2's identity.crl (reloaded every 1s): every member but m5 and m6 holds the list and has no link to m5 %v after the file changed", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the revocation took %v, more than 10s", took)
	}
	pingsFail(t, m5, ms[:4])
	out = mustRun(t, l.bin, "status", "--socket", m2.socket)
	if !strings.Contains(out, "revocation lists: 1 held") || !strings.Contains(out, "number 3, 2 revoked") {
		t.Errorf("m2's status does not show list 3:\n%s", out)
	}
	t.Logf("ringvpn status of m2:\n%s", out)
}
