package netnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLab_HostsPingEachOther(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t, 3)
	hosts := lab.Hosts()
	if len(hosts) != 3 {
		t.Fatalf("%d hosts, want 3", len(hosts))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i, h := range hosts {
		if want := lab.Prefix().Addr().Next().Next(); i == 1 && h.Underlay != want {
			t.Errorf("host 2 underlay %v, want %v", h.Underlay, want)
		}
		if !lab.Prefix().Contains(h.Underlay) {
			t.Errorf("%s: underlay %v outside %v", h.Name, h.Underlay, lab.Prefix())
		}
		for _, to := range hosts {
			rtt, err := h.Ping(ctx, to.Underlay, 3*time.Second)
			if err != nil {
				t.Errorf("%v", err)
				continue
			}
			t.Logf("%s -> %v: %v", h.Name, to.Underlay, rtt)
		}
	}
}

func TestHost_PingIPv6Loopback(t *testing.T) {
	Require(t)
	t.Parallel()
	h := New(t, 1).Hosts()[0]
	if out, err := h.Run(t.Context(), "ip", "-6", "addr", "show", "dev", "lo"); err != nil || !strings.Contains(string(out), "::1") {
		t.Skipf("no IPv6 on loopback: %v %s", err, out)
	}
	if _, err := h.Ping(t.Context(), netip.IPv6Loopback(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestHost_PingTimesOut(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t, 1)
	nobody := netip.AddrFrom4([4]byte{192, 168, lab.Prefix().Addr().As4()[2], 200})
	start := time.Now()
	_, err := lab.Hosts()[0].Ping(t.Context(), nobody, 500*time.Millisecond)
	if err == nil {
		t.Fatalf("ping %v (nobody) succeeded", nobody)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ping took %v to give up after a 500ms timeout", d)
	}
	t.Logf("as expected: %v", err)
}

func TestTCPTransfer_10MB(t *testing.T) {
	Require(t)
	t.Parallel()
	hosts := New(t, 2).Hosts()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	bps, err := TCPTransfer(ctx, hosts[0], hosts[1], hosts[1].Underlay, 0, 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("10 MiB over the veth: %.0f Mbit/s", bps*8/1e6)
}

func TestTCPTransfer_ContextEnds(t *testing.T) {
	Require(t)
	t.Parallel()
	hosts := New(t, 2).Hosts()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := TCPTransfer(ctx, hosts[0], hosts[1], hosts[1].Underlay, 0, 1<<40)
	if err == nil {
		t.Fatal("a 1 TiB transfer finished in 300ms")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("transfer took %v to stop after its context ended", d)
	}
	t.Logf("as expected: %v", err)
}

func TestHost_RunAndDoAreInTheNamespace(t *testing.T) {
	Require(t)
	t.Parallel()
	h := New(t, 1).Hosts()[0]
	out, err := h.Run(t.Context(), "ip", "-br", "addr", "show", "dev", Dev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), h.Underlay.String()+"/24") {
		t.Errorf("ip addr in %s: %q lacks %v/24", h.Name, out, h.Underlay)
	}
	if _, err := h.Run(t.Context(), "false"); err == nil || !strings.Contains(err.Error(), h.Name) {
		t.Errorf("Run(false) = %v, want an error naming the host", err)
	}

	var ln net.Listener
	err = h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(h.Underlay, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on the underlay inside Do: %v", err)
	}
	defer ln.Close()
	// The underlay address exists only in the namespace: outside, the
	// connection has nowhere to go.
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("dialled %v from outside the namespace", ln.Addr())
	}
	if err := h.Do(func() error {
		c, err := d.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("dial inside Do: %v", err)
	}
	wantErr := errors.New("from f")
	if err := h.Do(func() error { return wantErr }); err != wantErr {
		t.Errorf("Do returned %v, want f's error", err)
	}
}

func TestHost_StartStop(t *testing.T) {
	Require(t)
	t.Parallel()
	h := New(t, 1).Hosts()[0]
	p := h.Start(t, "sh", "-c", "echo started; exec sleep 60")
	waitFor(t, 3*time.Second, func() bool { return strings.Contains(p.Log(), "started") })
	out, err := exec.Command("ip", "netns", "pids", h.Name).Output()
	if err != nil || !strings.Contains(" "+strings.Join(strings.Fields(string(out)), " ")+" ", fmt.Sprintf(" %d ", p.Pid())) {
		t.Errorf("pid %d not in namespace %s (ip netns pids: %q, %v)", p.Pid(), h.Name, out, err)
	}
	start := time.Now()
	err = p.Stop()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("Stop = %v, want death by SIGTERM", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Stop took %v", d)
	}
	if err := p.Wait(); err != exit {
		t.Errorf("Wait after Stop = %v, want %v", err, exit)
	}

}

func TestProc_StopKillsWhatIgnoresSIGTERM(t *testing.T) {
	Require(t)
	t.Parallel()
	h := New(t, 1).Hosts()[0]
	p := h.Start(t, "sh", "-c", "trap '' TERM; echo ready; exec sleep 60")
	waitFor(t, 3*time.Second, func() bool { return strings.Contains(p.Log(), "ready") })
	start := time.Now()
	err := p.Stop()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("Stop = %v, want death by SIGKILL", err)
	}
	if d := time.Since(start); d < StopTimeout || d > StopTimeout+2*time.Second {
		t.Errorf("Stop took %v, want a little over %v", d, StopTimeout)
	}

	q := h.Start(t, "sleep", "60")
	q.Kill()
	select {
	case <-q.Exited():
	default:
		t.Error("Kill returned before the process exited")
	}
}

func TestLab_CleanupRemovesEverything(t *testing.T) {
	Require(t)
	t.Parallel()
	var names []string
	var pid int
	t.Run("lab", func(t *testing.T) {
		lab := New(t, 2)
		names = lab.Namespaces()
		pid = lab.Hosts()[1].Start(t, "sleep", "60").Pid()
		if listed := namespaces(t); !containsAll(listed, names) {
			t.Fatalf("ip netns list %v lacks some of %v", listed, names)
		}
	})
	for _, ns := range namespaces(t) {
		for _, n := range names {
			if ns == n {
				t.Errorf("namespace %s still exists after Cleanup", ns)
			}
		}
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Cleanup (kill 0: %v)", pid, err)
	}
}

func TestSweep_RemovesDeadRunsNamespaces(t *testing.T) {
	Require(t)
	t.Parallel()
	pid := 999999
	for alive(pid) {
		pid++
	}
	stale := fmt.Sprintf("%s%d-x", Prefix, pid)
	mine := fmt.Sprintf("%s%d-sweeptest", Prefix, os.Getpid()) // alive: kept
	for _, ns := range []string{stale, mine} {
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNamespace(ns) })
	}
	New(t, 1)
	listed := namespaces(t)
	if containsAll(listed, []string{stale}) {
		t.Errorf("stale namespace %s survived New's sweep", stale)
	}
	if !containsAll(listed, []string{mine}) {
		t.Errorf("sweep removed %s, whose process is alive", mine)
	}
}

func TestOwnerPid(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"rvt123-4h1", 123, true},
		{"rvt123-x", 123, true},
		{"rvt123", 0, false},
		{"rvtx-1", 0, false},
		{"rvt-1", 0, false},
		{"rvd123-h1", 0, false},
		{"other", 0, false},
	} {
		pid, ok := ownerPid(tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPid(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}

func TestTail(t *testing.T) {
	if got := tail("a\nb\nc\n", 2); got != "... (1 lines before)\nb\nc" {
		t.Errorf("tail = %q", got)
	}
	if got := tail("a\nb", 5); got != "a\nb" {
		t.Errorf("tail = %q", got)
	}
}

// namespaces lists the named network namespaces.
func namespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0]) // "name (id: 3)"
		}
	}
	return names
}

func containsAll(have, want []string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
	}
}
