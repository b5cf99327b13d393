package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/api/server"
)

// nobody is the second uid of the access-control test.
const nobody = 65534

func TestCLI(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, false)
	_, _, palPath := artifacts(t)

	r := d.runCLI(-1, nil, "pal", "register", palPath, "--name", "echo", "--replicas", "2", "--timeout", "2s")
	if r.code != 0 {
		t.Fatalf("register: %d %s", r.code, r.stderr)
	}
	h := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(h, "pal-") {
		t.Fatalf("register printed %q, want a handle", r.stdout)
	}

	if r = d.runCLI(-1, nil, "pal", "call", h, "--data", "ehello"); r.code != 0 || r.stdout != "hello" {
		t.Fatalf("call: code %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}
	if r = d.runCLI(-1, []byte("efrom stdin"), "pal", "call", h, "--input", "-", "--hex"); r.code != 0 ||
		strings.TrimSpace(r.stdout) != hex.EncodeToString([]byte("from stdin")) {
		t.Fatalf("call --input - --hex: code %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}
	if r = d.runCLI(-1, nil, "pal", "call", h, "--data", "s\x05"); r.code != 3 || !strings.Contains(r.stderr, "status 5") {
		t.Fatalf("call with PAL status 5: code %d stderr %s", r.code, r.stderr)
	}

	r = d.runCLI(-1, nil, "pal", "list")
	if r.code != 0 || !strings.Contains(r.stdout, h) || !strings.Contains(r.stdout, "echo") {
		t.Fatalf("list: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// attest, then verify the evidence with the CLI as a remote verifier would.
	c := d.dial()
	health, err := c.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	infos, err := c.List(context.Background())
	if err != nil || len(infos) != 1 {
		t.Fatalf("List: %v %v", infos, err)
	}
	ev := filepath.Join(t.TempDir(), "ev.cbor")
	if r = d.runCLI(-1, nil, "attest", h, "--nonce", "00112233", "-o", ev); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	r = d.runCLI(-1, nil, "verify", ev, "--nonce", "00112233", "--allow-unrooted",
		"--pal", hex.EncodeToString(infos[0].Measurement[:]), "--visor", hex.EncodeToString(health.VisorMeasurement[:]))
	if r.code != 0 || !strings.Contains(r.stdout, "UNROOTED") {
		t.Fatalf("verify: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = d.runCLI(-1, nil, "verify", ev, "--nonce", "00112234", "--allow-unrooted",
		"--pal", hex.EncodeToString(infos[0].Measurement[:]), "--visor", hex.EncodeToString(health.VisorMeasurement[:]))
	if r.code == 0 {
		t.Fatalf("verify accepted evidence for another nonce")
	}

	if r = d.runCLI(-1, nil, "pal", "unregister", h); r.code != 0 {
		t.Fatalf("unregister: %d %s", r.code, r.stderr)
	}
	if r = d.runCLI(-1, nil, "pal", "call", h); r.code != 7 || !strings.Contains(r.stderr, "no such PAL") {
		t.Fatalf("call after unregister: code %d stderr %s", r.code, r.stderr)
	}

	// No daemon at the socket: a plain message saying so.
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	r = d.runCLI(-1, nil, "pal", "list", "--socket", missing)
	if r.code != 8 || !strings.Contains(r.stderr, "cannot reach palisaded at "+missing) || !strings.Contains(r.stderr, "is it running?") {
		t.Fatalf("no daemon: code %d stderr %q", r.code, r.stderr)
	}
	d.stop()
}

func TestSDKErrors(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, true)
	c := d.dial()
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{
		Name: "limits", Limits: client.Limits{Timeout: 200 * time.Millisecond, MaxInput: 64},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		handle string
		input  []byte
		want   error
	}{
		{"timeout", info.Handle, []byte("l"), client.ErrTimeout},
		{"input too large", info.Handle, bytes.Repeat([]byte("e"), 65), client.ErrInputTooLarge},
		{"unknown handle", "pal-0000000000000003", nil, client.ErrNotFound},
		{"malformed handle", "no-such", nil, client.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Call(ctx, tc.handle, tc.input)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// The timed-out instance was reset and serves again.
	if res, err := c.Call(ctx, info.Handle, []byte("eok")); err != nil || string(res.Output) != "ok" {
		t.Fatalf("call after timeout: %q %v", res.Output, err)
	}
	if _, err := c.Register(ctx, []byte("not a PAL"), client.RegisterOptions{}); !errors.Is(err, client.ErrBadImage) {
		t.Fatalf("garbage image: %v", err)
	}
	if _, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Engine: "vax"}); !errors.Is(err, client.ErrUnknownEngine) {
		t.Fatalf("unknown engine: %v", err)
	}
	if _, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Replicas: 100000}); !errors.Is(err, client.ErrBadOptions) {
		t.Fatalf("too many replicas: %v", err)
	}
	if _, err := c.RegisterPath(ctx, "/etc/shadow", client.RegisterOptions{}); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("register by path without image_dirs: %v", err)
	}
	if _, err := c.Attest(ctx, info.Handle, client.AttestOptions{Nonce: make([]byte, 2000)}); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("oversized nonce: %v", err)
	}

	// The timeout shows in the metrics.
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("palisade_call_timeouts_total{pal=%q,name=\"limits\"} 1\n", info.Handle)
	if !strings.Contains(string(body), want) {
		t.Fatalf("metrics lack %q:\n%s", want, body)
	}
	if !strings.Contains(string(body), fmt.Sprintf("palisade_call_errors_total{pal=%q,name=\"limits\",reason=\"INPUT_TOO_LARGE\"} 1", info.Handle)) {
		t.Fatalf("metrics lack the input error:\n%s", body)
	}
}

// bigPAL is the test PAL padded with a custom section to about size bytes (the measurement
// covers it; the engine ignores it).
func bigPAL(t testing.TB, size int) []byte {
	img := testPAL(t)
	name := "palisade.test.padding"
	payload := size - len(img) - 16
	var sec []byte
	sec = binary.AppendUvarint(sec, uint64(len(name)))
	sec = append(sec, name...)
	sec = append(sec, make([]byte, payload-len(sec))...)
	out := append(append([]byte(nil), img...), 0)
	out = binary.AppendUvarint(out, uint64(len(sec)))
	return append(out, sec...)
}

func TestLargeImage(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, false)
	c := d.dial()
	img := bigPAL(t, 63<<20)
	start := time.Now()
	info, err := c.Register(context.Background(), img, client.RegisterOptions{Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("registering a %d MiB image took %v", len(img)>>20, time.Since(start))
	if want := sha256.Sum256(nil); info.Measurement == want {
		t.Fatal("no measurement")
	}
	if res, err := c.Call(context.Background(), info.Handle, []byte("ebig")); err != nil || string(res.Output) != "big" {
		t.Fatalf("call: %q %v", res.Output, err)
	}
	if _, err := c.Register(context.Background(), bigPAL(t, 65<<20), client.RegisterOptions{}); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("image over 64 MiB: %v", err)
	}
}

func TestAccessControlTwoUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	cfg := Config{
		SocketMode:  "0660",
		SocketGroup: fmt.Sprint(nobody),
		Access: server.Policy{Shares: []server.Share{
			{Owner: 0, Name: "shared", UIDs: []uint32{nobody}, Ops: []server.Op{server.OpCall, server.OpList}},
		}},
	}
	d := startDaemon(t, newDaemonDir(t), cfg, false)
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %#o, want 0660", fi.Mode().Perm())
	}
	c := d.dial()
	ctx := context.Background()
	private, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "private"})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}

	// nobody: denied on root's private PAL, allowed what the share says on the shared one. A
	// refusal by the platform exits 7 (docs/cli.md).
	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"pal", "call", private.Handle, "--data", "ex"}, 7, "permission denied"},
		{[]string{"attest", private.Handle, "--nonce", "01", "-o", "/dev/null"}, 7, "permission denied"},
		{[]string{"pal", "unregister", private.Handle}, 7, "permission denied"},
		{[]string{"pal", "call", shared.Handle, "--data", "eshared"}, 0, "shared"},
		{[]string{"attest", shared.Handle, "--nonce", "01", "-o", "/dev/null"}, 7, "permission denied"},
		{[]string{"pal", "unregister", shared.Handle}, 7, "permission denied"},
	} {
		r := d.runCLI(nobody, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.contains) {
			t.Errorf("as nobody, palisade %s: code %d, output %q %q; want code %d containing %q",
				strings.Join(tc.args, " "), r.code, r.stdout, r.stderr, tc.code, tc.contains)
		}
	}
	r := d.runCLI(nobody, nil, "pal", "list")
	if r.code != 0 || !strings.Contains(r.stdout, shared.Handle) || strings.Contains(r.stdout, private.Handle) {
		t.Errorf("list as nobody: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// nobody registers its own PAL: root may not touch it (root is not implicitly allowed).
	_, _, palPath := artifacts(t)
	r = d.runCLI(nobody, nil, "pal", "register", palPath, "--name", "nobodys")
	if r.code != 0 {
		t.Fatalf("register as nobody: %d %s", r.code, r.stderr)
	}
	theirs := strings.TrimSpace(r.stdout)
	if _, err := c.Call(ctx, theirs, nil); !errors.Is(err, client.ErrPermission) {
		t.Errorf("root calling nobody's PAL: %v, want ErrPermission", err)
	}
	if _, err := c.Attest(ctx, theirs, client.AttestOptions{Nonce: []byte{1}}); !errors.Is(err, client.ErrPermission) {
		t.Errorf("root attesting nobody's PAL: %v, want ErrPermission", err)
	}
	if err := c.Unregister(ctx, theirs); !errors.Is(err, client.ErrPermission) {
		t.Errorf("root unregistering nobody's PAL: %v, want ErrPermission", err)
	}
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.Handle == theirs {
			t.Errorf("root's list shows nobody's PAL")
		}
	}
	if r = d.runCLI(nobody, nil, "pal", "call", theirs, "--data", "emine"); r.code != 0 || r.stdout != "mine" {
		t.Errorf("nobody calling its own PAL: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = d.runCLI(nobody, nil, "pal", "unregister", theirs); r.code != 0 {
		t.Errorf("nobody unregistering its own PAL: %d %s", r.code, r.stderr)
	}

	// Every denial is in the audit log with the uid that was refused.
	var denied int
	for _, e := range d.auditEvents() {
		if e["event"] == "denied" {
			denied++
			if e["uid"] != float64(nobody) && e["uid"] != float64(0) {
				t.Errorf("denied event with uid %v", e["uid"])
			}
		}
	}
	if denied != 8 {
		t.Errorf("%d denied events in the audit log, want 8", denied)
	}
	d.stop()
}

func TestRestartKeepsRegistrations(t *testing.T) {
	dir := newDaemonDir(t)
	d := startDaemon(t, dir, Config{}, false)
	c := d.dial()
	ctx := context.Background()
	var handles []string
	for i, name := range []string{"a", "b", "c"} {
		info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: name, Replicas: i + 1,
			Limits: client.Limits{Timeout: time.Duration(i+1) * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	if err := c.Unregister(ctx, handles[1]); err != nil {
		t.Fatal(err)
	}
	before, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	d.stop()

	d = startDaemon(t, dir, Config{}, false)
	c = d.dial()
	after, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || len(before) != 2 {
		t.Fatalf("before restart %d PALs, after %d; want 2", len(before), len(after))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.Handle != b.Handle || a.Name != b.Name || a.Measurement != b.Measurement || a.Replicas != b.Replicas ||
			a.Limits != b.Limits || !a.Registered.Equal(b.Registered) || a.Owner != b.Owner {
			t.Errorf("after restart %+v, before %+v", a, b)
		}
		if res, err := c.Call(ctx, a.Handle, []byte("eback")); err != nil || string(res.Output) != "back" {
			t.Errorf("call %s after restart: %q %v", a.Handle, res.Output, err)
		}
	}
	var kinds []string
	for _, e := range d.auditEvents() {
		kinds = append(kinds, e["event"].(string))
	}
	if got, want := strings.Join(kinds, ","), "register,register,register,unregister,restore,restore"; got != want {
		t.Errorf("audit events %s, want %s", got, want)
	}
	d.stop()
}

// TestClientDisconnectMidCall kills a CLI process while its call loops in the PAL: the daemon
// must cancel the call (the PAL has one instance and a 60 s timeout, so a call that kept
// running would block the next one for a minute).
func TestClientDisconnectMidCall(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, false)
	c := d.dial()
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "loop", Limits: client.Limits{Timeout: 60 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	_, cli, _ := artifacts(t)
	cmd := exec.Command(cli, "pal", "call", info.Handle, "--data", "l", "--socket", d.socket)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The CLI's call holds the only instance once a short call cannot get it, three times
	// in a row (one miss could be a slow machine).
	waitFor(t, 20*time.Second, func() bool {
		for i := 0; i < 3; i++ {
			if !busy(t, c, info.Handle) {
				return false
			}
		}
		return true
	})
	cmd.Process.Kill()
	cmd.Wait()

	// The SDK's own cancellation takes the same path.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Call(cctx, info.Handle, []byte("l"))
	cancel()
	if !errors.Is(err, client.ErrTimeout) && !errors.Is(err, client.ErrCanceled) {
		t.Fatalf("call with a 300ms deadline on a looping PAL: %v", err)
	}
	cctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if res, err := c.Call(cctx, info.Handle, []byte("efree")); err != nil || string(res.Output) != "free" {
		t.Fatalf("the PAL's only instance was not freed by the disconnect: %q %v", res.Output, err)
	}
	if h, err := c.Health(ctx); err != nil || h.Status != "serving" {
		t.Fatalf("health after disconnect: %+v %v", h, err)
	}
}

// busy reports whether the PAL's only instance is taken: a call with a short deadline cannot
// get it.
func busy(t *testing.T, c *client.Client, h string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, h, nil)
	return errors.Is(err, client.ErrTimeout) || errors.Is(err, client.ErrCanceled)
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentCalls(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, false)
	ctx := context.Background()
	info, err := d.dial().Register(ctx, testPAL(t), client.RegisterOptions{Name: "echo", Replicas: 4})
	if err != nil {
		t.Fatal(err)
	}
	const clients, perClient = 50, 20
	var wg sync.WaitGroup
	var ok atomic.Int64
	errs := make(chan error, clients*perClient)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := client.Dial(ctx, d.socket) // one connection per client
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := 0; j < perClient; j++ {
				msg := fmt.Sprintf("client %d call %d", i, j)
				res, err := c.Call(ctx, info.Handle, append([]byte("e"), msg...))
				if err != nil {
					errs <- err
					continue
				}
				if string(res.Output) != msg || res.Status != 0 {
					errs <- fmt.Errorf("got %q status %d, want %q", res.Output, res.Status, msg)
					continue
				}
				ok.Add(1)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ok.Load() != clients*perClient {
		t.Fatalf("%d of %d calls succeeded", ok.Load(), clients*perClient)
	}
	list, err := d.dial().List(ctx)
	if err != nil || len(list) != 1 || list[0].Calls != clients*perClient {
		t.Fatalf("daemon counted %+v %v", list, err)
	}
}

// TestSIGTERMUnderLoad stops the daemon while calls run: it must exit cleanly, every call must
// have succeeded or failed with a clean error, and the registrations must come back.
func TestSIGTERMUnderLoad(t *testing.T) {
	dir := newDaemonDir(t)
	d := startDaemon(t, dir, Config{ShutdownTimeout: "3s"}, false)
	ctx := context.Background()
	c := d.dial()
	echo, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "echo", Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "slow", Replicas: 2, Limits: client.Limits{Timeout: 400 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg                  sync.WaitGroup
		okCalls, cleanFails atomic.Int64
		stop                atomic.Bool
		bad                 = make(chan error, 100)
	)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := client.Dial(ctx, d.socket)
			if err != nil {
				bad <- err
				return
			}
			defer c.Close()
			for !stop.Load() {
				h, in := echo.Handle, []byte("ex")
				if i%3 == 0 {
					h, in = slow.Handle, []byte("l")
				}
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.Call(cctx, h, in)
				cancel()
				switch {
				case err == nil:
					okCalls.Add(1)
				case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrCanceled),
					errors.Is(err, client.ErrTimeout) && h == slow.Handle:
					cleanFails.Add(1)
					if errors.Is(err, client.ErrUnavailable) {
						return // the daemon is gone
					}
				default:
					select {
					case bad <- fmt.Errorf("call %s: %w", h, err):
					default:
					}
					return
				}
			}
		}(i)
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	d.stop()
	took := time.Since(start)
	stop.Store(true)
	wg.Wait()
	close(bad)
	for err := range bad {
		t.Error(err)
	}
	if okCalls.Load() == 0 {
		t.Fatal("no call succeeded before SIGTERM")
	}
	t.Logf("SIGTERM under load: exit after %v, %d calls succeeded, %d failed cleanly", took, okCalls.Load(), cleanFails.Load())
	if !strings.Contains(d.stderr.String(), `"msg":"shutting down"`) {
		t.Fatalf("no shutdown in the log")
	}

	d = startDaemon(t, dir, Config{ShutdownTimeout: "3s"}, false)
	list, err := d.dial().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range list {
		got[p.Handle] = true
	}
	if len(list) != 2 || !got[echo.Handle] || !got[slow.Handle] {
		t.Fatalf("after restart: %+v", list)
	}
	d.stop()
}

// TestSignerTLS uses PAL-held keys (ECDSA P-256, Ed25519, RSA-2048, all µTPM key objects)
// through client.Signer as the key of a TLS server and of an SSH signer.
func TestSignerTLS(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, false)
	c := d.dial()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		alg  byte
	}{{"ecdsa-p256", 1}, {"ed25519", 2}, {"rsa-2048", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "signer-" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Call(ctx, info.Handle, []byte{'c', tc.alg})
			if err != nil || res.Status != 0 {
				t.Fatalf("key create: status %d %v", res.Status, err)
			}
			pub, err := x509.ParsePKIXPublicKey(res.Output)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := client.NewSigner(c, info.Handle, pub)
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := pub.(*ecdsa.PublicKey); ok {
				digest := sha256.Sum256([]byte("message"))
				sig, err := signer.Sign(nil, digest[:], cryptoSHA256)
				if err != nil {
					t.Fatal(err)
				}
				if !ecdsa.VerifyASN1(k, digest[:], sig) {
					t.Fatal("signature from the PAL does not verify")
				}
			}
			tlsRoundTrip(t, signer)
		})
	}
}

