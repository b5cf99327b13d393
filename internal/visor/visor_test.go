package visor_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/csdk"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
	"github.com/palisade-project/palisade/pal"
)

var (
	echoOnce sync.Once
	echoPAL  []byte
	echoErr  error
)

// echo builds testdata/echo.c once per test binary.
func echo(t testing.TB) []byte {
	t.Helper()
	echoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "visor-test-")
		if err != nil {
			echoErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "echo.wasm")
		if echoErr = csdk.BuildWasm(context.Background(), out, nil, "testdata/echo.c"); echoErr == nil {
			echoPAL, echoErr = os.ReadFile(out)
		}
	})
	if echoErr != nil {
		t.Fatalf("building the test PAL: %v", echoErr)
	}
	return echoPAL
}

// newVisor starts a visor over a real development root of trust and the wasm engine.
// newVisor gives a visor on the none root with the wasm engine, closed when the test ends;
// each of with may change its configuration first.
func newVisor(t testing.TB, with ...func(*visor.Config)) *visor.Visor {
	t.Helper()
	root, err := none.Open(t.TempDir(), utpm.Digest{1})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := wasm.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg := visor.Config{Root: root, Engines: []engine.Engine{eng}, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range with {
		f(&cfg)
	}
	v, err := visor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := v.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		eng.Close(ctx)
		root.Close()
	})
	return v
}

func register(t testing.TB, v *visor.Visor, opts visor.RegisterOptions) visor.Info {
	t.Helper()
	info, err := v.Register(context.Background(), echo(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func call(t testing.TB, v *visor.Visor, h visor.Handle, in string) engine.Result {
	t.Helper()
	res, err := v.Call(context.Background(), h, []byte(in))
	if err != nil {
		t.Fatalf("Call(%q): %v", in, err)
	}
	return res
}

func TestLifecycle(t *testing.T) {
	v := newVisor(t)
	info := register(t, v, visor.RegisterOptions{Name: "echo"})
	img, _ := pal.Parse(echo(t))
	if info.Measurement != img.Measurement || info.Engine != "wasm" || info.Replicas != 1 {
		t.Fatalf("info = %+v", info)
	}
	if h, err := visor.ParseHandle(info.Handle.String()); err != nil || h != info.Handle {
		t.Fatalf("ParseHandle round trip: %v %v", h, err)
	}
	if res := call(t, v, info.Handle, "hello"); string(res.Output) != "hello" || res.Status != 0 {
		t.Fatalf("echo = %+v", res)
	}
	if res := call(t, v, info.Handle, "fail"); res.Status != 42 {
		t.Fatalf("status = %d, want the PAL's 42", res.Status)
	}
	// PAL memory persists across calls: the PAL counts its calls.
	res := call(t, v, info.Handle, "count")
	if n := binary.LittleEndian.Uint64(res.Output); n != 3 {
		t.Fatalf("PAL saw %d calls, want 3", n)
	}
	if l := v.List(); len(l) != 1 || l[0].Calls != 3 {
		t.Fatalf("List = %+v", l)
	}
	if err := v.Unregister(context.Background(), info.Handle); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Call(context.Background(), info.Handle, nil); !errors.Is(err, visor.ErrNotFound) {
		t.Fatalf("call after unregister: %v", err)
	}
	if err := v.Unregister(context.Background(), info.Handle); !errors.Is(err, visor.ErrNotFound) {
		t.Fatalf("second unregister: %v", err)
	}
}

func TestRegisterRefused(t *testing.T) {
	v := newVisor(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		image []byte
		opts  visor.RegisterOptions
		want  error
	}{
		{"garbage", []byte("not a PAL"), visor.RegisterOptions{}, pal.ErrInvalid},
		{"unknown engine", echo(t), visor.RegisterOptions{Engine: "qemu"}, visor.ErrUnknownEngine},
		{"elf without kvm", []byte("\x7fELF\x02\x01\x01\x00"), visor.RegisterOptions{}, pal.ErrInvalid},
		{"negative replicas", echo(t), visor.RegisterOptions{Replicas: -1}, visor.ErrBadOptions},
		{"too many replicas", echo(t), visor.RegisterOptions{Replicas: visor.MaxReplicas + 1}, visor.ErrBadOptions},
		{"negative limit", echo(t), visor.RegisterOptions{Limits: engine.Limits{MaxInput: -1}}, visor.ErrBadOptions},
		// No OUTPUT hostcall can carry more than MaxHostcallIO bytes: a larger cap is refused.
		{"output cap above the hostcall limit", echo(t), visor.RegisterOptions{Limits: engine.Limits{MaxOutput: engine.MaxHostcallIO + 1}}, visor.ErrBadOptions},
		{"valid module, not a PAL", []byte{0, 'a', 's', 'm', 1, 0, 0, 0}, visor.RegisterOptions{}, engine.ErrBadImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := v.Register(ctx, tt.image, tt.opts); !errors.Is(err, tt.want) {
				t.Fatalf("Register = %v, want %v", err, tt.want)
			}
		})
	}
	if l := v.List(); len(l) != 0 {
		t.Fatalf("refused registrations are listed: %+v", l)
	}
	// A fixed handle cannot be registered twice.
	info := register(t, v, visor.RegisterOptions{})
	if _, err := v.Register(ctx, echo(t), visor.RegisterOptions{Handle: info.Handle}); !errors.Is(err, visor.ErrBadOptions) {
		t.Fatalf("duplicate handle: %v", err)
	}
}

// TestEngineNotOffered: asking for an engine this build has but this machine does not run
// (palisaded without /dev/kvm) says why, not only that the engine is unknown.
func TestEngineNotOffered(t *testing.T) {
	why := errors.New("kvm: open /dev/kvm: engine not supported on this machine")
	v := newVisor(t, func(c *visor.Config) { c.NotOffered = map[string]error{"kvm": why} })
	ctx := context.Background()
	for _, tc := range []struct{ engine, want string }{
		{"kvm", "not offered on this machine (" + why.Error() + ")"},
		{"qemu", `unknown engine "qemu" for wasm images (this visor runs: wasm)`},
	} {
		_, err := v.Register(ctx, echo(t), visor.RegisterOptions{Engine: tc.engine})
		if !errors.Is(err, visor.ErrUnknownEngine) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("engine %s: %v, want ErrUnknownEngine saying %q", tc.engine, err, tc.want)
		}
	}
}

func TestLimits(t *testing.T) {
	v := newVisor(t)
	info := register(t, v, visor.RegisterOptions{Limits: engine.Limits{Timeout: 200 * time.Millisecond, MaxInput: 16, MaxOutput: 8}})
	ctx := context.Background()
	if _, err := v.Call(ctx, info.Handle, []byte("spin")); !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("spin: %v, want ErrTimeout", err)
	}
	if res := call(t, v, info.Handle, "after"); string(res.Output) != "after" {
		t.Fatalf("call after a timeout = %q", res.Output)
	}
	if _, err := v.Call(ctx, info.Handle, bytes.Repeat([]byte("x"), 17)); !errors.Is(err, engine.ErrInputTooLarge) {
		t.Fatalf("oversized input: %v", err)
	}
	if _, err := v.Call(ctx, info.Handle, []byte("123456789")); !errors.Is(err, engine.ErrOutputTooLarge) {
		t.Fatalf("oversized output: %v", err)
	}
	got, _ := v.Info(info.Handle)
	if got.Timeouts != 1 || got.Failures != 3 {
		t.Fatalf("counters: %+v", got)
	}
	// A caller's own deadline is honoured too.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := v.Call(cctx, info.Handle, []byte("spin")); err == nil {
		t.Fatal("spin under a caller deadline returned no error")
	}
}

