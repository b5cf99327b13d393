package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/kvm"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
)

// defaultStateDir is where the embedded visor keeps its development root of trust, so that
// data sealed by one `palisade run` can be unsealed by the next.
func defaultStateDir() string {
	if d := os.Getenv("PALISADE_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "palisade")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "palisade")
	}
	return filepath.Join(os.TempDir(), "palisade-state")
}

// selfMeasurement is the visor measurement reported by the embedded visor in "none" mode:
// this executable with an empty configuration, measured as palisaded measures itself
// (docs/attestation.md). Without a TPM nothing vouches for it.
func selfMeasurement() (utpm.Digest, error) {
	exe, err := os.Executable()
	if err != nil {
		return utpm.Digest{}, err
	}
	f, err := os.Open(exe)
	if err != nil {
		return utpm.Digest{}, err
	}
	defer f.Close()
	return tpm.MeasureVisor(f, nil)
}

// openEngines opens every engine this machine supports. An engine that is not supported here
// is skipped unless it is the one the user asked for.
func openEngines(ctx context.Context, want string) ([]engine.Engine, error) {
	var engs []engine.Engine
	for _, o := range engineOpeners {
		e, err := o.open(ctx)
		if err != nil {
			if errors.Is(err, engine.ErrNotSupported) && want != o.name {
				continue
			}
			for _, e := range engs {
				e.Close(ctx)
			}
			return nil, fmt.Errorf("engine %s: %w", o.name, err)
		}
		engs = append(engs, e)
	}
	return engs, nil
}

type engineOpener struct {
	name string
	open func(context.Context) (engine.Engine, error)
}

// engineOpeners lists the engines in order of preference; engines_*.go files add to it.
var engineOpeners = []engineOpener{
	{"wasm", func(ctx context.Context) (engine.Engine, error) {
		var opts []wasm.Option
		if d := compileCacheDir(); d != "" {
			opts = append(opts, wasm.WithCacheDir(d))
		}
		return wasm.New(opts...)
	}},
	{"kvm", func(ctx context.Context) (engine.Engine, error) { return kvm.New() }},
}

// compileCacheDir keeps compiled Wasm across runs (a Go PAL compiles in ~1.5 s cold, ~50 ms
// from the cache). The cache is keyed by content and holds no secrets.
func compileCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "palisade", "wasm")
	}
	return ""
}

// embedded is a visor running inside this process with the development root of trust.
type embedded struct {
	*visor.Visor
	engines []engine.Engine
	root    *none.Root
}

func openEmbedded(ctx context.Context, stateDir, wantEngine string, verbose bool) (*embedded, error) {
	self, err := selfMeasurement()
	if err != nil {
		return nil, fmt.Errorf("measuring this executable: %w", err)
	}
	root, err := none.Open(stateDir, self)
	if err != nil {
		return nil, fmt.Errorf("root of trust: %w", err)
	}
	engs, err := openEngines(ctx, wantEngine)
	if err != nil {
		root.Close()
		return nil, err
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	v, err := visor.New(visor.Config{Root: root, Engines: engs, Logger: log})
	if err != nil {
		root.Close()
		return nil, err
	}
	return &embedded{Visor: v, engines: engs, root: root}, nil
}

func (e *embedded) Close(ctx context.Context) error {
	err := e.Visor.Close(ctx)
	for _, eng := range e.engines {
		err = errors.Join(err, eng.Close(ctx))
	}
	return errors.Join(err, e.root.Close())
}

// identityKey narrows a parsed identity public key to ECDSA (the only kind the µTPM uses).
func identityKey(pub any) *ecdsa.PublicKey {
	k, _ := pub.(*ecdsa.PublicKey)
	return k
}
