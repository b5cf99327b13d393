// Package apps holds what the paper's applications (examples/tlskey, examples/sshpass), their
// end-to-end tests, `palisade demo tls|ssh` and `palisade bench` share: a private daemon on a
// temporary socket, and cached builds of Go PALs.
package apps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/kvm"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/lean"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
)

// Daemon is a private palisaded: the daemon's own gRPC server (api/server) on a Unix socket in
// a temporary directory, in this process, with the development root of trust. Applications
// reach it through package client exactly as they reach a system palisaded, so every PAL call
// crosses a real socket and the gRPC stack.
type Daemon struct {
	Socket  string
	Dir     string
	Engines []string

	v       *visor.Visor
	srv     *server.Server
	lean    *lean.Server // the lean protocol, on lean.sock beside Socket
	engines []engine.Engine
	root    *none.Root
	served  chan error
	leanEnd chan error
	ownDir  bool
}

// DaemonOptions configure StartDaemon.
type DaemonOptions struct {
	Dir     string   // where the socket and state go; "" makes (and later removes) a temp dir
	Engines []string // engines to offer; nil: wasm, and kvm where this machine supports it
	Logger  *slog.Logger
}

// StartDaemon starts a private daemon.
func StartDaemon(ctx context.Context, o DaemonOptions) (d *Daemon, err error) {
	d = &Daemon{Dir: o.Dir, served: make(chan error, 1), leanEnd: make(chan error, 1)}
	if d.Dir == "" {
		if d.Dir, err = os.MkdirTemp("", "palisade-apps-"); err != nil {
			return nil, err
		}
		d.ownDir = true
	}
	defer func() {
		if err != nil {
			d.Close(context.Background())
		}
	}()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// The development root of trust measures nothing real; a fixed visor measurement keeps
	// sealed state of earlier runs in the same directory usable.
	if d.root, err = none.Open(filepath.Join(d.Dir, "rot-none"), utpm.Digest{'a', 'p', 'p', 's'}); err != nil {
		return nil, fmt.Errorf("root of trust: %w", err)
	}
	want := o.Engines
	if want == nil {
		want = []string{"wasm", "kvm"}
	}
	for _, name := range want {
		var e engine.Engine
		switch name {
		case "wasm":
			cache, _ := os.UserCacheDir()
			if cache != "" {
				e, err = wasm.New(wasm.WithCacheDir(filepath.Join(cache, "palisade", "wasm")))
			} else {
				e, err = wasm.New()
			}
		case "kvm":
			e, err = kvm.New()
			if errors.Is(err, engine.ErrNotSupported) && o.Engines == nil {
				log.Warn("kvm engine not offered", "err", err)
				continue
			}
		default:
			err = fmt.Errorf("unknown engine %q", name)
		}
		if err != nil {
			return nil, fmt.Errorf("engine %s: %w", name, err)
		}
		d.engines = append(d.engines, e)
		d.Engines = append(d.Engines, name)
	}
	if d.v, err = visor.New(visor.Config{Root: d.root, Engines: d.engines, Logger: log}); err != nil {
		return nil, err
	}
	if d.srv, err = server.New(server.Config{Visor: d.v, Logger: log, Version: "apps"}); err != nil {
		return nil, err
	}
	d.Socket = filepath.Join(d.Dir, "run", "palisade.sock")
	l, err := server.Listen(d.Socket, server.SocketOptions{Mode: 0o600, GID: -1})
	if err != nil {
		return nil, err
	}
	go func() { d.served <- d.srv.Serve(l) }()
	// The lean protocol beside it, where clients look for it, as palisaded serves it.
	ls, err := lean.New(lean.Config{API: d.srv, Logger: log, Version: "apps"})
	if err != nil {
		return nil, err
	}
	ll, err := server.Listen(filepath.Join(d.Dir, "run", "lean.sock"), server.SocketOptions{Mode: 0o600, GID: -1})
	if err != nil {
		return nil, err
	}
	d.lean = ls // Close waits for Serve from here on
	go func() { d.leanEnd <- ls.Serve(ll) }()
	return d, nil
}

// HasEngine reports whether the daemon offers engine name.
func (d *Daemon) HasEngine(name string) bool {
	for _, n := range d.Engines {
		if n == name {
			return true
		}
	}
	return false
}

// Dial connects a client to the daemon.
func (d *Daemon) Dial(ctx context.Context) (*client.Client, error) { return client.Dial(ctx, d.Socket) }

// Close stops the daemon and removes its directory if StartDaemon made it.
func (d *Daemon) Close(ctx context.Context) error {
	var errs []error
	if d.lean != nil {
		errs = append(errs, d.lean.Shutdown(ctx))
		if err := <-d.leanEnd; !errors.Is(err, lean.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if d.srv != nil {
		errs = append(errs, d.srv.Shutdown(ctx))
		<-d.served
	}
	if d.v != nil {
		errs = append(errs, d.v.Close(ctx))
	}
	for _, e := range d.engines {
		errs = append(errs, e.Close(ctx))
	}
	if d.root != nil {
		errs = append(errs, d.root.Close())
	}
	if d.ownDir {
		errs = append(errs, os.RemoveAll(d.Dir))
	}
	return errors.Join(errs...)
}

// Visor is the daemon's visor, for measurements below the API (palisade bench).
func (d *Daemon) Visor() *visor.Visor { return d.v }

// Root is the daemon's root of trust.
func (d *Daemon) Root() *none.Root { return d.root }