// startSpin starts a call that never returns by itself on h and waits until the PAL is running
// it (it extends PCR 2 first), so that the call holds an instance. It returns the call's error.
func startSpin(t *testing.T, v *visor.Visor, h visor.Handle) <-chan error {
	t.Helper()
	before, _ := v.PCRs(h)
	done := make(chan error, 1)
	go func() {
		_, err := v.Call(context.Background(), h, []byte("spin"))
		done <- err
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		if now, _ := v.PCRs(h); now[2] != before[2] {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatal("the spinning call never started")
		}
	}
}

// TestReplicas shows that replicas run calls at the same time and one instance runs one call at
// a time: while a call spins on one instance, a quick call gets the other replica, or, with a
// single replica, waits until its deadline.
func TestReplicas(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		v := newVisor(t)
		info := register(t, v, visor.RegisterOptions{Replicas: replicas, Limits: engine.Limits{Timeout: 3 * time.Second}})
		slow := startSpin(t, v, info.Handle)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := v.Call(ctx, info.Handle, []byte("quick"))
		cancel()
		switch {
		case replicas == 1 && !errors.Is(err, context.DeadlineExceeded):
			t.Errorf("one replica, busy: quick call = %q, %v; want it to wait until its deadline", res.Output, err)
		case replicas == 2 && (err != nil || string(res.Output) != "quick"):
			t.Errorf("two replicas, one busy: quick call = %q, %v; want it served by the other", res.Output, err)
		}
		if err := <-slow; !errors.Is(err, engine.ErrTimeout) {
			t.Fatalf("slow call: %v, want ErrTimeout", err)
		}
	}
}

// TestUnregisterWaitsForCalls checks that Unregister does not close an instance under a running
// call: it blocks until the call ends (here by its timeout), and the call fails with its own
// timeout, not with a closed instance.
func TestUnregisterWaitsForCalls(t *testing.T) {
	v := newVisor(t)
	const timeout = time.Second
	info := register(t, v, visor.RegisterOptions{Limits: engine.Limits{Timeout: timeout}})
	done := startSpin(t, v, info.Handle)
	start := time.Now()
	if err := v.Unregister(context.Background(), info.Handle); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < timeout/2 {
		t.Fatalf("Unregister returned after %v, while the call had about %v left", d, timeout)
	}
	if err := <-done; !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("in-flight call: %v, want its own ErrTimeout", err)
	}
}

