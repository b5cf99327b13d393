package bench

import (
	"context"
	"os/exec"
	"testing"

	"github.com/palisade-project/palisade/examples/tlskey"
)

// TestABNoStall checks that the bench's ab cross-check measures the server, not the 40 ms
// delayed-ACK stall ab suffers over TLS 1.3 (docs/evaluation.md): one request at a time
// against a plain Go TLS server, ab must do far better than the 25 requests/s the stall allows
// (over TLS 1.3 it does 19–21/s on this machine, over TLS 1.2 hundreds).
func TestABNoStall(t *testing.T) {
	if _, err := exec.LookPath("ab"); err != nil {
		t.Skip("ab is not installed (apache2-utils)")
	}
	for _, alg := range []string{"ecdsa-p256", "rsa2048"} {
		key, err := plainKey(tlskey.Alg(alg))
		if err != nil {
			t.Fatal(err)
		}
		s, err := startHTTPS(alg, "plain", key, nil)
		if err != nil {
			t.Fatal(err)
		}
		rate, err := runAB(context.Background(), s.addr, 1, 40)
		s.close()
		if err != nil {
			t.Fatal(err)
		}
		// 40 ms per request is 25/s; 60/s leaves room for a loaded machine.
		if rate < 60 {
			t.Errorf("%s: ab did %.0f requests/s at concurrency 1: the delayed-ACK stall (want ≥ 60/s)", alg, rate)
		}
	}
}
