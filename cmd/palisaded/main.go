// Command palisaded is the Palisade visor daemon: it runs PALs for local applications, which
// reach it over gRPC on a Unix socket (docs/daemon.md).
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/atomicfile"
	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/kvm"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/lean"
	"github.com/palisade-project/palisade/internal/rot"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
)

const version = "0.1.0"

func main() {
	os.Exit(exitStatus(run(os.Args[1:]), os.Stderr))
}

// errUsage marks a bad command line: exit status 2, as for palisade (docs/cli.md), and no
// restart can cure it.
var errUsage = errors.New("usage")

// errUsageShown is a bad command line that the flag package has already reported with the
// usage.
var errUsageShown = fmt.Errorf("%w: reported", errUsage)

// exitStatus reports err on w and returns the exit status: 0 for none, 2 for a bad command
// line, 1 for any other failure.
func exitStatus(err error, w io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsageShown):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(w, "palisaded: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	default:
		fmt.Fprintf(w, "palisaded: %v\n", err)
		return 1
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("palisaded", flag.ContinueOnError)
	var (
		configPath = fs.String("config", "", "configuration file (JSON, see docs/daemon.md)")
		stateDir   = fs.String("state-dir", "", "state directory (default /var/lib/palisade)")
		socket     = fs.String("socket", "", "Unix socket to serve (default /run/palisade/palisade.sock)")
		leanSocket = fs.String("lean-socket", "", "Unix socket of the lean protocol (default lean.sock beside --socket; none: off)")
		rotFlag    = fs.String("rot", "", "root of trust: tpm:/dev/tpmrm0 | swtpm:PATH | none (default tpm:/dev/tpmrm0)")
		metrics    = fs.String("metrics", "", "serve Prometheus metrics on this loopback address (127.0.0.1:PORT)")
		logLevel   = fs.String("log-level", "", "debug, info, warn or error")
		cfgState   = fs.String("config-state", "", "trusted-configuration state directory (default STATE_DIR/config)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsageShown // the flag package printed the error and the usage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q (palisaded takes only flags)", errUsage, fs.Args())
	}
	cfg, raw, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	for _, o := range []struct{ flag, field *string }{
		{stateDir, &cfg.StateDir}, {socket, &cfg.Socket}, {leanSocket, &cfg.LeanSocket}, {rotFlag, &cfg.Rot},
		{metrics, &cfg.Metrics}, {logLevel, &cfg.LogLevel}, {cfgState, &cfg.ConfigState},
	} {
		if *o.flag != "" {
			*o.field = *o.flag
		}
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	return serve(cfg, raw, log)
}

func newLogger(cfg Config) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", cfg.LogLevel, err)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch cfg.LogFormat {
	case "json", "":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	}
	return nil, fmt.Errorf("log_format %q: want json or text", cfg.LogFormat)
}

