// Package proctest holds helpers for tests and tools that drive real processes: their output
// read while they run, and a daemon stopped and resumed, as a hung daemon would be.
package proctest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Freeze stops pid with SIGSTOP and returns once every one of its threads is stopped.
// kill(2) returns before the signal is acted on: a thread running on another CPU can still
// answer a request in that window, which once let a "frozen" daemon answer a C timeout test.
func Freeze(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP %d: %w", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stopped, total, err := stoppedThreads(pid)
		if err != nil {
			return err
		}
		if stopped == total {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d: %d of %d threads stopped 10 s after SIGSTOP", pid, stopped, total)
		}
		time.Sleep(time.Millisecond)
	}
}

// Thaw resumes a process stopped by Freeze.
func Thaw(pid int) error {
	return syscall.Kill(pid, syscall.SIGCONT)
}

func stoppedThreads(pid int) (stopped, total int, err error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, task := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		total++
		// proc(5): the state follows the ")" that ends the command name, which may hold spaces.
		if i := bytes.LastIndexByte(raw, ')'); i >= 0 && i+2 < len(raw) && raw[i+2] == 'T' {
			stopped++
		}
	}
	return stopped, total, nil
}

// SyncBuffer is an io.Writer for a child's output read while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreePort returns a loopback TCP port free a moment ago, for a server process that takes its
// port on the command line or in a configuration file (sshd, nginx).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
