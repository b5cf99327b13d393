package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/internal/proctest"
)

func metricsOf(t *testing.T, d *daemon) string {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLeanCallMatchesGRPC: a call over the lean protocol has the outcome of the same call
// over gRPC — result, error class and message — and goes through the same metrics.
func TestLeanCallMatchesGRPC(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, true)
	c := d.dial()
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{
		Name: "parity", Limits: client.Limits{Timeout: 300 * time.Millisecond, MaxInput: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	sentinels := []error{client.ErrNotFound, client.ErrPermission, client.ErrTimeout, client.ErrInputTooLarge, client.ErrInvalid, client.ErrInternal}
	class := func(err error) error {
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return s
			}
		}
		return err
	}
	for _, tc := range []struct {
		name, handle string
		input        []byte
		wantErr      error
	}{
		{"null", info.Handle, nil, nil},
		{"echo", info.Handle, []byte("ehello"), nil},
		{"status", info.Handle, []byte{'s', 7}, nil},
		{"timeout", info.Handle, []byte("l"), client.ErrTimeout},
		{"input too large", info.Handle, bytes.Repeat([]byte("e"), 101), client.ErrInputTooLarge},
		{"no such PAL", "pal-00000000000000ff", nil, client.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res [2]client.Result
			var errs [2]error
			for i, lean := range []bool{false, true} {
				c.UseLean(lean)
				res[i], errs[i] = c.Call(ctx, tc.handle, tc.input)
			}
			c.UseLean(true)
			if class(errs[0]) != tc.wantErr || class(errs[1]) != tc.wantErr {
				t.Fatalf("errors: gRPC %v, lean %v; want %v", errs[0], errs[1], tc.wantErr)
			}
			if errs[0] != nil && errs[0].Error() != errs[1].Error() {
				t.Fatalf("messages differ: gRPC %q, lean %q", errs[0], errs[1])
			}
			var e0, e1 *client.Error
			if errors.As(errs[0], &e0) && errors.As(errs[1], &e1) && (e0.Reason != e1.Reason || e0.Code != e1.Code) {
				t.Fatalf("gRPC %v/%s, lean %v/%s", e0.Code, e0.Reason, e1.Code, e1.Reason)
			}
			if res[0].Status != res[1].Status || !bytes.Equal(res[0].Output, res[1].Output) {
				t.Fatalf("results: gRPC %+v, lean %+v", res[0], res[1])
			}
		})
	}
	// Concurrent callers share the Client's pool of lean connections: each gets its own answer.
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				want := fmt.Sprintf("g%d-%d", g, i)
				res, err := c.Call(ctx, info.Handle, []byte("e"+want))
				if err != nil || string(res.Output) != want {
					t.Errorf("concurrent call %s: %q, %v", want, res.Output, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	m := metricsOf(t, d)
	for _, want := range []string{
		`palisade_lean_requests_total{op="call",code="OK"} 323`,
		`palisade_lean_requests_total{op="call",code="TIMEOUT"} 1`,
		`palisade_lean_requests_total{op="call",code="NOT_FOUND"} 1`,
		// The PAL's own counters see the calls of both protocols: 2 × 5, and the 320 above.
		`palisade_calls_total{pal="` + info.Handle + `",name="parity"} 330`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
}

// TestLeanKeySignMatchesGRPC: KeySign over the lean protocol has the outcome of KeySign over
// gRPC, and KeySigner's signatures (now lean) verify.
func TestLeanKeySignMatchesGRPC(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, true)
	c, ctx := d.dial(), context.Background()
	for _, o := range []client.KeyCreateOptions{
		{Name: "ec", Alg: client.AlgECDSAP256},
		{Name: "pinned", Alg: client.AlgEd25519, PIN: []byte("1234")},
	} {
		if _, err := c.KeyCreate(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	digest := sha256.Sum256([]byte("message"))
	for _, tc := range []struct {
		name, key    string
		scheme, hash uint16
		digest, pin  []byte
		wantErr      error
	}{
		{"ecdsa", "ec", signreq.SchemeECDSA, signreq.HashSHA256, digest[:], nil, nil},
		{"no such key", "nope", signreq.SchemeECDSA, signreq.HashSHA256, digest[:], nil, client.ErrNotFound},
		{"empty digest", "ec", signreq.SchemeECDSA, signreq.HashSHA256, nil, nil, client.ErrInvalid},
		{"PIN required", "pinned", signreq.SchemeEdDSA, signreq.HashNone, []byte("m"), nil, client.ErrPINRequired},
		{"PIN incorrect", "pinned", signreq.SchemeEdDSA, signreq.HashNone, []byte("m"), []byte("0000"), client.ErrPINIncorrect},
		{"PIN", "pinned", signreq.SchemeEdDSA, signreq.HashNone, []byte("m"), []byte("1234"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errs [2]error
			for i, lean := range []bool{false, true} {
				c.UseLean(lean)
				_, errs[i] = c.KeySign(ctx, tc.key, tc.scheme, tc.hash, tc.digest, tc.pin)
			}
			c.UseLean(true)
			for i, err := range errs {
				if (tc.wantErr == nil) != (err == nil) || (err != nil && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("%s: %v, want %v", []string{"gRPC", "lean"}[i], err, tc.wantErr)
				}
			}
			// (An incorrect PIN's message counts the tries left, one fewer the second time.)
			if errs[0] != nil && errs[0].Error() != errs[1].Error() && tc.wantErr != client.ErrPINIncorrect {
				t.Fatalf("messages differ: gRPC %q, lean %q", errs[0], errs[1])
			}
		})
	}
	ks, err := c.KeySigner(ctx, "ec")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := ks.Sign(nil, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(ks.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("KeySigner: %v, or the signature does not verify", err)
	}
	m := metricsOf(t, d)
	for _, want := range []string{
		`palisade_lean_requests_total{op="sign",code="OK"} 3`, // ecdsa, PIN, KeySigner
		`palisade_lean_requests_total{op="sign",code="KEY_NOT_FOUND"} 1`,
		`palisade_lean_requests_total{op="sign",code="PIN_REQUIRED"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
}

// TestLibpalisade builds clients/c and runs its test program, linked to the shared and to the
// static library, against a real palisaded: calls, keys, threads, fork, a daemon restart and
// a stop in the middle, every error path.
func TestLibpalisade(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the fork test drops to uid 65534: run as root")
	}
	build := t.TempDir()
	mk := []string{"-C", "../../clients/c", "BUILD=" + build, "check-build"}
	if f := os.Getenv("LIBPALISADE_CFLAGS"); f != "" { // e.g. -O1 -g -fsanitize=address,undefined
		mk = append(mk, "CFLAGS="+f, "LDFLAGS="+f)
	}
	if out, err := exec.Command("make", mk...).CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	dir := newDaemonDir(t)
	cfg := Config{SocketMode: "0666"} // the forked child runs as uid 65534
	d := startDaemon(t, dir, cfg, false)
	top := t // daemons restarted by a subtest outlive it
	c, ctx := d.dial(), context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{
		Name: "ctest", Limits: client.Limits{Timeout: 300 * time.Millisecond, MaxInput: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.KeyCreateOptions{
		{Name: "web", Alg: client.AlgECDSAP256},
		{Name: "pinned", Alg: client.AlgEd25519, PIN: []byte("1234")},
	} {
		if _, err := c.KeyCreate(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, prog := range []string{"test_palisade", "test_palisade_static"} {
		t.Run(prog, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(build, prog))
			cmd.Env = append(os.Environ(), "PALISADE_SOCKET="+d.socket, "T_HANDLE="+info.Handle,
				"T_KEY=web", "T_PIN_KEY=pinned", "T_CREATE_KEY=c-"+prog, "T_FAKE_DIR="+t.TempDir())
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var sigs, created []string
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				line := sc.Text()
				switch line {
				case "RESTART":
					d.stop()
					d = startDaemon(top, dir, cfg, false)
				case "STOP":
					d.stop()
				case "START":
					d = startDaemon(top, dir, cfg, false)
				case "FREEZE": // a daemon that hangs: stopped, its sockets still open
					if err := proctest.Freeze(d.cmd.Process.Pid); err != nil {
						t.Fatal(err)
					}
				case "THAW":
					d.cmd.Process.Signal(syscall.SIGCONT)
				default:
					if strings.HasPrefix(line, "SIG ") {
						sigs = append(sigs, line)
					} else if strings.HasPrefix(line, "CREATED ") {
						created = append(created, line)
					} else {
						t.Logf("test program: %s", line)
					}
					continue
				}
				fmt.Fprintln(stdin, "OK")
			}
			err = cmd.Wait()
			d.cmd.Process.Signal(syscall.SIGCONT) // never leave the daemon stopped
			t.Logf("%s stderr:\n%s", prog, stderr.String())
			if err != nil {
				t.Fatalf("%s: %v", prog, err)
			}
			if len(sigs) != 3 {
				t.Fatalf("%d signatures reported, want 3 (ECDSA, Ed25519, the created key's ECDSA)", len(sigs))
			}
			for _, s := range sigs {
				verifyReported(t, s)
			}
			// The keys palisade_key_create made are the caller's (uid 0), with the public key
			// it reported, as the gRPC API sees them; key_create is audited.
			if len(created) != 1 {
				t.Fatalf("%d keys reported created, want 1", len(created))
			}
			f := strings.Fields(created[0])
			if len(f) != 3 || f[1] != "c-"+prog {
				t.Fatalf("bad line %q", created[0])
			}
			for _, name := range []string{f[1], f[1] + "-ed"} {
				k, err := d.dial().KeyGet(ctx, name)
				if err != nil {
					t.Fatalf("KeyGet %s: %v", name, err)
				}
				if k.Owner != 0 || len(k.AllowUIDs) != 0 || k.HasPIN {
					t.Fatalf("%s: owner %d, shared with %v, PIN %v; want uid 0's own", name, k.Owner, k.AllowUIDs, k.HasPIN)
				}
				if name == f[1] && hex.EncodeToString(k.PublicDER) != f[2] {
					t.Fatalf("%s: public key %x over gRPC, %s from palisade_key_create", name, k.PublicDER, f[2])
				}
			}
			var audited bool
			for _, ev := range d.auditEvents() {
				if ev["event"] == "key_create" && ev["key"] == f[1] && ev["uid"] == float64(0) {
					audited = true
				}
			}
			if !audited {
				t.Fatalf("no key_create event for %s in the audit log", f[1])
			}
		})
	}
	// The refusals of the forked child running as uid 65534 are in the audit log.
	var callDenied, keyDenied bool
	for _, ev := range d.auditEvents() {
		uid, _ := ev["uid"].(float64)
		switch {
		case ev["event"] == "denied" && uid == 65534 && ev["op"] == "call" && ev["pal"] == info.Handle:
			callDenied = true
		case ev["event"] == "key_denied" && uid == 65534 && ev["key"] == "web":
			keyDenied = true
		}
	}
	if !callDenied || !keyDenied {
		t.Fatalf("audit log: call denial %v, key denial %v; want both", callDenied, keyDenied)
	}
}

// verifyReported checks a "SIG scheme pub msg sig" line of the C test with Go's crypto.
func verifyReported(t *testing.T, line string) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 5 {
		t.Fatalf("bad line %q", line)
	}
	var b [3][]byte
	for i := range b {
		var err error
		if b[i], err = hex.DecodeString(f[2+i]); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(b[0])
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, b[1], b[2])
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, b[1], b[2])
	}
	if !ok {
		t.Fatalf("signature of scheme %s with a %T does not verify", f[1], pub)
	}
}

func TestLeanSocketConfig(t *testing.T) {
	for _, tc := range []struct{ socket, lean, want string }{
		{"/run/palisade/palisade.sock", "", "/run/palisade/lean.sock"},
		{"/tmp/x/p.sock", "", "/tmp/x/lean.sock"},
		{"/run/palisade/palisade.sock", "none", ""},
		{"/run/palisade/palisade.sock", "/srv/lean", "/srv/lean"},
	} {
		c := Config{Socket: tc.socket, LeanSocket: tc.lean}
		if got := c.leanSocket(); got != tc.want {
			t.Errorf("socket %q, lean_socket %q: %q, want %q", tc.socket, tc.lean, got, tc.want)
		}
	}
}

// TestLeanDisconnectCancelsCall: a client that goes away in the middle of a long call over
// the lean protocol frees the PAL's instance, as over gRPC (TestClientDisconnectMidCall).
func TestLeanDisconnectCancelsCall(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, true)
	c, ctx := d.dial(), context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "loop", Limits: client.Limits{Timeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = c.Call(cctx, info.Handle, []byte("l")) // the client closes its connection at the deadline
	cancel()
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("call with a 500ms deadline on a looping PAL: %v", err)
	}
	cctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if res, err := c.Call(cctx, info.Handle, []byte("efree")); err != nil || string(res.Output) != "free" {
		t.Fatalf("the PAL's only instance was not freed by the disconnect: %q %v", res.Output, err)
	}
	if m := metricsOf(t, d); !strings.Contains(m, `palisade_lean_connections_total{outcome="gone_mid_call"} 1`) {
		t.Fatalf("metrics do not count the call canceled by the disconnect:\n%s", m)
	}
}

// TestLibpalisadeFuzzCorpus builds libpalisade's libFuzzer target (the decoding of a hostile
// daemon's answers, under AddressSanitizer) and runs it over its seed corpus; fuzz longer with
// build/fuzz_response -max_total_time=20 clients/c/fuzz/corpus.
func TestLibpalisadeFuzzCorpus(t *testing.T) {
	build := t.TempDir()
	if out, err := exec.Command("make", "-C", "../../clients/c", "BUILD="+build, "fuzz").CombinedOutput(); err != nil {
		t.Fatalf("make fuzz (needs libclang-rt-14-dev, scripts/setup.sh): %v\n%s", err, out)
	}
	seeds, err := os.ReadDir("../../clients/c/fuzz/corpus")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(build, "fuzz_response"), "-runs=0", "../../clients/c/fuzz/corpus").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(fmt.Sprintf(" %d files found", len(seeds)))) {
		t.Fatalf("fuzz_response over the corpus: %v\n%s", err, out)
	}
}
