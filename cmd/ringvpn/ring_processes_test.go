package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
	"github.com/ringvpn/ringvpn/security"
)

// ringProblems compares the statuses of running nodes with the true ring:
// each node must keep near links to the near nodes on each side of it.
func ringProblems(statuses []node.Status, near int) []string {
	addrs := make([]string, len(statuses))
	for i, s := range statuses {
		addrs[i] = s.Address
	}
	slices.Sort(addrs)
	var problems []string
	for _, s := range statuses {
		linked := map[string]bool{}
		for _, l := range s.Links {
			if strings.Contains(l.Kind, "near") {
				linked[l.Address] = true
			}
		}
		i := slices.Index(addrs, s.Address)
		for d := 1; d <= near && d < len(addrs); d++ {
			for _, j := range []int{(i + d) % len(addrs), (i - d + len(addrs)) % len(addrs)} {
				if !linked[addrs[j]] {
					problems = append(problems, fmt.Sprintf("%s lacks a near link to %s…", s.Name, addrs[j][:12]))
				}
			}
		}
	}
	return problems
}

// TestProcesses_RingFormsAndHeals runs seven `ringvpn up` processes on
// loopback, one socket each, all joining through the first: they form a
// correct ring. Then the bootstrap node itself is killed (SIGKILL, no
// goodbye), and the six others heal the ring around the hole.
func TestProcesses_RingFormsAndHeals(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	now := time.Now()
	ca, err := security.NewCA("group-ca", now.Add(-time.Hour), now.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.crt")
	if err := security.WriteCertificate(caPath, ca.Cert, false); err != nil {
		t.Fatal(err)
	}
	const n, near = 7, 2
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freeUDPPort(t)
	}
	bootstrap := fmt.Sprintf("127.0.0.1:%d", ports[0])
	type proc struct {
		cmd    *exec.Cmd
		log    *syncBuffer
		socket string
	}
	procs := make([]*proc, n)
	for i := range n {
		name := fmt.Sprintf("node%d", i)
		certPath, keyPath := writeMember(t, dir, name, ca, now.Add(-time.Hour), now.Add(time.Hour))
		socket := filepath.Join(dir, name+".sock")
		boot := fmt.Sprintf("[%q]", bootstrap)
		if i == 0 {
			boot = "[]"
		}
		yaml := fmt.Sprintf(`identity: {cert: %s, key: %s, ca: %s}
listen: "127.0.0.1:%d"
control: {socket: %s}
vpn: {enabled: false}
overlay: {bootstrap: %s, near: %d, maintain_interval: 200ms, ping_interval: 500ms, dead_after: 2s, connect_timeout: 3s}
security: {keepalive_interval: 1s, dead_after: 4s, handshake_timeout: 3s}
log: {level: debug}
`, certPath, keyPath, caPath, ports[i], socket, boot, near)
		conf := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: exec.Command(bin, "up", "--config", conf), log: &syncBuffer{}, socket: socket}
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
		t.Cleanup(func() {
			p.cmd.Process.Kill()
			p.cmd.Wait()
			if t.Failed() {
				t.Logf("%s log (last 3000 bytes):\n%s", name, tail(p.log.String(), 3000))
			}
		})
	}
	statuses := func(live []*proc) ([]node.Status, error) {
		var out []node.Status
		for _, p := range live {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s, err := node.QueryStatus(ctx, p.socket)
			cancel()
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	waitRing := func(live []*proc, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var last []string
		for time.Since(start) < within {
			ss, err := statuses(live)
			if err == nil {
				if last = ringProblems(ss, near); len(last) == 0 {
					return time.Since(start)
				}
			} else {
				last = []string{err.Error()}
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("ring not correct within %v: %d problems, first: %s", within, len(last), last[0])
		return 0
	}
	took := waitRing(procs, 30*time.Second)
	t.Logf("%d processes formed a correct ring in %v", n, took.Round(10*time.Millisecond))

	procs[0].cmd.Process.Kill() // the bootstrap: no goodbye
	procs[0].cmd.Wait()
	took = waitRing(procs[1:], 30*time.Second)
	t.Logf("after the bootstrap was killed, the other %d healed the ring in %v", n-1, took.Round(10*time.Millisecond))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
