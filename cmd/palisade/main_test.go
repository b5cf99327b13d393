package main

import "testing"

// TestExitCodes checks the CLI's contract: 0 for success and help, 2 for bad usage.
func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, 0},
		{[]string{"help"}, 0},
		{[]string{"help", "run"}, 0},
		{[]string{"help", "demo"}, 0},
		{[]string{"help", "nosuch"}, 2},
		{[]string{"nosuch"}, 2},
		{[]string{"run"}, 2},                   // no PAL named
		{[]string{"run", "a", "b"}, 2},         // two PALs named
		{[]string{"run", "--no-such-flag"}, 2}, // unknown flag
		{[]string{"demo"}, 2},                  // no demo named
		{[]string{"demo", "nosuch"}, 2},
		{[]string{"run", "-h"}, 0},
	}
	for _, tt := range tests {
		flagUsageShown = false
		if got := run(tt.args); got != tt.want {
			t.Errorf("palisade %q exited %d, want %d", tt.args, got, tt.want)
		}
	}
}
