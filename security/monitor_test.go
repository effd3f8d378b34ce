package security

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func writeCRL(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func countLogs(logs *observer.ObservedLogs, msg string) int {
	return logs.FilterMessage(msg).Len()
}

func TestRevocationFiles_LoadAndReload(t *testing.T) {
	ca, other := newTestCA(t, "group-ca", ""), newTestCA(t, "other-ca", "")
	alice, bob := issueTestMemberCert(t, ca), issueTestMemberCert(t, ca)
	dir := t.TempDir()
	path := filepath.Join(dir, "group.crl")
	first := revoke(t, ca, nil, 0, alice)
	second := revoke(t, ca, first, 0, bob)
	if err := WriteRevocationList(path, first); err != nil {
		t.Fatal(err)
	}

	// Start-up errors name the file.
	foreign := filepath.Join(dir, "foreign.crl")
	if err := WriteRevocationList(foreign, revoke(t, other, nil, 0, alice)); err != nil {
		t.Fatal(err)
	}
	bundle := mustBundle(t, ca)
	for _, tc := range []struct{ path, want string }{
		{foreign, foreign + `: revocation list number 1 of CA "other-ca" is not signed by any CA in the trust bundle (trusted: "group-ca")`},
		{filepath.Join(dir, "missing.crl"), "missing.crl: no such file or directory"},
	} {
		if _, err := LoadRevocationFiles(NewRevocations(bundle), []string{path, tc.path}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}

	core, logs := observer.New(zapcore.InfoLevel)
	revs := NewRevocations(bundle)
	files, err := LoadRevocationFiles(revs, []string{path}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if !revs.Revoked(alice) || revs.Revoked(bob) || countLogs(logs, "revocation list loaded") != 1 {
		t.Fatalf("after load: alice %v, bob %v", revs.Revoked(alice), revs.Revoked(bob))
	}
	files.Reload() // unchanged: nothing happens
	if countLogs(logs, "revocation list loaded") != 1 {
		t.Fatal("an unchanged file was applied again")
	}
	if err := WriteRevocationList(path, second); err != nil {
		t.Fatal(err)
	}
	files.Reload()
	if !revs.Revoked(bob) || countLogs(logs, "revocation list loaded") != 2 {
		t.Fatal("a newer list in the file was not applied")
	}

	// Bad contents keep the last good list, with one warning per change.
	const kept = "revocation list file not applied; keeping the lists held"
	writeCRL(t, path, []byte("garbage"))
	files.Reload()
	files.Reload()
	if n := countLogs(logs, kept); n != 1 || !revs.Revoked(bob) {
		t.Fatalf("garbage: %d warnings, bob revoked %v; want 1 warning and bob still revoked", n, revs.Revoked(bob))
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	files.Reload()
	if n := countLogs(logs, kept); n != 2 || !revs.Revoked(bob) {
		t.Fatalf("removed file: %d warnings, bob revoked %v", n, revs.Revoked(bob))
	}
	// An older list (an old backup put back) is not an error, and does not
	// undo bob's revocation.
	if err := WriteRevocationList(path, first); err != nil {
		t.Fatal(err)
	}
	files.Reload()
	if n := countLogs(logs, kept); n != 2 || !revs.Revoked(bob) {
		t.Fatalf("older list: %d warnings, bob revoked %v", n, revs.Revoked(bob))
	}
}

// The monitor warns 30 days ahead of the member's expiry, then daily,
// reloads files and reports the member's own revocation. Inside a
// synctest bubble, the weeks pass at once.
func TestMonitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		day := 24 * time.Hour
		start := time.Now()
		ca, err := NewCA("group-ca", start, start.Add(100*day), "")
		if err != nil {
			t.Fatal(err)
		}
		bundle := mustBundle(t, ca)
		key, _ := GenerateKey("")
		cert, err := ca.Issue(key.Public(), aliceSpec(), start, start.Add(40*day))
		if err != nil {
			t.Fatal(err)
		}
		id, err := NewIdentity(key, cert, bundle, start)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "group.crl")
		otherKey, _ := GenerateKey("")
		other, err := ca.Issue(otherKey.Public(), MemberSpec{Name: "bob"}, start, start.Add(40*day))
		if err != nil {
			t.Fatal(err)
		}
		crl, err := ca.Revoke(nil, []x509.RevocationListEntry{{SerialNumber: other.SerialNumber, RevocationTime: start}}, start, start.Add(5*day))
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteRevocationList(path, crl); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.InfoLevel)
		log := zap.New(core)
		revs := NewRevocations(bundle)
		files, err := LoadRevocationFiles(revs, []string{path}, log)
		if err != nil {
			t.Fatal(err)
		}
		m := &Monitor{Identity: id, Revocations: revs, Files: files, ReloadEvery: time.Minute, WarnAhead: 30 * day, Log: log}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Run(ctx)
		}()
		defer func() {
			cancel()
			<-done
		}()
		const soon, stale = "member certificate expires soon", "revocation list is past its next update"

		synctest.Wait()
		if n := countLogs(logs, soon); n != 0 {
			t.Fatalf("%d warnings 40 days ahead", n)
		}
		time.Sleep(10*day + time.Minute) // 30 days left: the first warning
		synctest.Wait()
		if n := countLogs(logs, soon); n != 1 {
			t.Fatalf("%d warnings 30 days ahead, want 1", n)
		}
		if n := countLogs(logs, stale); n != 5 { // daily since its next update on day 5
			t.Fatalf("%d warnings about the stale list, want 5", n)
		}
		time.Sleep(day)
		synctest.Wait()
		if n := countLogs(logs, soon); n != 2 {
			t.Fatalf("%d warnings a day later, want 2 (daily)", n)
		}
		time.Sleep(30 * day)
		synctest.Wait()
		if n := countLogs(logs, "member certificate has expired"); n != 1 {
			t.Fatalf("%d errors after the expiry, want 1", n)
		}

		// A new list in the file, revoking this member, is picked up
		// within a reload interval and reported.
		crl2, err := ca.Revoke(crl, []x509.RevocationListEntry{{SerialNumber: cert.SerialNumber, RevocationTime: time.Now()}}, time.Now(), time.Now().Add(day))
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteRevocationList(path, crl2); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if !revs.Revoked(cert) || countLogs(logs, "this member's certificate is revoked: peers refuse it") != 1 {
			t.Fatalf("own revocation: revoked %v, logs %v", revs.Revoked(cert), logs.All())
		}
	})
}

