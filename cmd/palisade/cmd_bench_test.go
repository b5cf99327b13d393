package main

import "testing"

// TestBenchUsage: a bad count, duration, level or section is bad usage (status 2) before any
// benchmark runs, never taken for "not given" or silently ignored.
func TestBenchUsage(t *testing.T) {
	out := t.TempDir()
	for _, args := range [][]string{
		{"bench"},
		{"bench", "--out", out, "--sections", "nope"},
		{"bench", "--out", out, "--levels", "0"},
		{"bench", "--out", out, "--agent-signs", "-1"},
		{"bench", "--out", out, "--openssh-logins", "-2"},
		{"bench", "--out", out, "--web-requests", "x"},
		{"bench", "--out", out, "--ab", "-5"},
		{"bench", "--out", out, "--point", "-1s"},
	} {
		if code, _, _ := capture(t, args...); code != 2 {
			t.Errorf("%v: status %d, want 2", args, code)
		}
	}
}
