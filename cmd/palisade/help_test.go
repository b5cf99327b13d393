package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestHelpGoesToStdout: a usage message that was asked for (-h, --help, palisade help CMD) is
// the command's output, on standard output, so that `palisade help bench | less` and
// `palisade pal call -h | grep json` work; nothing goes to standard error.
func TestHelpGoesToStdout(t *testing.T) {
	for _, base := range commandLines(t) {
		for _, args := range [][]string{
			append(append([]string{}, base...), "-h"),
			append(append([]string{}, base...), "--help"),
			{"help", base[0]},
		} {
			code, out, errOut := capture(t, args...)
			if code != 0 || !strings.Contains(out, "usage: palisade "+base[0]) || errOut != "" {
				t.Errorf("palisade %s: status %d, want 0 with the usage on stdout and nothing on stderr\nstdout:\n%s\nstderr:\n%s",
					strings.Join(args, " "), code, out, errOut)
			}
		}
	}
}

// TestBadFlagExitsTwo: an unknown flag or a bad flag value is bad usage on every command and
// sub-command (exit status 2, docs/cli.md), said once on standard error with the usage, and
// nothing on standard output.
func TestBadFlagExitsTwo(t *testing.T) {
	for _, base := range commandLines(t) {
		if len(base) == 1 && (len(subcommands[base[0]]) == 0 || subcommands[base[0]][0] != "") {
			continue // "palisade key --x": an unknown sub-command, tested elsewhere
		}
		args := append(append([]string{}, base...), "--no-such-flag")
		code, out, errOut := capture(t, args...)
		if code != exitUsage || out != "" || strings.Count(errOut, "flag provided but not defined") != 1 ||
			!strings.Contains(errOut, "usage: palisade "+base[0]) {
			t.Errorf("palisade %s: status %d, want %d with the error once and the usage on stderr\nstdout:\n%s\nstderr:\n%s",
				strings.Join(args, " "), code, exitUsage, out, errOut)
		}
	}
}

// flagLineRE is a flag's line in the usage the flag package prints: "  -name" and, for a flag
// that takes a value, one word naming the value.
// (The flag package puts the help of a one-letter boolean flag on the same line, after a tab.)
var flagLineRE = regexp.MustCompile(`^  -([A-Za-z0-9-]+)( [A-Za-z0-9_.]+)?$|^  -[A-Za-z0-9]\t`)

// TestFlagHelpLines: every flag of every command is listed as "-name [value]" with its help
// below, and says its default once. The flag package takes a back-quoted word of the help as
// the value's name (flag.UnquoteUsage), so `palisade passwd --dir` in a help text would list
// the flag as "-dir palisade passwd --dir"; and it appends "(default V)" to any help whose
// default is not the zero value, so a sentinel default (-1 for "not given") would be shown
// after the help's own words on the default.
func TestFlagHelpLines(t *testing.T) {
	for _, base := range commandLines(t) {
		_, out, errOut := capture(t, append(append([]string{}, base...), "-h")...)
		lines := strings.Split(out+errOut, "\n")
		inFlags := false
		for i, l := range lines {
			if l == "flags:" {
				inFlags = true
				continue
			}
			if !inFlags || l == "" || strings.HasPrefix(l, "    \t") || strings.HasPrefix(l, "\t") {
				continue
			}
			if !strings.HasPrefix(l, "  -") {
				continue
			}
			if !flagLineRE.MatchString(l) {
				t.Errorf("palisade %s -h: flag line %q is not \"-name [value]\"", strings.Join(base, " "), l)
				continue
			}
			var help strings.Builder
			for _, h := range lines[i+1:] {
				if !strings.HasPrefix(h, "    \t") {
					break
				}
				help.WriteString(h)
			}
			if n := strings.Count(help.String(), "(default"); n > 1 {
				t.Errorf("palisade %s -h: %s: the default is said %d times: %s", strings.Join(base, " "), strings.TrimSpace(l), n, help.String())
			}
		}
	}
}

// TestPalUsageListsFlags: the synopsis of "palisade pal" (its -h, and what a bad pal command
// line prints) names every flag of each sub-command, as docs/daemon.md's CLI section does.
func TestPalUsageListsFlags(t *testing.T) {
	usage := commands["pal"].usage
	for _, sub := range subcommands["pal"] {
		// The sub-command's line, and the lines that continue it (they start with "[").
		line := ""
	lines:
		for _, l := range strings.Split(usage, "\n") {
			l = strings.TrimSpace(l)
			switch {
			case strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(l, "palisade pal")), sub+" ") || l == "palisade pal "+sub:
				line = l
			case line != "" && strings.HasPrefix(l, "["):
				line += " " + l
			case line != "":
				break lines
			}
		}
		if line == "" {
			t.Errorf("palisade pal usage has no line for %s:\n%s", sub, usage)
			continue
		}
		for f := range flagsOf(t, []string{"pal", sub}) {
			if f == "h" || f == "help" || f == "socket" {
				continue
			}
			if !strings.Contains(line, "--"+f+" ") && !strings.Contains(line, "--"+f+"]") {
				t.Errorf("palisade pal usage for %s lacks --%s: %s", sub, f, line)
			}
		}
	}
}