func TestExpiryWarnings_Schedule(t *testing.T) {
	day := 24 * time.Hour
	ca := newTestCA(t, "group-ca", "") // valid a year from t0
	key, cert := issueTestMember(t, ca, aliceSpec(), "")
	id, err := NewIdentity(key, cert, mustBundle(t, ca), t0)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	// 30 days of member life, warned 7 days ahead: checks are daily, or
	// when the window opens if that is sooner.
	next := expiryWarnings(zap.New(core), id, nil, t0, 7*day)
	if want := t0.Add(day); !next.Equal(want) {
		t.Errorf("next check %s, want %s", next, want)
	}
	opens := cert.NotAfter.Add(-7 * day)
	next = expiryWarnings(zap.New(core), id, nil, opens.Add(-time.Hour), 7*day)
	if !next.Equal(opens) {
		t.Errorf("next check %s, want %s", next, opens)
	}
	if logs.Len() != 0 {
		t.Errorf("warnings before the window: %v", logs.All())
	}
	next = expiryWarnings(zap.New(core), id, nil, cert.NotAfter.Add(-day), 7*day)
	if want := cert.NotAfter; !next.Equal(want) {
		t.Errorf("next check %s, want %s (daily)", next, want)
	}
	warned := logs.FilterMessage("member certificate expires soon").All()
	if len(warned) != 1 || warned[0].ContextMap()["name"] != "alice" {
		t.Fatalf("warnings a day before expiry: %v", logs.All())
	}
	// The CA is watched too.
	expiryWarnings(zap.New(core), id, nil, ca.Cert.NotAfter.Add(-day), 400*day)
	if logs.FilterMessage("CA certificate expires soon").Len() != 1 {
		t.Fatalf("no warning ahead of the CA's expiry: %v", logs.All())
	}
}
