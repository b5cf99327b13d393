package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/examples/tlskey"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// httpsServer is one server under test.
type httpsServer struct {
	alg, mode string
	addr      string
	roots     *x509.CertPool
	signer    crypto.Signer
	close     func()
}

func benchHTTPS(ctx context.Context, d *apps.Daemon, imgs palImages, cfg Config, p *progress, r *benchReport) error {
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var servers []*httpsServer
	defer func() {
		for _, s := range servers {
			s.close()
		}
	}()
	for _, alg := range []tlskey.Alg{tlskey.RSA2048, tlskey.ECDSAP256} {
		p.note("HTTPS: setting up " + string(alg) + " servers")
		plain, err := plainKey(alg)
		if err != nil {
			return err
		}
		s, err := startHTTPS(string(alg), "plain", plain, nil)
		if err != nil {
			return err
		}
		servers = append(servers, s)
		// One signing PAL per core: a PAL instance runs one call at a time (the paper gave
		// each Apache child its own PAL).
		k, err := tlskey.Setup(ctx, c, tlskey.Images{Keygen: imgs.keygen, Signer: imgs.signer}, tlskey.Options{Alg: alg, Engine: "wasm"})
		if err != nil {
			return err
		}
		s, err = startHTTPS(string(alg), "pal-wasm", k.Signer(), &k.Cert)
		if err != nil {
			k.Close(context.Background())
			return err
		}
		inner := s.close
		s.close = func() { inner(); k.Close(context.Background()) }
		servers = append(servers, s)
	}

	// Where the time goes: one signature at a time, in memory vs through the daemon and PAL.
	for _, s := range servers {
		if s.mode == "plain" {
			continue
		}
		p.note("HTTPS: timing single signatures, " + s.alg)
		for _, sg := range []struct {
			mode string
			s    crypto.Signer
		}{{"plain (in memory)", plainSignerFor(servers, s.alg)}, {"PAL via palisaded (wasm)", s.signer}} {
			t, err := timeSign(sg.s, cfg.SignIters)
			if err != nil {
				return fmt.Errorf("%s %s: %w", s.alg, sg.mode, err)
			}
			t.Alg, t.Mode = s.alg, sg.mode
			r.Sign = append(r.Sign, t)
		}
		p.step("HTTPS: signatures timed, " + s.alg)
		// Throughput with 64 callers at once, as a busy TLS server's workers sign, over each
		// transport of the same client (its calls go over the lean protocol unless told not to).
		for _, tr := range []string{"gRPC", "lean protocol"} {
			c.UseLean(tr != "gRPC")
			row, err := sign64(s.signer, max(cfg.Point, 500*time.Millisecond))
			c.UseLean(true)
			if err != nil {
				return fmt.Errorf("%s, 64 signers over %s: %w", s.alg, tr, err)
			}
			row.Alg, row.Transport = s.alg, tr
			r.Sign64 = append(r.Sign64, row)
		}
	}

	// These machines are shared and their load varies by the second, so each point is the
	// median of several rounds, and in each round the plain and PAL servers of a key type run
	// back to back: the ratio is the median of the per-round ratios (paired samples).
	rounds := max(int(cfg.Point/(400*time.Millisecond)), 2)
	slice := cfg.Point / time.Duration(rounds)
	for _, level := range cfg.Levels {
		for _, alg := range []string{"rsa2048", "ecdsa-p256"} {
			var pair []*httpsServer
			for _, s := range servers {
				if s.alg == alg {
					pair = append(pair, s)
				}
			}
			tpsBy := make([][]float64, len(pair))
			cpuBy := make([][]float64, len(pair))
			ratios := make([][]float64, len(pair))
			cpuRatios := make([][]float64, len(pair))
			pts := make([]httpsPoint, len(pair))
			for i, s := range pair {
				pts[i] = httpsPoint{Alg: s.alg, Mode: s.mode, Concurrency: level}
				p.note(fmt.Sprintf("HTTPS %s %s, concurrency %d: warm-up", s.alg, s.mode, level))
				if _, err := loadgen(ctx, s, level, min(slice/2, 200*time.Millisecond)); err != nil {
					return err
				}
			}
			for round := 0; round < rounds; round++ {
				for i, s := range pair {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					p.note(fmt.Sprintf("HTTPS %s %s, concurrency %d, round %d/%d", s.alg, s.mode, level, round+1, rounds))
					pt, err := loadgen(ctx, s, level, slice)
					if err != nil {
						return err
					}
					tpsBy[i] = append(tpsBy[i], pt.TPS)
					cpuBy[i] = append(cpuBy[i], pt.CPUPerTxUs)
					pts[i].Requests += pt.Requests
					pts[i].Errors += pt.Errors
				}
				for i := range pair {
					ratios[i] = append(ratios[i], tpsBy[i][round]/tpsBy[0][round])
					cpuRatios[i] = append(cpuRatios[i], cpuBy[0][round]/cpuBy[i][round])
				}
			}
			for i, s := range pair {
				pts[i].TPS = median(tpsBy[i])
				pts[i].PairedRatio = median(ratios[i])
				pts[i].CPUPerTxUs = median(cpuBy[i])
				pts[i].CPURatio = median(cpuRatios[i])
				if cfg.ABRequests > 0 {
					var err error
					if pts[i].ABTPS, err = runAB(ctx, s.addr, level, max(cfg.ABRequests, level)); err != nil {
						r.Notes = append(r.Notes, fmt.Sprintf("ab cross-check failed: %v", err))
						cfg.ABRequests = 0
					}
				}
				r.HTTPS = append(r.HTTPS, pts[i])
				p.step(fmt.Sprintf("HTTPS %s %s c=%d: %.0f/s", s.alg, s.mode, level, pts[i].TPS))
			}
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("HTTPS: %v per point in paired rounds (plain and PAL back to back, median of rounds and of per-round ratios) after a warm-up; Go load generator with one http.Client per worker, DisableKeepAlives, no client session cache; server with session tickets disabled, so every transaction is a full handshake (checked: no resumed connection is counted).", cfg.Point))
	return nil
}

func plainSignerFor(servers []*httpsServer, alg string) crypto.Signer {
	for _, s := range servers {
		if s.alg == alg && s.mode == "plain" {
			return s.signer
		}
	}
	return nil
}

func plainKey(alg tlskey.Alg) (crypto.Signer, error) {
	switch alg {
	case tlskey.RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case tlskey.ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("no plain key for %s", alg)
}

// startHTTPS serves the example page with key; cert is nil for a plain key (it self-signs).
func startHTTPS(alg, mode string, key crypto.Signer, cert *tls.Certificate) (*httpsServer, error) {
	if cert == nil {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, err
		}
		leaf, _ := x509.ParseCertificate(der)
		cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := tlskey.Serve(l, tlskey.ServerConfig(*cert), tlskey.Handler())
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return &httpsServer{alg: alg, mode: mode, addr: l.Addr().String(), roots: roots, signer: key, close: func() { srv.Close() }}, nil
}

// loadgen runs level workers for dur, each fetching the page over a new connection (a full
// handshake) again and again, and returns transactions per second.
func loadgen(ctx context.Context, s *httpsServer, level int, dur time.Duration) (httpsPoint, error) {
	pt := httpsPoint{Alg: s.alg, Mode: s.mode, Concurrency: level}
	run := func(d time.Duration) (ok, failed int64, elapsed, cpu time.Duration, err error) {
		var okN, failN, resumed atomic.Int64
		var firstErr atomic.Value
		cpu0 := processCPU()
		start := time.Now()
		deadline := start.Add(d)
		var wg sync.WaitGroup
		for i := 0; i < level; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr := &http.Transport{
					DisableKeepAlives: true,
					TLSClientConfig:   &tls.Config{RootCAs: s.roots, ServerName: "localhost", ClientSessionCache: nil},
				}
				defer tr.CloseIdleConnections()
				hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
				url := "https://" + s.addr + "/"
				for time.Now().Before(deadline) && ctx.Err() == nil {
					resp, err := hc.Get(url)
					if err == nil {
						var b []byte
						b, err = io.ReadAll(resp.Body)
						resp.Body.Close()
						if err == nil && string(b) != tlskey.Page {
							err = fmt.Errorf("unexpected page %q", b)
						}
						if resp.TLS != nil && resp.TLS.DidResume {
							resumed.Add(1)
						}
					}
					if err != nil {
						failN.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					okN.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed, cpu = time.Since(start), processCPU()-cpu0
		if resumed.Load() > 0 {
			return 0, 0, 0, 0, fmt.Errorf("%d resumed TLS sessions: not full handshakes", resumed.Load())
		}
		if e, _ := firstErr.Load().(error); e != nil && okN.Load() == 0 {
			return 0, 0, 0, 0, fmt.Errorf("%s %s concurrency %d: %w", s.alg, s.mode, level, e)
		}
		return okN.Load(), failN.Load(), elapsed, cpu, nil
	}
	ok, failed, elapsed, cpu, err := run(dur)
	if err != nil {
		return pt, err
	}
	pt.Requests, pt.Errors = int(ok), int(failed)
	pt.TPS = float64(ok) / elapsed.Seconds()
	if ok > 0 {
		pt.CPUPerTxUs = us(cpu) / float64(ok)
	}
	return pt, nil
}

func timeSign(s crypto.Signer, n int) (signTiming, error) {
	d := sha256.Sum256([]byte("handshake"))
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := s.Public().(*rsa.PublicKey); ok {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256} // TLS 1.3
	}
	xs := make([]float64, 0, n)
	for i := 0; i < n+n/10+1; i++ {
		t0 := time.Now()
		if _, err := s.Sign(rand.Reader, d[:], opts); err != nil {
			return signTiming{}, err
		}
		if i > n/10 { // the first tenth warms up
			xs = append(xs, us(time.Since(t0)))
		}
	}
	return signTiming{MedianUs: median(xs), P90Us: quantile(xs, 0.9), Signatures: len(xs)}, nil
}

// sign64 signs with s from 64 goroutines for d.
func sign64(s crypto.Signer, d time.Duration) (sign64Row, error) {
	digest := sha256.Sum256([]byte("handshake"))
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := s.Public().(*rsa.PublicKey); ok {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	var (
		n    atomic.Int64
		errs = make(chan error, 64)
		wg   sync.WaitGroup
	)
	end := time.Now().Add(d)
	cpu0, t0 := processCPU(), time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := s.Sign(rand.Reader, digest[:], opts); err != nil {
					errs <- err
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	cpu, el := processCPU()-cpu0, time.Since(t0)
	select {
	case err := <-errs:
		return sign64Row{}, err
	default:
	}
	if n.Load() == 0 {
		return sign64Row{}, errors.New("no signature")
	}
	return sign64Row{PerSec: float64(n.Load()) / el.Seconds(), CPUPerSigUs: us(cpu) / float64(n.Load())}, nil
}

var abRate = regexp.MustCompile(`Requests per second:\s+([0-9.]+)`)
var abFailed = regexp.MustCompile(`Failed requests:\s+([0-9]+)`)

// abArgs are ab's arguments for n requests at concurrency level against addr: no -k, so each
// request is a new connection and a full handshake (ab keeps no TLS session cache), and TLS 1.2
// (-f TLS1.2). Over TLS 1.3 the client sends its Finished and then, in a second small write, the
// request; ab does not set TCP_NODELAY, so Nagle holds the request until the server's delayed
// ACK of the Finished, 40 ms later: ab then measures the stall, not the server (docs/evaluation.md).
// In TLS 1.2 the server speaks last in the handshake, so the request goes out at once.
func abArgs(addr string, level, n int) []string {
	return []string{"-q", "-f", "TLS1.2", "-n", strconv.Itoa(n), "-c", strconv.Itoa(level), "https://" + addr + "/"}
}

// runAB runs ApacheBench against addr (abArgs) and returns its requests per second.
func runAB(ctx context.Context, addr string, level, n int) (float64, error) {
	if _, err := exec.LookPath("ab"); err != nil {
		return 0, fmt.Errorf("ab is not installed (apt-get install apache2-utils)")
	}
	out, err := exec.CommandContext(ctx, "ab", abArgs(addr, level, n)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ab: %w: %s", err, lastLines(out, 3))
	}
	m := abRate.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ab: no rate in output: %s", lastLines(out, 5))
	}
	if f := abFailed.FindSubmatch(out); f != nil && string(f[1]) != "0" {
		return 0, fmt.Errorf("ab: %s failed requests", f[1])
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func lastLines(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprint(lines)
}

// processCPU is the CPU time (user + system) this process has used. Server, load generator
// and daemon all run in this process, so CPU per transaction is what a transaction costs the
// machine, whatever else runs on it.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
