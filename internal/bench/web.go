package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade-project/palisade/internal/p11web"
)

// webPoint is one (key, backend, concurrency) point of the web-server section: nginx doing full
// TLS 1.2 handshakes, measured by ab.
type webPoint struct {
	Alg         string
	Backend     string // "file", "palisade", "softhsm2", "tpm2-pkcs11"
	Concurrency int
	RPS         float64 // ab's requests per second, median of rounds
	CPUPerReqUs float64 // CPU of nginx's processes (and palisaded's for palisade) per request, median
	PairedRatio float64 // median over rounds of RPS ÷ the key-in-file server's RPS in the same round
	GoRPS       float64 `json:",omitempty"` // the Go load generator's requests per second, one run
	// Workers is the worker_processes of this backend's nginx (tpm2-pkcs11's differs from the
	// others', webTPM2Note); 0 in results written before it was recorded.
	Workers int `json:",omitempty"`
}

// webSign is one module's C_Sign latency, measured alone (no TLS, no web server).
type webSign struct {
	Alg, Backend     string
	MedianUs, MeanUs float64
}

// webGoal is the web-server section's throughput goal against the key in a file (issue #13).
var webGoal = map[string]float64{"rsa-2048": 0.93, "ecdsa-p256": 0.85}

// webTPM2Note says how tpm2-pkcs11 is measured, and why its server differs from the others.
const webTPM2Note = "tpm2-pkcs11 runs on swtpm through tpm2-abrmd (on a private D-Bus bus); swtpm is far faster than a TPM chip, which takes tens of ms a signature, so its figures flatter tpm2-pkcs11. " +
	"Its nginx runs one worker, not two, and without ssl_engine: tpm2-pkcs11 does not survive fork (a worker's C_Initialize returns CKR_CRYPTOKI_ALREADY_INITIALIZED and it goes on with the master's TPM session, so a second worker's signatures fail the session's HMAC check), " +
	"and ssl_engine makes the pkcs11 engine OpenSSL's default RSA and EC method, into which tss2-esys's own RSA for the session's salt then goes, and the key does not load (internal/p11web TPM2.Nginx). " +
	"Its CPU per request counts tpm2-abrmd besides nginx; swtpm, standing for the chip, is not counted."

// webBackend is one way nginx holds its key.
type webBackend struct {
	name   string
	host   p11web.VHost
	env    []string
	module string // PKCS#11 module for the latency measurement; "" for the key file
	label  string
	pin    string
	daemon bool  // palisaded's CPU counts
	pids   []int // other processes whose CPU counts (tpm2-abrmd)
	opts   p11web.NginxOptions
	nginx  *p11web.Nginx
}

