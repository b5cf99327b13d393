package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docCommand is one `palisade …` command line found in a code block of the documentation.
type docCommand struct {
	where string   // FILE:LINE
	words []string // after "palisade"
}

// shellEnd ends a command line in a code block: a pipe, a redirection, a list operator, the end
// of a command substitution, or a comment.
var shellEnd = regexp.MustCompile(`\s(\||>|<|;|&&|\|\||#)|\)|\s\\$`)

// docCommandStart finds "palisade" as a command word: at the start of a line (after a "$ "
// prompt or "sudo"), in a command substitution, or after a pipe or list operator — not
// "palisaded", "palisade-…", ".../cmd/palisade@…" or an argument such as a group's name.
var docCommandStart = regexp.MustCompile(`(?:^\s*(?:\$\s+)?(?:sudo\s+)?|\$\(|[|;&]\s*)palisade\s`)

// substitution is a command substitution inside a command line: one word of it.
var substitution = regexp.MustCompile(`\$\([^)]*\)`)

// inlineCommand is a code span of prose that holds a command: `palisade …`.
var inlineCommand = regexp.MustCompile("`palisade ([^`|>]*)")

// docCommands returns the `palisade` command lines of the code blocks (fenced, or indented by
// four spaces) of README.md and docs/*.md, and the code spans of their prose that start with "palisade ". A line of a block that starts with "[" or "-"
// continues the command of the line before it (usage lines wrapped in the docs).
func docCommands(t *testing.T) []docCommand {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	var cmds []docCommand
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(f, "../../")
		var fenced, prevBlank bool
		inIndented := false
		last := -1 // index in cmds of the command on the previous code line, or -1
		for i, line := range strings.Split(string(b), "\n") {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "```") {
				fenced = !fenced
				last = -1
				continue
			}
			switch {
			case fenced:
			case strings.HasPrefix(line, "    ") && (prevBlank || inIndented):
				inIndented = true
			default:
				inIndented = false
			}
			prevBlank = trimmed == ""
			if !fenced && !inIndented {
				last = -1
				// Inline code that is a command: `palisade …`.
				for _, m := range inlineCommand.FindAllStringSubmatch(line, -1) {
					cmds = append(cmds, docCommand{where: name + ":" + strconv.Itoa(i+1), words: docWords(m[1])})
				}
				continue
			}
			if last >= 0 && (strings.HasPrefix(trimmed, "[") || strings.HasPrefix(trimmed, "-")) {
				cmds[last].words = append(cmds[last].words, docWords(trimmed)...)
				continue
			}
			last = -1
			if i := strings.Index(line, " #"); i >= 0 {
				line = line[:i] // a comment
			}
			for _, loc := range docCommandStart.FindAllStringIndex(line, -1) {
				rest := substitution.ReplaceAllString(line[loc[1]:], "SUBST")
				if e := shellEnd.FindStringIndex(rest); e != nil {
					rest = rest[:e[0]]
				}
				cmds = append(cmds, docCommand{where: name + ":" + strconv.Itoa(i+1), words: docWords(rest)})
				last = len(cmds) - 1
			}
		}
	}
	return cmds
}

// docWords splits a documented command line into words, dropping the brackets and ellipses
// of usage notation.
func docWords(s string) []string {
	s = strings.NewReplacer("[", " ", "]", " ", "…", " ", "...", " ").Replace(s)
	return strings.Fields(s)
}

// flagsOf returns the flags that `palisade ARGS -h` lists.
func flagsOf(t *testing.T, args []string) map[string]bool {
	t.Helper()
	_, out, errOut := capture(t, append(append([]string{}, args...), "-h")...)
	flags := map[string]bool{"h": true, "help": true}
	for _, m := range regexp.MustCompile(`(?m)^  -([A-Za-z0-9-]+)`).FindAllStringSubmatch(out+errOut, -1) {
		flags[m[1]] = true
	}
	return flags
}

// TestDocsCommands checks every `palisade …` command line in the code blocks of README.md and
// docs/*.md against the command line tool: the command and sub-command exist and every flag
// it shows is one that command takes. A renamed flag or command must take its documentation
// with it.
func TestDocsCommands(t *testing.T) {
	cmds := docCommands(t)
	if len(cmds) < 50 {
		t.Fatalf("found only %d palisade command lines in the docs: the extraction is broken", len(cmds))
	}
	flagSets := map[string]map[string]bool{}
	for _, dc := range cmds {
		if len(dc.words) == 0 {
			continue
		}
		if dc.words[0] == "help" || dc.words[0] == "COMMAND" || dc.words[0] == privateDaemonCommand {
			continue
		}
		for _, name := range strings.Split(dc.words[0], "|") {
			c, ok := commands[name]
			if !ok {
				t.Errorf("%s: palisade %s: no such command", dc.where, name)
				continue
			}
			bases := [][]string{{c.name}}
			words := dc.words[1:]
			subs := subcommands[name]
			if name == "demo" {
				subs = nil
				for d := range demos {
					subs = append(subs, d)
				}
			}
			if len(subs) > 0 && subs[0] != "" {
				if len(words) == 0 || strings.HasPrefix(words[0], "-") {
					continue // the command alone, as in "palisade key" or a usage with flags only
				}
				bases = nil
				for _, sub := range strings.Split(words[0], "|") {
					found := false
					for _, s := range subs {
						f := strings.Fields(s)
						if f[0] == sub {
							found = true
							if len(f) > 1 && len(words) > 1 && strings.Contains(s, words[1]) {
								bases = append(bases, []string{name, f[0], f[1]})
							} else if len(f) == 1 {
								bases = append(bases, []string{name, sub})
							}
						}
					}
					if !found && sub == strings.ToLower(sub) {
						t.Errorf("%s: palisade %s %s: no such sub-command", dc.where, name, sub)
					}
				}
				words = words[1:]
			}
			for _, base := range bases {
				key := strings.Join(base, " ")
				if flagSets[key] == nil {
					flagSets[key] = flagsOf(t, base)
				}
				for _, w := range words {
					if w == "--" {
						break
					}
					if len(w) < 2 || w[0] != '-' || w == "-" {
						continue
					}
					f := strings.TrimLeft(w, "-")
					if i := strings.IndexAny(f, "=|,"); i >= 0 {
						f = f[:i]
					}
					if f == "" || !regexp.MustCompile(`^[a-z][a-z0-9-]*$`).MatchString(f) {
						continue
					}
					if !flagSets[key][f] {
						t.Errorf("%s: palisade %s: no flag --%s (documented as %q)", dc.where, key, f, strings.Join(dc.words, " "))
					}
				}
			}
		}
	}
}
