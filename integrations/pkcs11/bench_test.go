package pkcs11_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/p11web"
)

// TestBenchNginx measures nginx doing full TLS 1.2 handshakes (ab -f TLS1.2, a new connection
// per request, no session reuse) with its key in a file, in Palisade and in SoftHSM2, in
// paired rounds (each round runs every mode once, in rotated order): requests per second and
// CPU per request (nginx's processes, plus palisaded's for Palisade). Not run by default:
//
//	PALISADE_PKCS11_BENCH=1 go test -run TestBenchNginx -v ./integrations/pkcs11
//
// PALISADE_PKCS11_BENCH_N sets the requests per run (default 400).
func TestBenchNginx(t *testing.T) {
	if os.Getenv("PALISADE_PKCS11_BENCH") == "" {
		t.Skip("set PALISADE_PKCS11_BENCH=1 to run the web server benchmark")
	}
	need(t, "nginx", "ab", "softhsm2-util")
	e := setup(t)
	n := 400
	if v, err := strconv.Atoi(os.Getenv("PALISADE_PKCS11_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	latencyBin := filepath.Join(e.dir, "sign_latency")
	if out, err := exec.Command("cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
		"-o", latencyBin, "bench/sign_latency.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc sign_latency: %v\n%s", err, out)
	}
	var lat strings.Builder
	lat.WriteString("\n| key | module | C_Sign median µs | mean µs |\n|---|---|---:|---:|\n")
	// The module's log opens a file per signature: off while measuring.
	noLog := []string{"PALISADE_PKCS11_LOG="}
	levels := []int{1, 4, 16}
	const rounds = 3
	type cell struct{ rps, cpu []float64 }
	results := map[string]*cell{}
	var order []string
	for _, alg := range []string{"ecdsa-p256", "rsa-2048"} {
		pkey := keyEC
		if alg == "rsa-2048" {
			pkey = keyRSA
		}
		fileKeyPath, fileCert, err := p11web.FileKey(e.dir, "bench-"+alg, alg)
		if err != nil {
			t.Fatal(err)
		}
		hsmEnv := softHSM(t, e, alg, fileKeyPath)
		modes := []struct {
			name string
			host p11web.VHost
			env  []string
			daem bool
		}{
			{"file", p11web.VHost{Port: freePort(t), Cert: fileCert, Key: fileKeyPath}, noLog, false},
			{"palisade", p11web.VHost{Port: freePort(t), Cert: e.path(pkey + ".crt"), Key: "pkcs11:token=palisade;object=" + pkey + ";type=private"}, noLog, true},
			{"softhsm2", p11web.VHost{Port: freePort(t), Cert: fileCert, Key: "pkcs11:token=bench;object=k;type=private;pin-value=1234"}, append(hsmEnv, noLog...), false},
		}
		kind := map[string]string{"ecdsa-p256": "ecdsa", "rsa-2048": "rsa"}[alg]
		for _, l := range []struct {
			name, module, label string
			env, args           []string
		}{
			{"palisade", e.module, pkey, noLog, nil},
			{"softhsm2", p11web.SoftHSMModule, "k", append(hsmEnv, noLog...), []string{"1234"}},
		} {
			out := strings.Fields(e.run(t, l.env, latencyBin, append([]string{l.module, l.label, kind, "200"}, l.args...)...))
			if len(out) != 2 {
				t.Fatalf("sign_latency: %q", out)
			}
			fmt.Fprintf(&lat, "| %s | %s | %s | %s |\n", alg, l.name, out[0], out[1])
		}
		servers := make([]*webServer, len(modes))
		for i, m := range modes {
			servers[i] = startWebServer(t, e, "nginx-bench-"+alg+"-"+m.name, []p11web.VHost{m.host}, m.env...)
		}
		for r := 0; r < rounds; r++ {
			for _, c := range levels {
				for j := range modes {
					i := (j + r) % len(modes) // rotate which mode goes first
					m := modes[i]
					pids := servers[i].pids(t)
					if m.daem {
						pids = append(pids, e.d.cmd.Process.Pid)
					}
					cpu0 := cpuOf(t, pids)
					rps, err := p11web.AB(context.Background(), m.host.Port, c, n)
					if err != nil {
						t.Fatalf("%s %s c=%d: %v\n%s", alg, m.name, c, err, servers[i])
					}
					cpu := cpuOf(t, pids) - cpu0
					key := fmt.Sprintf("%s|%s|%d", alg, m.name, c)
					if results[key] == nil {
						results[key] = &cell{}
						order = append(order, key)
					}
					results[key].rps = append(results[key].rps, rps)
					results[key].cpu = append(results[key].cpu, float64(cpu.Microseconds())/float64(n))
				}
			}
		}
		for _, s := range servers {
			s.stop()
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| key | mode | concurrency | requests/s (median of %d) | CPU µs/request | ÷ file |\n|---|---|---:|---:|---:|---:|\n", rounds)
	for _, key := range order {
		f := strings.Split(key, "|")
		c := results[key]
		file := results[f[0]+"|file|"+f[2]]
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.0f | %.2f |\n", f[0], f[1], f[2], medianOf(c.rps), medianOf(c.cpu),
			medianOf(c.rps)/medianOf(file.rps))
	}
	t.Log(b.String() + lat.String())
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// cpuOf is the user and system CPU time the processes pids have used.
func cpuOf(t *testing.T, pids []int) time.Duration {
	t.Helper()
	d, err := p11web.CPUOf(pids)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// softHSM makes a SoftHSM2 token "bench" holding the key of keyFile (PKCS#8 PEM), running
// softhsm2-util in the test's environment, and returns the environment a web server needs to
// use it through OpenSSL's engine (p11web.SoftHSM).
func softHSM(t *testing.T, e *env, alg, keyFile string) []string {
	t.Helper()
	env, err := p11web.SoftHSM(e.path("softhsm-"+alg), keyFile, func(env []string, prog string, args ...string) error {
		if out, err := e.try(env, prog, args...); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}
