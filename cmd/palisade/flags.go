package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strings"
)

// The command line follows the convention of git, docker and kubectl: flags may come before,
// between and after positional arguments (`palisade run PAL --input FILE`), "--" ends the
// flags, and -h / --help shows a command's usage and exits 0. The standard flag package stops
// at the first argument that is not a flag, so every command parses its flag set through
// parseArgs, which puts the flags first (as GNU getopt permutes argv) and then lets the flag
// package do the parsing proper. Why not spf13/cobra or pflag: docs/decisions.md.

// boolFlag is how the flag package marks flags that take no value (flag.boolFlag).
type boolFlag interface{ IsBoolFlag() bool }

// splitArgs separates args into the flags (each with its value when the value is a separate
// argument), the positional arguments before a "--", and the arguments after it (dashdash
// reports whether there was one). It decides from fs alone which flags take a value:
//   - "-" alone is positional (standard input, by the tool's convention);
//   - "-name=value" and "--name=value" carry their value;
//   - a boolean flag never takes the next argument ("--flag=false" to unset it);
//   - any other flag fs defines takes the next argument as its value, whatever it looks like
//     ("--data --" passes the string "--"), exactly as fs.Parse will read it;
//   - a flag fs does not define (a typo, or -h/-help/--help) is left for fs.Parse to report.
func splitArgs(fs *flag.FlagSet, args []string) (flags, pos, rest []string, dashdash bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, pos, args[i+1:], true
		case len(a) < 2 || a[0] != '-':
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimPrefix(a[1:], "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, ok := f.Value.(boolFlag); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, pos, nil, false
}

// parseArgs parses args into fs with flags anywhere (splitArgs) and returns the positional
// arguments in their order, those after a "--" included. Errors are the flag package's: it
// has printed the problem and the usage (flagUsageShown), and -h/--help gives flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, rest, _, err := parseArgsDashDash(fs, args)
	return append(pos, rest...), err
}

// parseArgsDashDash is parseArgs for commands that take a command line of their own after
// "--" (palisade exec): it returns the positional arguments before "--" and, apart, the
// arguments after it, untouched.
//
// The usage the flag package prints goes to standard output when it was asked for (-h:
// flag.ErrHelp), as the command's output, and to standard error with a parse error. Any parse
// error counts as bad usage (exit status 2, flagUsageShown), whatever fs.Usage does.
func parseArgsDashDash(fs *flag.FlagSet, args []string) (pos, rest []string, dashdash bool, err error) {
	flags, pos, rest, dashdash := splitArgs(fs, args)
	out := fs.Output()
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	err = fs.Parse(flags)
	fs.SetOutput(out)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Stdout.Write(usage.Bytes())
		} else {
			os.Stderr.Write(usage.Bytes())
			flagUsageShown = true
		}
		return nil, nil, false, err
	}
	// splitArgs reads values as fs.Parse does, so nothing is left over; should the two ever
	// disagree, what is left is positional rather than lost.
	return append(fs.Args(), pos...), rest, dashdash, nil
}

// usageOutput writes a usage message to standard output when the command line asks for help
// (helpAsked), else to standard error; it looks at os.Stdout and os.Stderr when it writes (tests
// replace them).
type usageOutput struct{}

func (usageOutput) Write(p []byte) (int, error) {
	if helpAsked {
		return os.Stdout.Write(p)
	}
	return os.Stderr.Write(p)
}

// parseInterspersed is parseArgs under the name the pal and attest commands use.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	return parseArgs(fs, args)
}
