package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/visor"
)

// benchLifecycle measures register, a null call and unregister for each engine: at the visor
// (in process, the layer TrustVisor's hypercalls correspond to) and through palisaded (what
// an application pays: gRPC over the Unix socket on top).
func benchLifecycle(ctx context.Context, d *apps.Daemon, imgs palImages, cfg Config, p *progress, r *benchReport) error {
	type palCase struct {
		engine, name string
		img          []byte
	}
	var cases []palCase
	cNull, err := apps.BuildCNull(ctx, "wasm")
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("lifecycle: no C wasm PAL (%v)", err))
	} else {
		cases = append(cases, palCase{"wasm", "C null PAL", cNull})
	}
	cases = append(cases, palCase{"wasm", "Go null PAL", imgs.goNull})
	if d.HasEngine("kvm") {
		if elf, err := apps.BuildCNull(ctx, "kvm"); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("lifecycle: kvm engine present but the C PAL did not build: %v", err))
		} else {
			cases = append(cases, palCase{"kvm", "C null PAL", elf})
		}
	} else {
		r.Notes = append(r.Notes, "lifecycle: the kvm engine is not offered on this machine (no usable /dev/kvm): kvm rows are missing.")
	}
	v := d.Visor()
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, pc := range cases {
		p.note(fmt.Sprintf("lifecycle: %s %s", pc.engine, pc.name))
		// Warm the engine's compilation cache: registration then measures what a steady
		// server pays, not the first compile.
		if info, err := v.Register(ctx, pc.img, visor.RegisterOptions{Engine: pc.engine}); err != nil {
			return fmt.Errorf("%s %s: %w", pc.engine, pc.name, err)
		} else if err := v.Unregister(ctx, info.Handle); err != nil {
			return err
		}
		for _, layer := range []string{"visor (in process)", "palisaded (gRPC, Unix socket)", "palisaded (lean protocol, Unix socket)"} {
			// Calls go over the lean protocol in its layer only (registrations are gRPC's).
			c.UseLean(strings.Contains(layer, "lean"))
			var reg, call, unreg []float64
			for i := 0; i < cfg.LifeIters; i++ {
				t0 := time.Now()
				var h string
				var vh visor.Handle
				if layer[0] == 'v' {
					info, err := v.Register(ctx, pc.img, visor.RegisterOptions{Engine: pc.engine})
					if err != nil {
						return err
					}
					vh = info.Handle
				} else {
					info, err := c.Register(ctx, pc.img, client.RegisterOptions{Engine: pc.engine})
					if err != nil {
						return err
					}
					h = info.Handle
				}
				reg = append(reg, us(time.Since(t0)))
				// Null calls: many per registration, after one warm-up call.
				n := max(cfg.CallIters/cfg.LifeIters, 1)
				for j := 0; j <= n; j++ {
					t1 := time.Now()
					if layer[0] == 'v' {
						_, err = v.Call(ctx, vh, nil)
					} else {
						_, err = c.Call(ctx, h, nil)
					}
					if err != nil {
						return err
					}
					if j > 0 {
						call = append(call, us(time.Since(t1)))
					}
				}
				t2 := time.Now()
				if layer[0] == 'v' {
					err = v.Unregister(ctx, vh)
				} else {
					err = c.Unregister(ctx, h)
				}
				if err != nil {
					return err
				}
				unreg = append(unreg, us(time.Since(t2)))
			}
			r.Lifecycle = append(r.Lifecycle, lifeRow{Engine: pc.engine, PAL: pc.name, Layer: layer,
				RegisterUs: median(reg), CallUs: median(call), UnregisterUs: median(unreg)})
		}
		p.step(fmt.Sprintf("lifecycle: %s %s", pc.engine, pc.name))
	}
	c.UseLean(true)
	// The floor under a daemon call: a 32-byte echo over a Unix socket, between two goroutines
	// of this process as the daemon here is (palisaded is another process: see cmd/palisaded's
	// BenchmarkSocketRoundTrip).
	rt, err := socketRoundTrip(max(cfg.CallIters, 10))
	if err != nil {
		return fmt.Errorf("socket round trip: %w", err)
	}
	r.Lifecycle = append(r.Lifecycle, lifeRow{Engine: "–", PAL: "32-byte echo", Layer: "bare Unix socket round trip", CallUs: rt})
	for _, l := range r.Lifecycle {
		if l.Engine == "wasm" && l.PAL == "C null PAL" && l.Layer != "visor (in process)" {
			r.Notes = append(r.Notes, fmt.Sprintf("Null call of the C wasm PAL through %s: %.2f× the bare socket round trip.", l.Layer, l.CallUs/rt))
		}
	}
	r.Notes = append(r.Notes, "Lifecycle: register includes measuring the image, validating it and instantiating it (compilation is cached by measurement and warmed first); the null call has empty input and output. TrustVisor's figures are hypercalls on its hardware (paper §7), not this machine.")
	return nil
}

// socketRoundTrip returns the median time of n round trips of 32 bytes over a Unix socket to an
// echoing goroutine, in µs.
func socketRoundTrip(n int) (float64, error) {
	dir, err := os.MkdirTemp("", "palisade-rt-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "echo.sock"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 32)
	var rts []float64
	for i := 0; i <= n; i++ {
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
		if i > 0 {
			rts = append(rts, us(time.Since(t)))
		}
	}
	return median(rts), nil
}