func TestQuote(t *testing.T) {
	v := newVisor(t)
	info := register(t, v, visor.RegisterOptions{})
	call(t, v, info.Handle, "extend")
	nonce := []byte("fresh nonce")
	q, err := v.Quote(info.Handle, nonce, nil, 0b11)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(v.Platform().IdentityPublic())
	if err != nil {
		t.Fatal(err)
	}
	claims, err := attest.VerifyQuote(q, pubECDSA(t, pub))
	if err != nil {
		t.Fatal(err)
	}
	pcrs, _ := v.PCRs(info.Handle)
	if claims.PAL != info.Measurement || !bytes.Equal(claims.Nonce, nonce) || claims.PCRs[1] != pcrs[1] || claims.Rooted {
		t.Fatalf("claims = %+v", claims)
	}
	if pcrs[1] == (utpm.Digest{}) {
		t.Fatal("the PAL's extend did not reach its µTPM")
	}
}

func TestClose(t *testing.T) {
	v := newVisor(t)
	info := register(t, v, visor.RegisterOptions{Replicas: 2})
	if err := v.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Call(context.Background(), info.Handle, nil); !errors.Is(err, visor.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	if _, err := v.Register(context.Background(), echo(t), visor.RegisterOptions{}); !errors.Is(err, visor.ErrClosed) {
		t.Fatalf("register after Close: %v", err)
	}
}

// TestHammer runs many calls from many goroutines on several registrations at once (run with
// -race).
func TestHammer(t *testing.T) {
	v := newVisor(t)
	var infos []visor.Info
	for i := 0; i < 3; i++ {
		infos = append(infos, register(t, v, visor.RegisterOptions{Replicas: 1 + i}))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				h := infos[(g+i)%len(infos)].Handle
				in := []byte{byte(g), byte(i), 'x'}
				res, err := v.Call(context.Background(), h, in)
				if err != nil || !bytes.Equal(res.Output, in) {
					errs <- errors.Join(err, errors.New("wrong echo"))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var total uint64
	for _, i := range v.List() {
		total += i.Calls
	}
	if total != 1600 {
		t.Fatalf("%d calls counted, want 1600", total)
	}
}

func BenchmarkNullCall(b *testing.B) {
	v := newVisor(b)
	info := register(b, v, visor.RegisterOptions{})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Call(ctx, info.Handle, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCallParallel(b *testing.B) {
	v := newVisor(b)
	info := register(b, v, visor.RegisterOptions{Replicas: 4})
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Call(ctx, info.Handle, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRegisterCached(b *testing.B) {
	v := newVisor(b)
	img := echo(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		info, err := v.Register(ctx, img, visor.RegisterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := v.Unregister(ctx, info.Handle); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeyUseAudit checks that every key operation a PAL makes reaches Config.OnKeyUse, failed
// ones included, and that one the audit cannot record is refused with E_AUDIT: the PAL gets
// no key or signature, and the next operation the audit takes succeeds again.
func TestKeyUseAudit(t *testing.T) {
	var (
		mu     sync.Mutex
		ops    []string
		refuse string // the op the audit fails on
	)
	v := newVisor(t, func(c *visor.Config) {
		c.OnKeyUse = func(pal visor.Info, op string, err error) error {
			mu.Lock()
			defer mu.Unlock()
			if op == refuse {
				ops = append(ops, fmt.Sprintf("%s %s lost", pal.Name, op))
				return errors.New("audit log: no space left on device")
			}
			ops = append(ops, fmt.Sprintf("%s %s %v", pal.Name, op, err == nil))
			return nil
		}
	})
	info, err := v.Register(context.Background(), echo(t), visor.RegisterOptions{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	// The test PAL creates a key, signs with it, then tries a tampered blob. It fails with
	// status 100 + the KEY_CREATE error code, or 200 + the KEY_SIGN one.
	for _, tc := range []struct {
		refuse string
		status int32
		want   []string
	}{
		{"", 0, []string{"k key-create true", "k key-sign true", "k key-sign false"}},
		{"key-create", 100 + engine.EAudit, []string{"k key-create lost"}},
		// The tampered blob's signature failed anyway: it keeps its own error.
		{"key-sign", 200 + engine.EAudit, []string{"k key-create true", "k key-sign lost"}},
		{"", 0, []string{"k key-create true", "k key-sign true", "k key-sign false"}},
	} {
		mu.Lock()
		ops, refuse = nil, tc.refuse
		mu.Unlock()
		if res := call(t, v, info.Handle, "key"); res.Status != tc.status {
			t.Errorf("audit refusing %q: status %d, want %d", tc.refuse, res.Status, tc.status)
		}
		mu.Lock()
		if fmt.Sprint(ops) != fmt.Sprint(tc.want) {
			t.Errorf("audit refusing %q: audited %q, want %q", tc.refuse, ops, tc.want)
		}
		mu.Unlock()
	}
}
