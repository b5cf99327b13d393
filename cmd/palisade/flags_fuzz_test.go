package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// FuzzSplitArgs checks splitArgs against the flag package on arbitrary command lines (the
// arguments are the input split at NUL bytes): every argument lands in exactly one of flags,
// positional or after "--", in order, and whenever fs.Parse accepts the flags it consumes all
// of them, so no argument is silently dropped or reinterpreted.
func FuzzSplitArgs(f *testing.F) {
	for _, s := range []string{
		"run\x00PAL\x00--input\x00FILE",
		"-b\x00a\x00--\x00-b\x00--s",
		"--s\x00--\x00a",
		"-s=v\x00-\x00-n\x00-1",
		"--b=false\x00x\x00-h",
		"---s\x00--=x\x00-s",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Bool("b", false, "")
		fs.String("s", "", "")
		fs.Int("n", 0, "")
		flags, pos, rest, dd := splitArgs(fs, args)
		n := len(flags) + len(pos) + len(rest)
		if dd {
			n++
		}
		if n != len(args) {
			t.Fatalf("splitArgs(%q) = %q %q %q %v: %d arguments, want %d", args, flags, pos, rest, dd, n, len(args))
		}
		// Order is kept: the positional arguments are a subsequence of args before "--".
		i := 0
		for _, a := range args {
			if i < len(pos) && a == pos[i] {
				i++
			}
		}
		if i != len(pos) {
			t.Fatalf("splitArgs(%q): positional %q out of order", args, pos)
		}
		if err := fs.Parse(flags); err == nil && fs.NArg() != 0 {
			t.Fatalf("splitArgs(%q): fs.Parse(%q) left %q unparsed", args, flags, fs.Args())
		}
	})
}
