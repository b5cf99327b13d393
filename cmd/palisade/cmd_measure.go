package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/pal"
)

func init() {
	register(&command{
		name:    "measure",
		summary: "compute the measurement of a PAL image, an executable or a directory tree, offline",
		usage:   "FILE|DIR [--kind pal|file|tree] [-q]",
		run:     runMeasure,
	})
}

func runMeasure(_ context.Context, args []string) error {
	c := commands["measure"]
	fs := newFlags(c)
	kind := fs.String("kind", "", "pal (Wasm or ELF PAL image), file (an application executable) or tree (a directory); default: tree for a directory, pal for a valid PAL image, file otherwise")
	quiet := fs.Bool("q", false, "print only the measurement")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want one FILE or DIR")
	}
	path := pos[0]
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
	default:
		return usageErrorf("--kind %q: want pal, file or tree", k)
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