func TestRegisterByPath(t *testing.T) {
	dir := newDaemonDir(t)
	images := filepath.Join(dir, "images")
	if err := os.Mkdir(images, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "echo.wasm"), testPAL(t), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(dir, "outside.wasm")
	os.WriteFile(outside, testPAL(t), 0o644)
	os.Symlink(outside, filepath.Join(images, "escape.wasm"))
	os.Symlink("echo.wasm", filepath.Join(images, "alias.wasm"))

	d := startDaemon(t, dir, Config{ImageDirs: []string{images}}, false)
	r := d.runCLI(-1, nil, "pal", "register", "--daemon-reads", filepath.Join(images, "echo.wasm"))
	if r.code != 0 {
		t.Fatalf("register --daemon-reads: %d %s", r.code, r.stderr)
	}
	c := d.dial()
	ctx := context.Background()
	if _, err := c.RegisterPath(ctx, filepath.Join(images, "alias.wasm"), client.RegisterOptions{}); err != nil {
		t.Fatalf("symlink inside the image directory: %v", err)
	}
	for _, p := range []string{
		outside,
		filepath.Join(images, "escape.wasm"),
		filepath.Join(images, "..", "outside.wasm"),
		filepath.Join(images, "missing.wasm"),
		"relative.wasm",
		images,
	} {
		if _, err := c.RegisterPath(ctx, p, client.RegisterOptions{}); err == nil ||
			!(errors.Is(err, client.ErrPermission) || errors.Is(err, client.ErrInvalid)) {
			t.Errorf("RegisterPath(%s) = %v, want a refusal", p, err)
		}
	}
}
