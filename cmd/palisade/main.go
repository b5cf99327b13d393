// Command palisade is the Palisade command-line tool: run and measure PALs, talk to the
// palisaded daemon, verify evidence, manage trusted configurations, run the demos and the
// benchmark.
//
// Each subcommand lives in its own file and registers itself in init with register.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string // one line, shown in `palisade help`
	usage   string // the arguments, shown after "palisade NAME"
	// run executes the command; args are what follows the command name. It parses its flags
	// with parseArgs (flags anywhere, flags.go) and returns flag.ErrHelp for -h/--help (exit
	// status 0), an error wrapping errUsage for bad usage (2), any other error for failure
	// (the status exitCode gives it, exitcode.go).
	run func(ctx context.Context, args []string) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("palisade: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

var errUsage = errors.New("usage")

// usageErrorf reports bad usage of a command.
func usageErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// flagUsageShown records that a flag set printed its usage: the flag package does that when
// parsing fails (and for -h), so run can tell bad flags (exit status 2) from failures.
var flagUsageShown bool

// helpAsked records that the command line asks for help (-h, -help or --help before any
// "--"), so that a usage message printed outside parseArgs ("palisade pal -h", or a command
// that parses its flags itself) goes to standard output.
var helpAsked bool

// newFlags makes the flag set of a command with a usage message that fits the tool. Its
// usage goes to standard output when the command line asks for help, else to standard error
// (usageOutput); parseArgs decides exactly for the usage it has the flag package print.
func newFlags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet("palisade "+c.name, flag.ContinueOnError)
	fs.SetOutput(usageOutput{})
	fs.Usage = func() {
		flagUsageShown = true
		fmt.Fprintf(fs.Output(), "usage: palisade %s %s\n\n%s\n", c.name, c.usage, c.summary)
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(fs.Output(), "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			return helpFor(args[1])
		}
		printHelp()
		return 0
	}
	if args[0] == privateDaemonCommand {
		return runPrivateDaemon(args[1:])
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "palisade: unknown command %q (see 'palisade help')\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	flagUsageShown = false
	helpAsked = asksHelp(args[1:])
	err := c.run(ctx, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case flagUsageShown: // the flag package has printed the error and the usage
		return 2
	case errors.Is(err, errUsage) && asksHelp(args[1:]):
		// A command that takes a sub-command may refuse "-h" in the sub-command's place (or
		// "SUB -h" before SUB's flag set exists): the user asked for help, so help it is.
		fmt.Fprintf(os.Stdout, "usage: palisade %s %s\n\n%s\n(%s)\n", c.name, c.usage, c.summary,
			strings.TrimPrefix(err.Error(), "usage: "))
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "palisade %s: %v\nusage: palisade %s %s\n", c.name,
			strings.TrimPrefix(err.Error(), "usage: "), c.name, c.usage)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "palisade %s: %v\n", c.name, err)
		code, _ := exitCode(err)
		return code
	}
}

// asksHelp reports whether args hold -h, -help or --help before any "--".
func asksHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// helpFor prints the help of one command: what its own -h prints, or, for commands without
// flags of their own (those taking a sub-command), their usage line and what -h told them.
func helpFor(name string) int {
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "palisade: unknown command %q (see 'palisade help')\n", name)
		return 2
	}
	helpAsked = true
	err := c.run(context.Background(), []string{"-h"})
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Printf("usage: palisade %s %s\n\n%s\n", c.name, c.usage, c.summary)
		if errors.Is(err, errUsage) {
			fmt.Println(strings.TrimPrefix(err.Error(), "usage: "))
		}
	}
	return 0
}

func printHelp() {
	fmt.Println("palisade: run security-sensitive code (PALs) isolated, with a micro-TPM each.")
	fmt.Println("\nusage: palisade COMMAND [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Println("\n'palisade help COMMAND' or 'palisade COMMAND -h' shows a command's flags.")
}
