package netnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// installTimeout bounds an apt-get run (update included).
const installTimeout = 5 * time.Minute

// nftOnce installs nft once per process; parallel tests share the result.
var nftOnce = sync.OnceValues(ensureNft)

// RequireNAT is Require for a NATLab: it also needs nft (nftables). As
// root on a machine with apt-get, a missing nft is installed with
//
//	apt-get install -y --no-install-recommends nftables
//
// (after apt-get update when that fails: fresh images have no package
// lists), once per test process. A failed installation fails the test
// rather than skipping it, so that CI does not pass without running the
// NAT tests; without apt-get the test is skipped with what to install.
func RequireNAT(t testing.TB) {
	t.Helper()
	Require(t)
	switch _, err := nftOnce(); {
	case errors.Is(err, errNoInstaller):
		t.Skipf("NAT test: %v", err)
	case err != nil:
		t.Fatalf("NAT test: %v", err)
	}
}

// errNoInstaller says nft is missing and this machine has no apt-get.
var errNoInstaller = errors.New("needs nft: install the nftables package (no apt-get here to do it)")

// ensureNft finds nft, installing it when missing, and returns its path.
func ensureNft() (string, error) {
	if p, err := lookSbin("nft"); err == nil {
		return p, checkNft(p)
	}
	if os.Geteuid() != 0 {
		return "", errors.New("needs nft (apt-get install nftables) and root to install it")
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return "", errNoInstaller
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	// The lock timeout lets two test binaries (go test runs packages in
	// parallel) install at the same time: the second waits, then finds
	// nothing to do.
	aptGet := func(args ...string) error {
		cmd := exec.CommandContext(ctx, apt, append([]string{"-o", "DPkg::Lock::Timeout=180", "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, tail(string(bytes.TrimSpace(out)), 15))
		}
		return nil
	}
	install := []string{"install", "-y", "--no-install-recommends", "nftables"}
	if err := aptGet(install...); err != nil {
		if uerr := aptGet("update"); uerr != nil {
			return "", fmt.Errorf("installing nftables: %w; then %w", err, uerr)
		}
		if err := aptGet(install...); err != nil {
			return "", fmt.Errorf("installing nftables: %w", err)
		}
	}
	p, err := lookSbin("nft")
	if err != nil {
		return "", fmt.Errorf("nftables installed, but no nft command: %w", err)
	}
	return p, checkNft(p)
}

// lookSbin is exec.LookPath, also trying the sbin directories that a
// non-login PATH may lack.
func lookSbin(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin/", "/sbin/", "/usr/local/sbin/"} {
		if p, err2 := exec.LookPath(dir + name); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

// checkNft runs `nft --version`, which needs no kernel support, to catch a
// broken installation early.
func checkNft(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput(); err != nil {
		return fmt.Errorf("%s --version: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}
