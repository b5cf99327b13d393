package main

import "testing"

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"bench"}, {"bench", "--out", t.TempDir(), "--sections", "nope"}, {"bench", "--out", t.TempDir(), "--levels", "0"}} {
		if code, _, _ := capture(t, args...); code != 2 {
			t.Errorf("%v: status %d, want 2", args, code)
		}
	}
}
