package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestCommandLine: a bad command line exits 2, said once (the flag package reports a bad flag
// with the usage; palisaded does not repeat it), as palisade does (docs/cli.md); -h exits 0.
// A failure that is no usage error (here a bad --rot value) stays 1.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args    []string
		status  int
		message string // what palisaded itself prints; "" for nothing
	}{
		{[]string{"--no-such-flag"}, 2, ""},
		{[]string{"--state-dir"}, 2, ""},
		{[]string{"stray", "--rot", "none"}, 2, `palisaded: unexpected arguments ["stray" "--rot" "none"] (palisaded takes only flags)` + "\n"},
		{[]string{"-h"}, 0, ""},
		{[]string{"--rot", "bogus", "--state-dir", dir + "/state", "--socket", dir + "/run/s.sock"}, 1, `palisaded: --rot "bogus": want tpm:/dev/tpmrm0, swtpm:PATH or none` + "\n"},
	} {
		// The flag package's own report goes to its output (standard error); keep it quiet.
		stderr := os.Stderr
		os.Stderr, _ = os.Open(os.DevNull)
		err := run(tt.args)
		os.Stderr = stderr
		var w bytes.Buffer
		if got := exitStatus(err, &w); got != tt.status || w.String() != tt.message {
			t.Errorf("palisaded %s: status %d, printed %q; want %d, %q", strings.Join(tt.args, " "), got, w.String(), tt.status, tt.message)
		}
	}
}