// serve runs the daemon until SIGTERM or SIGINT.
func serve(cfg Config, rawConfig []byte, log *slog.Logger) (err error) {
	mode, err := cfg.socketMode()
	if err != nil {
		return err
	}
	gid, err := cfg.socketGID()
	if err != nil {
		return err
	}
	maxKeys, err := cfg.maxKeysPerOwner()
	if err != nil {
		return err
	}
	grace, err := cfg.shutdownTimeout()
	if err != nil {
		return err
	}
	if cfg.Metrics != "" {
		if err := checkMetricsAddr(cfg.Metrics); err != nil {
			return err
		}
	}
	if err := atomicfile.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if fi, err := os.Stat(cfg.StateDir); err != nil {
		return fmt.Errorf("state directory: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("state directory %s has mode %#o: it must be private to the daemon (0700)", cfg.StateDir, fi.Mode().Perm())
	}

	// Closed in reverse order of opening, whatever happens below.
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if cerr := closers[i](); cerr != nil {
				log.Error("shutdown", "err", cerr)
			}
		}
	}()

	store, err := server.OpenStore(filepath.Join(cfg.StateDir, "state.db"))
	if err != nil {
		return err
	}
	closers = append(closers, store.Close)
	audit, err := server.OpenAudit(filepath.Join(cfg.StateDir, "audit.log"), log)
	if err != nil {
		return err
	}
	closers = append(closers, audit.Close)
	// state.db and audit.log may have just been created: their names must survive a crash
	// of the machine as their contents do.
	if err := atomicfile.SyncDir(cfg.StateDir); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}

	root, err := openRoot(cfg, rawConfig)
	if err != nil {
		return err
	}
	closers = append(closers, root.Close)
	if r, ok := root.(*tpm.Root); ok && r.LeftoversFlushed() > 0 {
		log.Warn("flushed objects and sessions a previous TPM client left loaded (it died without a resource manager to clean up)",
			"count", r.LeftoversFlushed())
	}

	engines, notOffered, err := openEngines(cfg, log)
	if err != nil {
		return err
	}
	closers = append(closers, func() error {
		var errs []error
		for _, e := range engines {
			errs = append(errs, e.Close(context.Background()))
		}
		return errors.Join(errs...)
	})

	trusted, err := openConfigState(cfg, root, log)
	if err != nil {
		return err
	}

	// Key uses are audited with their PAL's owner, which the server knows; it exists only
	// once the visor does, and no PAL runs a call before the server serves.
	var srvp atomic.Pointer[server.Server]
	// A use the log cannot record is refused by the µTPM (E_AUDIT).
	onKeyUse := func(info visor.Info, op string, err error) error {
		if s := srvp.Load(); s != nil {
			return s.LogKeyUse(info, op, err)
		}
		return audit.Log(server.KeyUseEvent(info, op, err))
	}
	v, err := visor.New(visor.Config{Root: root, Engines: engines, NotOffered: notOffered, Logger: log, OnKeyUse: onKeyUse})
	if err != nil {
		return err
	}
	if trusted != nil {
		// Blobs sealed to a name under a signer are decided by the active configuration,
		// re-read after every apply (docs/configurations.md §8).
		// A visor the configuration does not list serves none of them.
		v.Platform().SetAuthorizer(config.NewWatcher(trusted, config.Measurement(root.Platform().Visor)).UTPMAuthorizer())
	}
	closers = append(closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		return v.Close(ctx)
	})

	ks, err := keys.Open(keys.Config{
		Visor: v, DB: store.DB(), Audit: server.KeyAudit(audit), Admins: cfg.Access.Admins, Logger: log,
		MaxKeysPerOwner: maxKeys,
	})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Visor: v, Store: store, Audit: audit, Policy: cfg.Access, ImageDirs: cfg.ImageDirs,
		Logger: log, Version: version, Configuration: trusted, Keys: ks,
	})
	if err != nil {
		return err
	}
	srvp.Store(srv)
	start := time.Now()
	if err := srv.Restore(context.Background()); err != nil {
		return err
	}
	log.Info("restored registrations", "pals", len(v.List()), "took", time.Since(start).String())

	l, err := server.Listen(cfg.Socket, server.SocketOptions{Mode: mode, GID: gid})
	if err != nil {
		return err
	}
	closers = append(closers, func() error { return os.Remove(cfg.Socket) })

	lsrv, ll, err := listenLean(cfg, srv, ks, log, mode, gid)
	if err != nil {
		l.Close()
		return err
	}
	if ll != nil {
		closers = append(closers, func() error { return os.Remove(cfg.leanSocket()) })
	}

	if cfg.Metrics != "" {
		ml, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			l.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		hs := &http.Server{Handler: metricsHandler(srv, lsrv), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(ml)
		closers = append(closers, hs.Close)
		log.Info("serving metrics", "addr", ml.Addr().String())
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if ll != nil {
		go func() {
			if err := lsrv.Serve(ll); !errors.Is(err, lean.ErrServerClosed) {
				served <- fmt.Errorf("lean: %w", err)
			}
		}()
	}
	// A TPM root whose connection breaks (swtpm stopped) fails every operation from then on,
	// and a TPM that comes back lost the visor's PCR: stop, for the supervisor to start the
	// daemon again (which redoes the start sequence, or says why it cannot).
	var lost <-chan struct{}
	if r, ok := root.(*tpm.Root); ok {
		lost = r.Lost()
	}
	vm := root.Platform().Visor
	log.Info("palisaded serving", "socket", cfg.Socket, "rot", root.Mode(), "engines", v.Engines(),
		"state_dir", cfg.StateDir, "version", version, "visor", hex.EncodeToString(vm[:]))
	notifySystemd("READY=1")

	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String(), "grace", grace.String())
		notifySystemd("STOPPING=1")
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := shutdownLean(ctx, lsrv); err != nil {
			log.Warn("lean-protocol calls still running at the shutdown deadline were canceled", "err", err)
		}
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("calls still running at the shutdown deadline were canceled", "err", err)
		}
		<-served
		return nil
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-lost:
		lerr := root.(*tpm.Root).LostErr()
		log.Error("root of trust lost: stopping", "err", lerr)
		notifySystemd("STOPPING=1")
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		_ = shutdownLean(ctx, lsrv)
		_ = srv.Shutdown(ctx)
		<-served
		return fmt.Errorf("root of trust: %w; palisaded stops (start it again once the TPM is back)", lerr)
	}
}

