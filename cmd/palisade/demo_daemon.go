package main

// The application demos' private palisaded runs in a process of its own, as a system palisaded
// does: the demo's server process holds only what an application holds (key blobs, sealed
// databases, public keys), and the keys stay in the daemon's memory. Run in the server's own
// process, the "private palisaded" would put the very keys the demo says the server never
// holds into the server's memory.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// privateDaemonCommand is the hidden first argument that makes palisade a demo's private
// daemon: `palisade private-daemon DIR` serves on a socket in DIR, prints "ready SOCKET" on
// standard output and serves until its standard input reaches end of file (its parent closed
// it or died) or it gets SIGTERM/SIGINT. It is not a user command: 'palisade help' omits it.
const privateDaemonCommand = "private-daemon"

// runPrivateDaemon is the private daemon's main.
func runPrivateDaemon(args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "palisade %s: want the state directory\n", privateDaemonCommand)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := apps.StartDaemon(ctx, apps.DaemonOptions{Dir: args[0], Engines: []string{"wasm"}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "palisade %s: %v\n", privateDaemonCommand, err)
		return exitFailure
	}
	fmt.Printf("ready %s\n", d.Socket)
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(cctx); err != nil {
		fmt.Fprintf(os.Stderr, "palisade %s: %v\n", privateDaemonCommand, err)
		return exitFailure
	}
	return exitOK
}

// privateDaemon is a running private daemon process.
type privateDaemon struct {
	Socket string
	Pid    int
	dir    string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
}

// startPrivateDaemon starts this executable as a private daemon on a socket in a new temporary
// directory and waits until it serves.
func startPrivateDaemon(ctx context.Context) (_ *privateDaemon, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "palisade-demo-daemon-")
	if err != nil {
		return nil, err
	}
	d := &privateDaemon{dir: dir}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	// Not CommandContext: the daemon outlives ctx's cancellation long enough to shut down
	// cleanly when Close closes its standard input.
	d.cmd = exec.Command(exe, privateDaemonCommand, dir)
	d.cmd.Stderr = os.Stderr
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		return d, err
	}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		return d, err
	}
	if err := d.cmd.Start(); err != nil {
		return d, err
	}
	d.Pid = d.cmd.Process.Pid
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "ready "); ok && err == nil {
			d.Socket = s
			ready <- nil
		} else {
			ready <- fmt.Errorf("private daemon (pid %d) did not start: %q %v", d.Pid, line, err)
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		return d, err
	case <-ctx.Done():
		return d, ctx.Err()
	case <-time.After(30 * time.Second):
		return d, errors.New("private daemon: not ready after 30 s")
	}
}

// Close stops the daemon (end of file on its standard input; SIGKILL if it has not exited
// after 10 s) and removes its directory.
func (d *privateDaemon) Close() error {
	var err error
	if d.cmd != nil && d.cmd.Process != nil {
		d.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- d.cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			err = fmt.Errorf("private daemon (pid %d) killed: it did not stop in 10 s: %v", d.Pid, <-done)
		}
	}
	return errors.Join(err, os.RemoveAll(d.dir))
}
