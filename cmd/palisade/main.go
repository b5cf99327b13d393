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
	// run executes the command; args are what follows the command name. It returns an error
	// wrapping errUsage for bad usage (exit status 2), any other error for failure (status 1).
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

// newFlags makes the flag set of a command with a usage message that fits the tool.
func newFlags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet("palisade "+c.name, flag.ContinueOnError)
	fs.Usage = func() {
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
			if c, ok := commands[args[1]]; ok {
				fs := newFlags(c)
				_ = c.run(context.Background(), []string{"-h"})
				_ = fs
				return 0
			}
		}
		printHelp()
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "palisade: unknown command %q (see 'palisade help')\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "palisade %s: %v\nusage: palisade %s %s\n", c.name,
			strings.TrimPrefix(err.Error(), "usage: "), c.name, c.usage)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "palisade %s: %v\n", c.name, err)
		return 1
	}
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
