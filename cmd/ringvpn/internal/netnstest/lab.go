package netnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Prefix starts the name of every namespace this package creates; the
// process id and a dash follow it ("rvt1234-").
const Prefix = "rvt"

// Dev is the name of each host's underlay interface (its end of the veth).
const Dev = "eth0"

// netnsDir is where iproute2 keeps named namespaces.
const netnsDir = "/run/netns"

// labSeq numbers the labs of this process; it names them and picks their
// subnets.
var labSeq atomic.Uint32

// Require skips t unless the machine can run a Lab: root, the ip command
// (iproute2) and /dev/net/tun. The message says what is missing.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "needs root (CI runs it as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		missing = append(missing, "needs the ip command (apt-get install iproute2)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "needs /dev/net/tun")
	}
	if len(missing) > 0 {
		t.Skip("network namespace test: " + strings.Join(missing, "; "))
	}
}

// Lab is a LAN of hosts in network namespaces: one namespace holds a
// bridge, and every host is a namespace joined to it by a veth pair.
// A Lab is removed by the Cleanup of the test that made it.
type Lab struct {
	// immutable after New
	t      testing.TB
	name   string // "rvt<pid>-<seq>": every namespace's name starts with it
	bridge string // the bridge's namespace
	prefix netip.Prefix
	hosts  []*Host
}

// Host is one namespace of a Lab.
type Host struct {
	// Name is the namespace's name, as `ip netns` knows it.
	Name string
	// Underlay is the address of Dev: 192.168.<subnet>.<i+1> for host i
	// of a Lab. In a NATLab it is the host's only address: public, or
	// private in its site; a router's is its public (wan) address.
	Underlay netip.Addr
	lab      *Lab // nil in a NATLab
}

// New builds a Lab of n hosts (1 ≤ n ≤ 253) and registers its removal with
// t.Cleanup. Host i has the underlay address 192.168.<s>.<i+1>/24 on Dev
// and loopback up. Labs are isolated from each other, so two labs could
// share a subnet; each gets its own anyway (from the pid and a counter) so
// that logs of parallel tests tell them apart. Before building, New removes
// leftovers of earlier runs whose process is gone (see Sweep).
func New(t testing.TB, n int) *Lab {
	t.Helper()
	if n < 1 || n > 253 {
		t.Fatalf("netnstest.New: %d hosts not in [1,253]", n)
	}
	if err := Sweep(); err != nil {
		t.Logf("netnstest: sweeping leftovers: %v", err)
	}
	seq := labSeq.Add(1)
	name := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), seq)
	subnet := (os.Getpid()*7+int(seq)-1)%250 + 2 // 2..251, away from common 192.168.0/1
	l := &Lab{
		t:      t,
		name:   name,
		bridge: name + "br",
		prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(subnet), 0}), 24),
	}
	for i := range n {
		l.hosts = append(l.hosts, &Host{
			Name:     fmt.Sprintf("%sh%d", name, i+1),
			Underlay: netip.AddrFrom4([4]byte{192, 168, byte(subnet), byte(i + 1)}),
			lab:      l,
		})
	}
	// Registered before anything exists, so a half-built lab is removed too.
	t.Cleanup(l.remove)
	if err := l.build(); err != nil {
		t.Fatalf("netnstest: building lab %s: %v", name, err)
	}
	return l
}

// Hosts returns the lab's hosts in order; host i has underlay .<i+1>.
func (l *Lab) Hosts() []*Host { return l.hosts }

// Prefix returns the underlay subnet, e.g. 192.168.17.0/24.
func (l *Lab) Prefix() netip.Prefix { return l.prefix }

// Namespaces returns the names of every namespace of the lab, the bridge's
// last.
func (l *Lab) Namespaces() []string {
	names := make([]string, 0, len(l.hosts)+1)
	for _, h := range l.hosts {
		names = append(names, h.Name)
	}
	return append(names, l.bridge)
}

func (l *Lab) build() error {
	cmds := [][]string{
		{"netns", "add", l.bridge},
		{"-n", l.bridge, "link", "set", "lo", "up"},
		{"-n", l.bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", l.bridge, "link", "set", "br0", "up"},
	}
	for i, h := range l.hosts {
		port := fmt.Sprintf("h%d", i+1)
		cmds = append(cmds,
			[]string{"netns", "add", h.Name},
			[]string{"-n", h.Name, "link", "set", "lo", "up"},
			[]string{"-n", l.bridge, "link", "add", port, "type", "veth", "peer", "name", Dev, "netns", h.Name},
			[]string{"-n", l.bridge, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", h.Name, "addr", "add", netip.PrefixFrom(h.Underlay, l.prefix.Bits()).String(), "dev", Dev},
			[]string{"-n", h.Name, "link", "set", Dev, "up"},
		)
	}
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			return err
		}
	}
	return nil
}

// remove kills every process left in the lab's namespaces, then deletes
// them; it reports failures with t.Errorf.
func (l *Lab) remove() {
	for _, ns := range l.Namespaces() {
		if err := deleteNamespace(ns); err != nil {
			l.t.Errorf("netnstest: removing namespace %s: %v", ns, err)
		}
	}
}

// Sweep removes the namespaces of earlier runs that are gone: names
// starting with Prefix and a pid that is no longer alive. Processes still
// running inside them are killed first. New calls it; a test binary that
// was killed leaves namespaces behind only until the next New.
func Sweep() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPid(e.Name())
		if !ok || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := deleteNamespace(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// ownerPid parses "rvt<pid>-..." names.
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// deleteNamespace SIGKILLs the processes in namespace ns and deletes it;
// a namespace that is already gone is not an error.
func deleteNamespace(ns string) error {
	if _, err := os.Stat(netnsDir + "/" + ns); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	killAll(ns)
	err := ip("netns", "del", ns)
	if _, serr := os.Stat(netnsDir + "/" + ns); errors.Is(serr, os.ErrNotExist) {
		return nil // deleted, possibly by a concurrent sweep
	}
	return err
}

// killAll SIGKILLs every process in namespace ns and waits (briefly) for
// them to be gone, so that the namespace's devices go with it.
func killAll(ns string) {
	self := os.Getpid()
	pids := func() []int {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			return nil
		}
		var pids []int
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != self {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		ps := pids()
		if len(ps) == 0 {
			return
		}
		for _, pid := range ps {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ip runs the ip command; the error holds its output.
func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
