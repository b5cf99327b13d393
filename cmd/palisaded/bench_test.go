package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
)

// The two benchmarks below measure the same null call of a warm PAL (empty input, no output),
// once on a visor embedded in the benchmark process and once through a palisaded process
// over its Unix socket. Their difference is the daemon's overhead per call (gRPC, the socket,
// access control, metrics). Run them in one go:
//
//	go test -run '^$' -bench 'Call(Embedded|Daemon)' -benchtime 2s ./cmd/palisaded

func BenchmarkCallEmbedded(b *testing.B) {
	root, err := none.Open(b.TempDir(), utpm.Digest{})
	if err != nil {
		b.Fatal(err)
	}
	defer root.Close()
	eng, err := wasm.New()
	if err != nil {
		b.Fatal(err)
	}
	v, err := visor.New(visor.Config{Root: root, Engines: []engine.Engine{eng}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close(context.Background())
	ctx := context.Background()
	info, err := v.Register(ctx, testPAL(b), visor.RegisterOptions{Replicas: runtime.GOMAXPROCS(0)})
	if err != nil {
		b.Fatal(err)
	}
	call := func() {
		if res, err := v.Call(ctx, info.Handle, nil); err != nil || res.Status != 0 {
			b.Fatal(res, err)
		}
	}
	call() // warm
	b.Run("sequential", func(b *testing.B) {
		for b.Loop() {
			call()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call()
			}
		})
	})
}

func BenchmarkCallDaemon(b *testing.B) {
	d := startDaemon(b, newDaemonDir(b), Config{LogLevel: "info"}, false)
	c := d.dial()
	c.UseLean(false) // gRPC; BenchmarkCallLean is the same over the lean protocol
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(b), client.RegisterOptions{Replicas: runtime.GOMAXPROCS(0)})
	if err != nil {
		b.Fatal(err)
	}
	call := func(c *client.Client) {
		if res, err := c.Call(ctx, info.Handle, nil); err != nil || res.Status != 0 {
			b.Fatal(res, err)
		}
	}
	call(c)
	b.Run("sequential", func(b *testing.B) {
		defer cpuMeter(b, d.cmd.Process.Pid)()
		for b.Loop() {
			call(c)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		defer cpuMeter(b, d.cmd.Process.Pid)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call(c)
			}
		})
	})
	d.stop()
}

// BenchmarkSocketRoundTrip is the floor under BenchmarkCallDaemon: 32 bytes sent to another
// process over a Unix socket and echoed back, with nothing else. On a shared VM most of a
// daemon call's cost is this kind of cross-process wakeup, several times per gRPC call.
func BenchmarkSocketRoundTrip(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "echo.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PALISADE_TEST_ECHO_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var c net.Conn
	var err error
	for i := 0; i < 200; i++ {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 32)
	defer cpuMeter(b, cmd.Process.Pid)()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func echoServer(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		os.Exit(1)
	}
	c, err := l.Accept()
	if err != nil {
		os.Exit(1)
	}
	io.Copy(c, c)
}

// BenchmarkCallLean is BenchmarkCallDaemon over the lean protocol (docs/protocol.md). The
// issue's goal: sequential ≤ 1.5× BenchmarkSocketRoundTrip, measured in the same run:
//
//	go test -run '^$' -bench 'CallDaemon|CallLean|SocketRoundTrip' -benchtime 2s ./cmd/palisaded
func BenchmarkCallLean(b *testing.B) {
	d := startDaemon(b, newDaemonDir(b), Config{LogLevel: "info"}, false)
	c := d.dial()
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(b), client.RegisterOptions{Replicas: runtime.GOMAXPROCS(0)})
	if err != nil {
		b.Fatal(err)
	}
	call := func() {
		if res, err := c.Call(ctx, info.Handle, nil); err != nil || res.Status != 0 {
			b.Fatal(res, err)
		}
	}
	call()
	b.Run("sequential", func(b *testing.B) {
		defer cpuMeter(b, d.cmd.Process.Pid)()
		for b.Loop() {
			call()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		defer cpuMeter(b, d.cmd.Process.Pid)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call()
			}
		})
	})
	d.stop()
}

// BenchmarkSign64 signs with 64 concurrent callers, as a TLS server under load would: a named
// ECDSA P-256 key of the daemon's key service through client.KeySigner, over gRPC (the path
// before the lean protocol) and over the lean protocol, and a PAL-held key through
// client.Signer over both. The goal: lean ≥ 3× gRPC in signatures per second.
func BenchmarkSign64(b *testing.B) {
	d := startDaemon(b, newDaemonDir(b), Config{LogLevel: "info"}, false)
	c := d.dial()
	ctx := context.Background()
	if _, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: "bench", Alg: client.AlgECDSAP256}); err != nil {
		b.Fatal(err)
	}
	ks, err := c.KeySigner(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	info, err := c.Register(ctx, testPAL(b), client.RegisterOptions{Replicas: runtime.GOMAXPROCS(0)})
	if err != nil {
		b.Fatal(err)
	}
	// Each replica creates its own key object ('c'): they are all the same PAL.
	var pub []byte
	for range runtime.GOMAXPROCS(0) {
		res, err := c.Call(ctx, info.Handle, []byte{'c', 1})
		if err != nil || res.Status != 0 {
			b.Fatal(res, err)
		}
		pub = res.Output
	}
	pk, err := x509.ParsePKIXPublicKey(pub)
	if err != nil {
		b.Fatal(err)
	}
	ps, err := client.NewSigner(c, info.Handle, pk)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("bench"))
	for _, bc := range []struct {
		name   string
		signer crypto.Signer
		lean   bool
	}{
		{"key/grpc", ks, false}, {"key/lean", ks, true},
		{"pal/grpc", ps, false}, {"pal/lean", ps, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c.UseLean(bc.lean)
			defer c.UseLean(true)
			defer cpuMeter(b, d.cmd.Process.Pid)()
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0))) // 64 goroutines
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bc.signer.Sign(nil, digest[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	d.stop()
}

// cpuMeter measures the CPU time that this process and the process pid spend from now until
// its result is reported, per op ("cpu-µs/op"): on a machine shared with other work, the
// steadier figure than time per op, and the one that capacity depends on.
func cpuMeter(b *testing.B, pid int) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name (which may hold spaces): utime and stime are the
		// 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return self + time.Duration(ut+st)*10*time.Millisecond
	}
	t0 := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-t0)/float64(b.N)/1e3, "cpu-µs/op")
	}
}