// openRoot opens the root of trust named by cfg.Rot. The visor measurement is the executable
// and the configuration file's bytes (flags are not measured).
func openRoot(cfg Config, rawConfig []byte) (rot.RootOfTrust, error) {
	isTPM := strings.HasPrefix(cfg.Rot, "tpm:") || strings.HasPrefix(cfg.Rot, "swtpm:")
	if !isTPM && (cfg.Authority != "" || len(cfg.Authorizations) > 0) {
		return nil, fmt.Errorf("authority: only a TPM root of trust seals with PolicyAuthorize (rot %q)", cfg.Rot)
	}
	if !isTPM && cfg.EKChain != "" {
		return nil, fmt.Errorf("ek_chain: only a TPM root of trust has an EK certificate (rot %q)", cfg.Rot)
	}
	switch {
	case cfg.Rot == "none":
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		f, err := os.Open(exe)
		if err != nil {
			return nil, fmt.Errorf("measure visor: %w", err)
		}
		defer f.Close()
		m, err := tpm.MeasureVisor(f, rawConfig)
		if err != nil {
			return nil, err
		}
		return none.Open(filepath.Join(cfg.StateDir, "rot-none"), utpm.Digest(m))
	case isTPM:
		dev := strings.TrimPrefix(cfg.Rot, "tpm:")
		authority, auths, err := cfg.authority()
		if err != nil {
			return nil, err
		}
		chain, err := cfg.ekChain()
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return tpm.Open(ctx, tpm.Config{
			Device:         dev,
			StateDir:       filepath.Join(cfg.StateDir, "rot-tpm"),
			Visor:          tpm.VisorInputs{Configuration: rawConfig},
			Authority:      authority,
			Authorizations: auths,
			EKChain:        chain,
		})
	}
	return nil, fmt.Errorf("--rot %q: want tpm:/dev/tpmrm0, swtpm:PATH or none", cfg.Rot)
}

// openConfigState opens the trusted-configuration state directory, or returns nil if it
// was never initialised (the daemon then runs without a trusted configuration). Under a TPM
// root the configuration version is anchored in the TPM's NV counter, over the root's own
// connection (a TPM socket such as swtpm's serves one connection at a time).
func openConfigState(cfg Config, root rot.RootOfTrust, log *slog.Logger) (*config.State, error) {
	dir := cfg.configStateDir()
	if _, err := os.Stat(filepath.Join(dir, "admin.pub")); errors.Is(err, os.ErrNotExist) {
		log.Info("no trusted configuration", "config_state", dir)
		return nil, nil
	}
	var o config.Options
	anchor := "file"
	if r, ok := root.(*tpm.Root); ok {
		a, err := r.VersionAnchor(0)
		if err != nil {
			return nil, fmt.Errorf("trusted configuration: %w", err)
		}
		o.Anchor, anchor = a, "tpm"
	}
	st, err := config.OpenState(dir, o)
	if err != nil {
		return nil, err
	}
	// Refuse to start on a state that is rolled back or does not verify.
	vm := config.Measurement(root.Platform().Visor)
	head, err := st.Statement(vm)
	if err != nil {
		return nil, fmt.Errorf("trusted configuration %s: %w", dir, err)
	}
	log.Info("trusted configuration", "config_state", dir, "anchor", anchor, "signer", head.Signer.String(),
		"seq", head.Seq, "version", head.Version, "visor_listed", head.VisorListed)
	if head.Seq > 0 && !head.VisorListed {
		log.Warn("this visor is not listed in the active configuration's visors: it serves no secret sealed to a name under a signer",
			"visor", vm.String(), "version", head.Version)
	}
	return st, nil
}

// availableEngines lists the engines this build has, in preference order, each with its
// constructor. An engine whose constructor fails with engine.ErrNotSupported is not offered.
func availableEngines(cfg Config) []namedEngine {
	return append([]namedEngine{{"wasm", func() (engine.Engine, error) {
		return wasm.New(wasm.WithCacheDir(filepath.Join(cfg.StateDir, "wasm-cache")))
	}}}, namedEngine{"kvm", func() (engine.Engine, error) { return kvm.New() }})
}

type namedEngine struct {
	name string
	open func() (engine.Engine, error)
}

func openEngines(cfg Config, log *slog.Logger) (_ []engine.Engine, notOffered map[string]error, _ error) {
	want := map[string]bool{}
	for _, n := range cfg.Engines {
		want[n] = true
	}
	var out []engine.Engine
	notOffered = map[string]error{}
	for _, ne := range availableEngines(cfg) {
		if len(want) > 0 && !want[ne.name] {
			notOffered[ne.name] = errors.New(`left out by the configuration's "engines"`)
			continue
		}
		delete(want, ne.name)
		e, err := ne.open()
		if errors.Is(err, engine.ErrNotSupported) {
			log.Warn("engine not offered", "engine", ne.name, "err", err)
			notOffered[ne.name] = err
			continue
		}
		if err != nil {
			for _, o := range out {
				o.Close(context.Background())
			}
			return nil, nil, fmt.Errorf("engine %s: %w", ne.name, err)
		}
		out = append(out, e)
	}
	for n := range want {
		return nil, nil, fmt.Errorf("engine %q is not available in this build", n)
	}
	if len(out) == 0 {
		return nil, nil, errors.New("no engine is available")
	}
	return out, notOffered, nil
}

// notifySystemd implements the sd_notify protocol (Type=notify units): one datagram to
// $NOTIFY_SOCKET. Without it (not under systemd) it does nothing.
func notifySystemd(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