// benchWeb runs the web-server section (the paper's Table 7 with a real server): the same nginx
// with its key in a file, in Palisade through the PKCS#11 module, in SoftHSM2 and in tpm2-pkcs11 on swtpm, in paired
// rounds (each round runs every backend once, in rotated order).
func benchWeb(ctx context.Context, cfg Config, p *progress, r *benchReport) error {
	if cfg.WebRequests == 0 {
		r.Notes = append(r.Notes, "Web servers: skipped (--quick: the section builds palisaded and the PKCS#11 module and runs nginx, about a minute; run it with --sections web)")
		return nil
	}
	if m := p11web.Missing(); m != "" {
		r.Notes = append(r.Notes, "Web servers: skipped, this machine lacks "+m+" (scripts/setup.sh installs the packages)")
		return nil
	}
	p.note("web: building palisaded and the PKCS#11 module")
	dir, err := os.MkdirTemp("", "palisade-bench-web-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e, err := p11web.Start(ctx, dir)
	if err != nil {
		return err
	}
	defer e.Close()
	_, softErr := exec.LookPath("softhsm2-util")
	if softErr != nil {
		r.Notes = append(r.Notes, "Web servers: SoftHSM2 skipped, softhsm2 is not installed")
	}
	tpm2Missing := p11web.TPM2Missing()
	if tpm2Missing != "" {
		r.Notes = append(r.Notes, "Web servers: tpm2-pkcs11 skipped, this machine lacks "+tpm2Missing+" (scripts/setup.sh installs the packages)")
	} else {
		r.Notes = append(r.Notes, "Web servers: "+webTPM2Note)
	}
	// The module's log opens a file per signature: off while measuring.
	noLog := []string{"PALISADE_PKCS11_LOG="}
	for _, alg := range []string{"rsa-2048", "ecdsa-p256"} {
		p.note("web: setting up " + alg)
		kind := map[string]string{"ecdsa-p256": "ecdsa", "rsa-2048": "rsa"}[alg]
		keyFile, fileCert, err := e.FileKey("file-"+alg, alg)
		if err != nil {
			return err
		}
		palKey := "tls-" + alg
		palCert, err := e.CreateKey(ctx, palKey, alg)
		if err != nil {
			return err
		}
		var backends []*webBackend
		add := func(b *webBackend) error {
			port, err := p11web.FreePort()
			b.host.Port = port
			backends = append(backends, b)
			return err
		}
		if err := add(&webBackend{name: "file", host: p11web.VHost{Cert: fileCert, Key: keyFile}, env: noLog}); err != nil {
			return err
		}
		if err := add(&webBackend{name: "palisade", host: p11web.VHost{Cert: palCert, Key: "pkcs11:token=palisade;object=" + palKey + ";type=private"},
			env: noLog, module: e.Module, label: palKey, daemon: true}); err != nil {
			return err
		}
		if softErr == nil {
			env, err := e.SoftHSM(ctx, alg, keyFile)
			if err != nil {
				return err
			}
			if err := add(&webBackend{name: "softhsm2", host: p11web.VHost{Cert: fileCert, Key: "pkcs11:token=bench;object=k;type=private;pin-value=1234"},
				env: env, module: p11web.SoftHSMModule, label: "k", pin: "1234"}); err != nil {
				return err
			}
		}
		if tpm2Missing == "" {
			p.note("web: " + alg + " tpm2-pkcs11 on swtpm")
			tpm, err := e.StartTPM2(ctx, "tpm2-"+alg, keyFile, alg)
			if err != nil {
				// Not fatal: the other backends are still measured, and the report says why
				// this one is missing.
				first, _, _ := strings.Cut(err.Error(), "\n")
				r.Notes = append(r.Notes, fmt.Sprintf("Web servers: tpm2-pkcs11 (%s) not measured, its set-up failed: %s", alg, first))
				r.Errors = append(r.Errors, fmt.Sprintf("web: tpm2-pkcs11 %s: %v", alg, err))
			} else {
				defer tpm.Stop()
				if err := add(&webBackend{name: "tpm2-pkcs11", host: p11web.VHost{Cert: fileCert, Key: "pkcs11:token=bench;object=k;type=private;pin-value=1234"},
					env: tpm.Env, module: p11web.TPM2Module, label: "k", pin: "1234", pids: tpm.DaemonPIDs(), opts: tpm.Nginx}); err != nil {
					return err
				}
			}
		}
		for _, b := range backends {
			if b.module == "" {
				continue
			}
			p.note("web: " + alg + " " + b.name + " signature latency")
			med, mean, err := e.SignLatency(ctx, b.env, b.module, b.label, kind, cfg.WebSigns, b.pin)
			if err != nil {
				return fmt.Errorf("%s %s: %w", alg, b.name, err)
			}
			r.WebSign = append(r.WebSign, webSign{Alg: alg, Backend: b.name, MedianUs: med, MeanUs: mean})
		}
		served := backends[:0]
		for _, b := range backends {
			if b.nginx, err = e.StartNginxWith("nginx-"+alg+"-"+b.name, []p11web.VHost{b.host}, b.opts, b.env...); err != nil {
				if b.name != "tpm2-pkcs11" {
					return err
				}
				// Not fatal, as its set-up: the others are still measured.
				first, _, _ := strings.Cut(err.Error(), "\n")
				r.Notes = append(r.Notes, fmt.Sprintf("Web servers: tpm2-pkcs11 (%s) throughput not measured, nginx did not start with it: %s", alg, first))
				r.Errors = append(r.Errors, fmt.Sprintf("web: tpm2-pkcs11 %s nginx: %v", alg, err))
				continue
			}
			defer b.nginx.Stop()
			served = append(served, b)
		}
		backends = served
		if err := webRounds(ctx, e, alg, backends, cfg, p, r); err != nil {
			return err
		}
		for _, b := range backends {
			b.nginx.Stop()
		}
	}
	r.Notes = append(r.Notes, "Web servers: nginx 2 workers, a 9-byte page; ab -f TLS1.2, a new connection and a full handshake per request (no session reuse); CPU is nginx's master and workers (and palisaded for Palisade) from /proc, ab excluded. The Go load generator column is one run of the same server with Go's TLS client, max TLS 1.2, as a cross-check of ab.")
	return nil
}

// webRounds measures every backend at every level in cfg.WebRounds paired rounds.
func webRounds(ctx context.Context, e *p11web.Env, alg string, backends []*webBackend, cfg Config, p *progress, r *benchReport) error {
	for _, level := range cfg.WebLevels {
		rps := make([][]float64, len(backends))
		cpu := make([][]float64, len(backends))
		ratio := make([][]float64, len(backends))
		for round := 0; round < cfg.WebRounds; round++ {
			got := make([]float64, len(backends))
			for j := range backends {
				i := (j + round) % len(backends) // rotate which backend goes first
				b := backends[i]
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p.note(fmt.Sprintf("web %s %s, concurrency %d, round %d/%d", alg, b.name, level, round+1, cfg.WebRounds))
				pids, err := b.nginx.PIDs()
				if err != nil {
					return err
				}
				if b.daemon {
					pids = append(pids, e.DaemonPID())
				}
				pids = append(pids, b.pids...)
				c0, err := p11web.CPUOf(pids)
				if err != nil {
					return err
				}
				v, err := p11web.AB(ctx, b.host.Port, level, cfg.WebRequests)
				if err != nil {
					return fmt.Errorf("%s %s concurrency %d: %w\n%s", alg, b.name, level, err, b.nginx.Log())
				}
				c1, err := p11web.CPUOf(pids)
				if err != nil {
					return err
				}
				got[i] = v
				rps[i] = append(rps[i], v)
				cpu[i] = append(cpu[i], us(c1-c0)/float64(cfg.WebRequests))
			}
			for i := range backends {
				ratio[i] = append(ratio[i], got[i]/got[0])
			}
		}
		for i, b := range backends {
			pt := webPoint{Alg: alg, Backend: b.name, Concurrency: level, RPS: median(rps[i]), CPUPerReqUs: median(cpu[i]), PairedRatio: median(ratio[i]),
				Workers: b.opts.WorkerProcesses()}
			g, err := goLoad(ctx, b.host, level, cfg.WebRequests)
			if err != nil {
				return fmt.Errorf("%s %s concurrency %d, Go load generator: %w", alg, b.name, level, err)
			}
			pt.GoRPS = g
			r.Web = append(r.Web, pt)
			p.step(fmt.Sprintf("web %s %s, concurrency %d", alg, b.name, level))
		}
	}
	return nil
}

// goLoad makes n requests to h at concurrency level with Go's TLS client, each on a new
// connection with a full TLS 1.2 handshake, and returns requests per second; every request
// must succeed.
func goLoad(ctx context.Context, h p11web.VHost, level, n int) (float64, error) {
	pemBytes, err := os.ReadFile(h.Cert)
	if err != nil {
		return 0, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < level; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12}}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				resp, err := hc.Get("https://127.0.0.1:" + h.Port + "/")
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.TLS == nil || resp.TLS.DidResume || resp.TLS.Version != tls.VersionTLS12 || !strings.HasPrefix(string(b), "palisade")) {
						err = fmt.Errorf("not a full TLS 1.2 handshake serving the page: %q", b)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		return 0, e
	}
	return float64(n) / time.Since(start).Seconds(), ctx.Err()
}
