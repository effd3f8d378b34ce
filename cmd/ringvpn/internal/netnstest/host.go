package netnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// StopTimeout is how long Proc.Stop waits after SIGTERM before SIGKILL.
const StopTimeout = 5 * time.Second

// logTail is how many lines of each process's log a failed test prints.
const logTail = 60

// procSeq numbers log files.
var procSeq atomic.Uint32

// Run runs a command inside the host's namespace (ip netns exec) and
// returns its combined output; the error includes the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %s %s: %w: %s", h.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Do runs f on an OS thread switched into the host's namespace and returns
// its error. Sockets f creates belong to the namespace for their whole
// life, whichever goroutine uses them later; goroutines f starts do not run
// in it. The thread stays locked, so it exits with the goroutine instead of
// going back to the scheduler in the wrong namespace.
func (h *Host) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		fd, err := unix.Open(filepath.Join(netnsDir, h.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("%s: open namespace: %w", h.Name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("%s: setns: %w", h.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Proc is a process running in a host's namespace, started by Start. Its
// methods are safe for concurrent use.
type Proc struct {
	// immutable after Start
	Name    string // the command, for messages
	LogPath string // its stdout and stderr
	pid     int
	done    chan struct{} // closed when the process has been waited for
	err     error         // Wait's result; written before done is closed
}

// Start starts a long-running command in the host's namespace with stdout
// and stderr written to a file in t.TempDir(). The process leads its own
// process group (signals go to the group), gets SIGKILL if the test binary
// dies, and is killed by t.Cleanup if still running; when the test has
// failed, Cleanup also logs the last lines of its log.
func (h *Host) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s-%d.log", h.Name, filepath.Base(name), procSeq.Add(1)))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	defer logFile.Close() // the child has its own copy
	p := &Proc{Name: h.Name + ": " + strings.Join(append([]string{name}, args...), " "), LogPath: logPath, done: make(chan struct{})}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	// Pdeathsig fires when the thread that forked exits, not the process,
	// and Do ends threads. So the fork happens on a thread locked to a
	// goroutine that lives as long as the process.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies after Wait
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("netnstest: starting %s: %v", p.Name, err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("netnstest: last lines of %s (%s):\n%s", p.Name, p.LogPath, tail(p.Log(), logTail))
		}
	})
	return p
}

// Pid returns the process id (also its process group id).
func (p *Proc) Pid() int { return p.pid }

// Stop sends SIGTERM to the process group, waits up to StopTimeout for the
// process to exit, then sends SIGKILL. It returns what Wait returns: nil
// when the process exited with status 0 after SIGTERM.
func (p *Proc) Stop() error {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Kill sends SIGKILL to the process group and waits for the process.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits for the process to exit and returns its exit error, as
// exec.Cmd.Wait does.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Exited returns a channel closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Log returns the process's output so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return string(b)
}

func (p *Proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return // the pid may belong to another process by now
	default:
	}
	if err := syscall.Kill(-p.pid, sig); errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(p.pid, sig)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "")
}
