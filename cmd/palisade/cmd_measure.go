package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/pal"
)

func init() {
	register(&command{
		name:    "measure",
		summary: "compute the measurement of a PAL image, an executable, a directory tree or a palisaded build, offline",
		usage:   "FILE|DIR [--kind pal|file|tree|visor] [--visor-config FILE] [-q]",
		run:     runMeasure,
	})
}

func runMeasure(_ context.Context, args []string) error {
	c := commands["measure"]
	fs := newFlags(c)
	kind := fs.String("kind", "", "pal (Wasm or ELF PAL image), file (an application executable), tree (a directory) or visor (a palisaded executable: the visor measurement palisade verify --visor expects); default: tree for a directory, pal for a valid PAL image, file otherwise")
	visorConfig := fs.String("visor-config", "", "with --kind visor: the configuration FILE palisaded is started with (--config), whose exact bytes the visor measurement covers; default: none")
	quiet := fs.Bool("q", false, "print only the measurement")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want one FILE or DIR")
	}
	path := pos[0]
	if *visorConfig != "" && *kind != "visor" {
		return usageErrorf("--visor-config goes with --kind visor")
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	k := *kind
	if k == "" {
		switch {
		case st.IsDir():
			k = "tree"
		default:
			// A static ELF can be both a PAL image and an executable: say which one was
			// measured so the administrator can ask for the other.
			k = "file"
			if b, err := os.ReadFile(path); err == nil {
				if _, err := pal.Parse(b); err == nil {
					k = "pal"
					if !*quiet {
						fmt.Fprintln(os.Stderr, "palisade measure: measured as a PAL image (use --kind file for an application executable)")
					}
				}
			}
		}
	}
	var m [32]byte
	engine := "-"
	switch k {
	case "pal":
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		img, err := pal.Parse(b)
		if err != nil {
			return err
		}
		m = img.Measurement
		engine = map[pal.Kind]string{pal.KindWasm: "wasm", pal.KindELF: "kvm"}[img.Kind]
	case "file":
		m, err = config.MeasureFile(path)
	case "tree":
		m, err = config.MeasureTree(path)
	case "visor":
		m, err = measureVisor(path, *visorConfig)
	default:
		return usageErrorf("--kind %q: want pal, file, tree or visor", k)
	}
	if err != nil {
		return err
	}
	if *quiet {
		fmt.Printf("%x\n", m)
		return nil
	}
	fmt.Printf("kind:        %s\nengine:      %s\nmeasurement: %x\npath:        %s\n", k, engine, m, path)
	return nil
}

// measureVisor is the visor measurement of the palisaded executable exe started with the
// configuration file cfg ("": none), as palisaded measures itself (attest.MeasureVisor):
// what a relying party passes to palisade verify --visor, computed from the build and the
// configuration it trusts rather than read from the daemon it is checking.
func measureVisor(exe, cfg string) ([32]byte, error) {
	var raw []byte
	if cfg != "" {
		b, err := os.ReadFile(cfg)
		if err != nil {
			return [32]byte{}, err
		}
		raw = b
	}
	f, err := os.Open(exe)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return [32]byte{}, err
	} else if !st.Mode().IsRegular() {
		return [32]byte{}, fmt.Errorf("measure visor %s: not a regular file", exe)
	}
	return attest.MeasureVisor(f, raw)
}

// cfgParse parses flags that may come before or after positional arguments (parseArgs). With
// dashdash, everything after the first "--" is returned apart, untouched (a command to run);
// without, it is positional.
func cfgParse(fs *flag.FlagSet, args []string, dashdash bool) (pos, rest []string, err error) {
	pos, rest, _, err = parseArgsDashDash(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageErrorf("%v", err)
	}
	if !dashdash {
		return append(pos, rest...), nil, nil
	}
	return pos, rest, nil
}
