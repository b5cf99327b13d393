//go:build linux && amd64

package kvm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/pal"
)

// testHost is a real µTPM for the PAL, with its log kept for inspection.
type testHost struct {
	tpm  *utpm.TPM
	mu   sync.Mutex
	logs []string
}

func (h *testHost) TPM() *utpm.TPM { return h.tpm }
func (h *testHost) Log(b []byte) {
	h.mu.Lock()
	h.logs = append(h.logs, string(b))
	h.mu.Unlock()
}

var platform = sync.OnceValues(func() (*utpm.Platform, error) {
	secret := make([]byte, 32)
	rand.Read(secret)
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: secret, Identity: id})
})

func newHost(tb testing.TB, m pal.Measurement) *testHost {
	tb.Helper()
	p, err := platform()
	if err != nil {
		tb.Fatal(err)
	}
	return &testHost{tpm: p.NewTPM(utpm.Digest(m))}
}

// newEngine opens the engine or skips the test where KVM is not available.
func newEngine(tb testing.TB, opts ...Option) *Engine {
	tb.Helper()
	e, err := New(opts...)
	if errors.Is(err, engine.ErrNotSupported) {
		tb.Skipf("KVM engine not supported here: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	return e
}

// register compiles and instantiates the test PAL.
func register(tb testing.TB, e *Engine, lim engine.Limits) (engine.Instance, *testHost) {
	tb.Helper()
	img := needPAL(tb)
	ctx := context.Background()
	m, err := e.Compile(ctx, img)
	if err != nil {
		tb.Fatal(err)
	}
	h := newHost(tb, img.Measurement)
	in, err := m.Instantiate(ctx, h, lim)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { in.Close(ctx); m.Close(ctx) })
	return in, h
}

func call(tb testing.TB, in engine.Instance, input string) engine.Result {
	tb.Helper()
	r, err := in.Call(context.Background(), []byte(input))
	if err != nil {
		tb.Fatalf("call %q: %v", input, err)
	}
	return r
}

func u64(tb testing.TB, r engine.Result) uint64 {
	tb.Helper()
	if r.Status != 0 || len(r.Output) != 8 {
		tb.Fatalf("result %+v, want status 0 and 8 bytes", r)
	}
	return binary.LittleEndian.Uint64(r.Output)
}

func TestCalls(t *testing.T) {
	e := newEngine(t)
	in, h := register(t, e, engine.Limits{})
	if r := call(t, in, "n"); r.Status != 0 || len(r.Output) != 0 {
		t.Fatalf("null call: %+v", r)
	}
	if r := call(t, in, "ehello"); r.Status != 0 || string(r.Output) != "hello" {
		t.Errorf("echo: %+v", r)
	}
	for _, s := range []int32{0, 1, -1, 1 << 30, -1 << 31} {
		var b [5]byte
		b[0] = 's'
		binary.LittleEndian.PutUint32(b[1:], uint32(s))
		if r := call(t, in, string(b[:])); r.Status != s {
			t.Errorf("status %d came back as %d", s, r.Status)
		}
	}
	// Memory persists across calls: the call counter (.bss) keeps counting.
	first := u64(t, call(t, in, "c"))
	if second := u64(t, call(t, in, "c")); second != first+1 {
		t.Errorf("call counter %d then %d: memory did not persist", first, second)
	}
	// EXTEND through the µTPM: PCR1 = SHA-256(0 || SHA-256(data)).
	if r := call(t, in, "xabc"); r.Status != 0 {
		t.Fatalf("extend status %d", r.Status)
	}
	d := sha256.Sum256([]byte("abc"))
	want := sha256.Sum256(append(make([]byte, 32), d[:]...))
	if got, _ := h.TPM().PCR(1); got != utpm.Digest(want) {
		t.Errorf("PCR1 = %x, want %x", got, want)
	}
	// A 1 MiB input arrives intact.
	big := make([]byte, 1<<20)
	rand.Read(big)
	big[0] = 'e'
	r, err := in.Call(context.Background(), big)
	if err != nil || string(r.Output) != string(big[1:]) {
		t.Errorf("1 MiB echo: err %v, output %d bytes, equal %v", err, len(r.Output), string(r.Output) == string(big[1:]))
	}
}

// TestBadHostcalls: every bad pointer or length gets an error code and the PAL keeps running.
func TestBadHostcalls(t *testing.T) {
	e := newEngine(t)
	in, h := register(t, e, engine.Limits{})
	r := call(t, in, "b")
	if len(r.Output) != 10*8 {
		t.Fatalf("output %d bytes", len(r.Output))
	}
	want := []int64{-engine.EFault, -engine.EFault, -engine.ETooLarge, -engine.EFault, -engine.EFault,
		-engine.EFault, 32, 0, -engine.EFault, -engine.EUnsupported}
	for i, w := range want {
		if got := int64(binary.LittleEndian.Uint64(r.Output[8*i:])); got != w {
			t.Errorf("hostcall %d returned %d, want %d", i, got, w)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.logs) != 1 || h.logs[0] != "from rodata" {
		t.Errorf("logs %q, want the one from rodata", h.logs)
	}
}

// TestHostile: each attack ends in a typed error, the instance resets, and another PAL
// registered at the same time is not affected.
func TestHostile(t *testing.T) {
	e := newEngine(t)
	victim, _ := register(t, e, engine.Limits{})
	call(t, victim, "c")
	in, _ := register(t, e, engine.Limits{Timeout: 200 * time.Millisecond})
	tests := []struct {
		cmd, name string
		want      error
		addr      uint64 // expected fault address, if non-zero
	}{
		{"W", "write to code", engine.ErrTrap, 0},
		{"P", "write to page tables", engine.ErrTrap, 0x2008},
		{"G", "write to GDT", engine.ErrTrap, 0x1008},
		{"R", "read GDT", engine.ErrTrap, 0x1008},
		{"U", "jump to unmapped memory", engine.ErrTrap, 0x30000000},
		{"X", "execute RAM", engine.ErrTrap, 0},
		{"D", "read the doorbell", engine.ErrTrap, DoorbellGPA},
		{"O", "stack overflow", engine.ErrTrap, 0},
		{"h", "hlt", engine.ErrTrap, 0},
		{"i", "out", engine.ErrTrap, 0},
		{"I", "in", engine.ErrTrap, 0},
		{"C", "cli", engine.ErrTrap, 0},
		{"M", "wrmsr", engine.ErrTrap, 0},
		{"3", "mov cr3", engine.ErrTrap, 0},
		{"u", "ud2", engine.ErrTrap, 0},
		{"z", "divide by zero", engine.ErrTrap, 0},
		{"L", "infinite loop", engine.ErrTimeout, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			call(t, in, "d") // dirty the .data variable, to see the reset
			_, err := in.Call(context.Background(), []byte(tc.cmd))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("%s: %v", tc.name, err)
			var f *FaultError
			// Where the PAL faulted is known unless KVM reset the vCPU (AMD SVM does on a
			// triple fault); when it is known, it must be right.
			if tc.addr != 0 && errors.As(err, &f) && f.HasAddr && f.Addr != tc.addr {
				t.Errorf("fault address %#x, want %#x", f.Addr, tc.addr)
			}
			// The instance was reset: fresh .data and .bss.
			if v := u64(t, call(t, in, "d")); v != 0x5eed {
				t.Errorf("after reset .data = %#x, want the image's 0x5eed", v)
			}
			if v := u64(t, call(t, in, "c")); v != 2 {
				t.Errorf("after reset the call counter is %d, want 2", v)
			}
		})
	}
	if v := u64(t, call(t, victim, "c")); v != 2 {
		t.Errorf("the other PAL's counter is %d, want 2: it was disturbed", v)
	}
}

func TestLimits(t *testing.T) {
	e := newEngine(t)
	in, _ := register(t, e, engine.Limits{MaxInput: 16, MaxOutput: 4096})
	if _, err := in.Call(context.Background(), make([]byte, 17)); !errors.Is(err, engine.ErrInputTooLarge) {
		t.Errorf("input over the cap: %v", err)
	}
	if _, err := in.Call(context.Background(), []byte{'o', 1}); !errors.Is(err, engine.ErrOutputTooLarge) {
		t.Errorf("output over the cap: %v", err)
	}
	call(t, in, "n") // still usable
	img := needPAL(t)
	m, err := e.Compile(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if _, err := m.Instantiate(context.Background(), newHost(t, img.Measurement), engine.Limits{MemoryMiB: 1}); !errors.Is(err, engine.ErrOutOfMemory) {
		t.Errorf("1 MiB memory cap: %v, want ErrOutOfMemory", err)
	}
	// A context deadline shorter than the limit wins; cancellation stops the PAL too.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := in.Call(ctx, []byte("L")); !errors.Is(err, engine.ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Errorf("deadline: %v after %v", err, time.Since(start))
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel2)
	if _, err := in.Call(ctx2, []byte("L")); !errors.Is(err, engine.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v", err)
	}
	call(t, in, "n")
	in.Close(context.Background())
	if _, err := in.Call(context.Background(), []byte("n")); !errors.Is(err, engine.ErrInstanceClosed) {
		t.Errorf("call after close: %v", err)
	}
}

func TestCompileRefuses(t *testing.T) {
	e := newEngine(t)
	wasm := &pal.Image{Kind: pal.KindWasm}
	if _, err := e.Compile(context.Background(), wasm); !errors.Is(err, engine.ErrBadImage) {
		t.Errorf("wasm image: %v", err)
	}
}

// TestHammer runs instances of one module from several goroutines at once, each with its own
// memory, some of them faulting.
func TestHammer(t *testing.T) {
	e := newEngine(t)
	const workers, calls = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		in, _ := register(t, e, engine.Limits{})
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			want := uint64(0)
			for i := 0; i < calls; i++ {
				if w == 0 && i%10 == 5 {
					if _, err := in.Call(context.Background(), []byte("W")); !errors.Is(err, engine.ErrTrap) {
						errs <- fmt.Errorf("worker %d: fault: %v", w, err)
						return
					}
					want = 0
					continue
				}
				r, err := in.Call(context.Background(), []byte("c"))
				want++
				if err != nil || len(r.Output) != 8 || binary.LittleEndian.Uint64(r.Output) != want {
					errs <- fmt.Errorf("worker %d call %d: %v %x, want counter %d", w, i, err, r.Output, want)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// waitFull blocks until the pool holds all its VMs (benchmarks measure registration with a warm
// pool).
func (p *pool) waitFull(ctx context.Context) error {
	for len(p.ready) < cap(p.ready) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p.wake <- struct{}{}:
		default:
		}
		time.Sleep(50 * time.Microsecond)
	}
	return nil
}

// The XMHF64-TrustVisor anchors (nested KVM) are in docs/kvm.md; compare by hand.

func BenchmarkRegister(b *testing.B) { benchRegister(b) }

// BenchmarkRegisterCold is registration with the pool disabled: VM and vCPU creation included.
func BenchmarkRegisterCold(b *testing.B) { benchRegister(b, WithPoolSize(0)) }

// benchRegister measures Compile + Instantiate, with the engine's pool (if any) full first.
func benchRegister(b *testing.B, opts ...Option) {
	e := newEngine(b, opts...)
	img := needPAL(b)
	ctx := context.Background()
	h := newHost(b, img.Measurement)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.pool.waitFull(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		m, err := e.Compile(ctx, img)
		if err != nil {
			b.Fatal(err)
		}
		in, err := m.Instantiate(ctx, h, engine.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		in.Close(ctx)
		m.Close(ctx)
		b.StartTimer()
	}
}

func BenchmarkNullCall(b *testing.B) {
	e := newEngine(b)
	in, _ := register(b, e, engine.Limits{})
	input := []byte("n")
	call(b, in, "n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := in.Call(context.Background(), input); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHypercall is one call that hashes its input and extends PCR1: one EXTEND hostcall.
func BenchmarkHypercall(b *testing.B) {
	e := newEngine(b)
	in, _ := register(b, e, engine.Limits{})
	input := []byte("x0123456789abcdef")
	call(b, in, "n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r, err := in.Call(context.Background(), input); err != nil || r.Status != 0 {
			b.Fatal(err, r.Status)
		}
	}
}

func BenchmarkUnregister(b *testing.B) {
	e := newEngine(b)
	img := needPAL(b)
	ctx := context.Background()
	h := newHost(b, img.Measurement)
	m, err := e.Compile(ctx, img)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e.pool.waitFull(ctx)
		in, err := m.Instantiate(ctx, h, engine.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		call(b, in, "n")
		b.StartTimer()
		in.Close(ctx)
	}
}

// BenchmarkVMDestroy is the teardown that Close hands to the background reaper.
func BenchmarkVMDestroy(b *testing.B) {
	e := newEngine(b, WithPoolSize(0))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		v, err := e.newVM()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		v.destroy()
	}
}
