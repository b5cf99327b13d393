package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// benchReport is everything a run measured (results.json) and how it renders (results.md).
type benchReport struct {
	Started    time.Time
	Took       string
	Quick      bool
	Machine    string
	GoVersion  string
	GOMAXPROCS int
	Engines    []string
	Errors     []string `json:",omitempty"`

	HTTPS  []httpsPoint
	Sign   []signTiming
	Sign64 []sign64Row
	SSH    []sshResult
	// OpenSSH: password logins with the real sshd and ssh, one row per PAM stack, the same
	// stacks under pamtester, the native Argon2id time of the same run (parameters in
	// OpenSSHArgon2), the isolation cost computed from them, and what was not measured
	// and why (openssh.go).
	OpenSSH               []sshResult     `json:",omitempty"`
	OpenSSHPamtester      []sshResult     `json:",omitempty"`
	OpenSSHNativeArgon2Ms float64         `json:",omitempty"`
	OpenSSHArgon2         string          `json:",omitempty"`
	OpenSSHIsolation      []isolationCost `json:",omitempty"`
	OpenSSHNotMeasured    []string        `json:",omitempty"`
	UTPM                  []tpmOp
	Lifecycle             []lifeRow
	// Web: nginx with its key in a file and behind PKCS#11 modules (web.go).
	Web []webPoint `json:",omitempty"`
	// Agents: ssh-agent signatures, Palisade vs a key file (agent.go).
	Agents  []agentResult `json:",omitempty"`
	WebSign []webSign     `json:",omitempty"`
	Notes   []string
}

type httpsPoint struct {
	Alg         string
	Mode        string // "plain" or "pal-ENGINE"
	Concurrency int
	TPS         float64
	Requests    int
	Errors      int
	PairedRatio float64 // median over rounds of TPS ÷ the plain server's TPS in the same round
	CPUPerTxUs  float64 // CPU time of this process (server, client, daemon) per transaction
	CPURatio    float64 // median over rounds of plain CPU/tx ÷ this CPU/tx: capacity ratio
	ABTPS       float64 `json:",omitempty"` // ab's requests per second for the same point
}

type signTiming struct {
	Alg, Mode  string
	MedianUs   float64
	P90Us      float64
	Signatures int
}

// sign64Row is signing throughput with 64 concurrent callers over one transport.
type sign64Row struct {
	Alg, Transport string
	PerSec         float64 // signatures per second
	CPUPerSigUs    float64 // CPU time of this process (client and daemon) per signature
}

type sshResult struct {
	Mode          string
	Logins        int
	MedianMs      float64
	P90Ms         float64
	CheckMedianMs float64 `json:",omitempty"` // the password check alone, called directly (example server)

	// OpenSSH rows: the PAM stack's kind (stackPermit, stackUnix, stackPalisade), pam_unix's
	// hash method ("$6$", "$y$j9T$") and pam_palisade's engine.
	Stack  string `json:",omitempty"`
	Hash   string `json:",omitempty"`
	Engine string `json:",omitempty"`
}

// isolationCost is the formula for one (pam_unix hash, pam_palisade engine) pair and
// one way of measuring (an ssh login, or pamtester's pam_authenticate): CostMs = PalisadeMs −
// UnixMs − NativeMs, medians. VsPermitMs = PalisadeMs − PermitMs − NativeMs is the same with the
// no-check stack as baseline, which does not assume pam_unix's own hash costs nothing.
type isolationCost struct {
	Measure                      string
	UnixMode, UnixHash, Engine   string
	PalisadeMs, UnixMs, NativeMs float64
	CostMs                       float64
	GoalMs                       float64
	Met                          bool
	PermitMs, VsPermitMs         float64 `json:",omitempty"`
}

type tpmOp struct {
	Op      string
	UTPMUs  float64
	SWTPMUs float64
}

type lifeRow struct {
	Engine, PAL, Layer string
	RegisterUs         float64
	CallUs             float64
	UnregisterUs       float64
}

// Paper figures for XMHF64-TrustVisor (µs): register, invoke, unregister.
var trustVisor = []struct {
	name       string
	reg, call  float64
	unregister float64
}{{"XMHF64-TrustVisor, bare metal", 91.7, 23.1, 20.0}, {"XMHF64-TrustVisor, nested KVM", 148, 37.4, 42.7}}

// Goals of issue 6: PAL-held key throughput as a fraction of plain crypto/tls.
var httpsGoal = map[string]float64{"rsa2048": 0.93, "ecdsa-p256": 0.85}

const sshGoalMs = 1.0

// isolationGoalMs is the goal for pam_palisade − pam_unix − native Argon2id.
const isolationGoalMs = 2.0

func median(xs []float64) float64 { return quantile(xs, 0.5) }

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := q * float64(len(s)-1)
	lo := int(math.Floor(i))
	hi := int(math.Ceil(i))
	return s[lo] + (s[hi]-s[lo])*(i-float64(lo))
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func (r *benchReport) point(alg, mode string, c int) *httpsPoint {
	for i := range r.HTTPS {
		p := &r.HTTPS[i]
		if p.Alg == alg && p.Mode == mode && p.Concurrency == c {
			return p
		}
	}
	return nil
}

func (r *benchReport) modes() []string {
	seen := map[string]bool{}
	var ms []string
	for _, p := range r.HTTPS {
		if p.Mode != "plain" && !seen[p.Mode] {
			seen[p.Mode] = true
			ms = append(ms, p.Mode)
		}
	}
	return ms
}

func (r *benchReport) levels() []int {
	seen := map[int]bool{}
	var ls []int
	for _, p := range r.HTTPS {
		if !seen[p.Concurrency] {
			seen[p.Concurrency] = true
			ls = append(ls, p.Concurrency)
		}
	}
	sort.Ints(ls)
	return ls
}

func (r *benchReport) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# palisade bench\n\n")
	w("%s · %s · GOMAXPROCS %d · engines: %s · %s · took %s", r.Started.Format("2006-01-02 15:04 MST"), r.Machine, r.GOMAXPROCS, strings.Join(r.Engines, ", "), r.GoVersion, r.Took)
	if r.Quick {
		w(" · **--quick: tiny counts, the numbers mean little**")
	}
	w("\n\n")
	for _, e := range r.Errors {
		w("**Error:** %s\n\n", e)
	}

	if len(r.HTTPS) > 0 {
		w("## HTTPS: transactions/s, a full TLS 1.3 handshake per transaction (paper Table 7)\n\n")
		w("Server and load generator share this machine. Plain: crypto/tls with the key in memory. PAL: the key is a µTPM key object, every handshake signature is a call through palisaded to a signing PAL. Each figure is the median of paired rounds; ratio = median over rounds of PAL ÷ plain in the same round.\n\n")
		modes := r.modes()
		algs := []string{}
		for _, a := range []string{"rsa2048", "ecdsa-p256"} {
			for _, p := range r.HTTPS {
				if p.Alg == a {
					algs = append(algs, a)
					break
				}
			}
		}
		// goals states, per key type and mode, whether the lowest ratio over all concurrency
		// levels reaches the goal.
		goals := func(what string, ratio func(*httpsPoint) float64) {
			for _, a := range algs {
				for _, m := range modes {
					minR, at := math.Inf(1), 0
					for _, c := range r.levels() {
						if pp := r.point(a, m, c); pp != nil && ratio(pp) < minR {
							minR, at = ratio(pp), c
						}
					}
					if g, ok := httpsGoal[a]; ok && !math.IsInf(minR, 1) {
						verdict := "**met**"
						if minR < g {
							verdict = "**not met**"
						}
						w("- Goal %s %s ≥ %.0f%% %s: %s (lowest %.1f%% at concurrency %d).\n", a, m, g*100, what, verdict, minR*100, at)
					}
				}
			}
		}
		// table writes one row per concurrency level: for each key type the plain figure, then
		// for each PAL mode its figure and its ratio to plain.
		table := func(ratioHeader string, cell func(*httpsPoint) string, ratio func(pp, pl *httpsPoint) string) {
			hdr, sep := "| concurrency |", "|---:|"
			for _, a := range algs {
				hdr += fmt.Sprintf(" %s plain |", a)
				sep += "---:|"
				for _, m := range modes {
					hdr += fmt.Sprintf(" %s %s | %s |", a, m, ratioHeader)
					sep += "---:|---:|"
				}
			}
			w("%s\n%s\n", hdr, sep)
			for _, c := range r.levels() {
				w("| %d |", c)
				for _, a := range algs {
					pl := r.point(a, "plain", c)
					w(" %s |", cell(pl))
					for _, m := range modes {
						pp := r.point(a, m, c)
						w(" %s | %s |", cell(pp), ratio(pp, pl))
					}
				}
				w("\n")
			}
			w("\n")
		}
		table("ratio", tps, ratio)
		goals("of plain at every concurrency (throughput)", func(p *httpsPoint) float64 { return p.PairedRatio })
		w("\nCPU time per transaction (this process: server, load generator and daemon; µs) and capacity ratio = plain CPU/tx ÷ PAL CPU/tx, paired by round. On a machine shared with other work this is the steadier figure: it is what saturated throughput would be on a dedicated machine.\n\n")
		table("capacity ratio", cpuTx, func(pp, _ *httpsPoint) string {
			return pct(pp, func(p *httpsPoint) float64 { return p.CPURatio })
		})
		goals("(capacity, CPU per transaction)", func(p *httpsPoint) float64 { return p.CPURatio })
		var abRows []httpsPoint
		for _, p := range r.HTTPS {
			if p.ABTPS > 0 {
				abRows = append(abRows, p)
			}
		}
		if len(abRows) > 0 {
			w("\nCross-check with `ab -f TLS1.2` (apache2-utils, no keep-alive: a full handshake per request; TLS 1.2 because over TLS 1.3 ab stalls 40 ms per request on a delayed ACK, see docs/evaluation.md):\n\n| key | mode | concurrency | Go load generator | ab | ab ÷ Go |\n|---|---|---:|---:|---:|---:|\n")
			for _, p := range abRows {
				w("| %s | %s | %d | %.0f | %.0f | %.2f |\n", p.Alg, p.Mode, p.Concurrency, p.TPS, p.ABTPS, p.ABTPS/p.TPS)
			}
		}
		w("\n")
	}
	if len(r.Sign) > 0 {
		w("### Where the time goes: one signature, serially (µs)\n\n| key | signer | median | p90 | n |\n|---|---|---:|---:|---:|\n")
		for _, s := range r.Sign {
			w("| %s | %s | %.0f | %.0f | %d |\n", s.Alg, s.Mode, s.MedianUs, s.P90Us, s.Signatures)
		}
		w("\n")
	}
	if len(r.Sign64) > 0 {
		w("### Signatures with 64 concurrent callers, PAL-held key, gRPC vs the lean protocol\n\n| key | transport | signatures/s | CPU µs per signature | ÷ gRPC |\n|---|---|---:|---:|---:|\n")
		grpc := map[string]float64{}
		for _, s := range r.Sign64 {
			if s.Transport == "gRPC" {
				grpc[s.Alg] = s.PerSec
			}
		}
		for _, s := range r.Sign64 {
			w("| %s | %s | %.0f | %.1f | %.2f× |\n", s.Alg, s.Transport, s.PerSec, s.CPUPerSigUs, s.PerSec/grpc[s.Alg])
		}
		w("\n")
	}
	if len(r.SSH) > 0 {
		w("## SSH password login: connect → password auth → command output (paper Tables 5–6)\n\n")
		w("Go SSH client, `whoami` on the example server (examples/sshpass). Both check Argon2id verifiers with the same parameters; plain holds them in the server's memory and hashes natively, PAL is pam_palisade's C checking PAL (wasm) through sshpass.PassDB (sealed database, lockout).\n\n")
		w("| checker | logins | median login (ms) | p90 (ms) | password check alone, median (ms) |\n|---|---:|---:|---:|---:|\n")
		var plain *sshResult
		for i, s := range r.SSH {
			w("| %s | %d | %.2f | %.2f | %.2f |\n", s.Mode, s.Logins, s.MedianMs, s.P90Ms, s.CheckMedianMs)
			if s.Mode == "plain" {
				plain = &r.SSH[i]
			}
		}
		for _, s := range r.SSH {
			if s.Mode != "plain" && plain != nil {
				o := s.MedianMs - plain.MedianMs
				verdict := "**met**"
				if o > sshGoalMs {
					verdict = "**not met**"
				}
				w("\n- Login overhead (%s − plain, medians): %.2f ms; goal ≤ %.0f ms: %s. Password check alone: %.2f ms vs %.2f ms.\n", s.Mode, o, sshGoalMs, verdict, s.CheckMedianMs, plain.CheckMedianMs)
			}
		}
		w("\n")
	}
	if len(r.OpenSSH) > 0 || len(r.OpenSSHNotMeasured) > 0 {
		r.openSSHMarkdown(w)
	}
	if len(r.UTPM) > 0 {
		w("## µTPM operations vs the same operations on a TPM (swtpm), µs, medians\n\n| operation | µTPM | swtpm | swtpm ÷ µTPM |\n|---|---:|---:|---:|\n")
		for _, o := range r.UTPM {
			w("| %s | %.1f | %.1f | %.0f× |\n", o.Op, o.UTPMUs, o.SWTPMUs, o.SWTPMUs/o.UTPMUs)
		}
		w("\n")
	}
	if len(r.Lifecycle) > 0 {
		w("## PAL registration / invocation / unregistration, µs, medians\n\n| engine | PAL | measured at | register | invoke (null call) | unregister |\n|---|---|---|---:|---:|---:|\n")
		for _, l := range r.Lifecycle {
			w("| %s | %s | %s | %s | %.1f | %s |\n", l.Engine, l.PAL, l.Layer, orDash(l.RegisterUs), l.CallUs, orDash(l.UnregisterUs))
		}
		for _, t := range trustVisor {
			w("| %s | (paper) | hypercall | %.1f | %.1f | %.1f |\n", t.name, t.reg, t.call, t.unregister)
		}
		w("\n")
	}
	r.agentMarkdown(w)
	r.webMarkdown(w)
	for _, n := range r.Notes {
		w("- %s\n", n)
	}
	return b.String()
}

func tps(p *httpsPoint) string {
	if p == nil {
		return "–"
	}
	s := fmt.Sprintf("%.0f", p.TPS)
	if p.Errors > 0 {
		s += fmt.Sprintf(" (%d errors)", p.Errors)
	}
	return s
}

func cpuTx(p *httpsPoint) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f", p.CPUPerTxUs)
}

func pct(p *httpsPoint, f func(*httpsPoint) float64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*f(p))
}

func ratio(p, plain *httpsPoint) string {
	if p == nil || plain == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*p.PairedRatio)
}

// chart draws two panels: HTTPS throughput against concurrency, one line per key and mode;
// and the capacity ratio (CPU per transaction, plain ÷ PAL) with the goals.
func (r *benchReport) chart(path string) error {
	var ticks []plot.Tick
	for _, c := range r.levels() {
		ticks = append(ticks, plot.Tick{Value: float64(c), Label: fmt.Sprint(c)})
	}
	newPlot := func(title, ylabel string) *plot.Plot {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "concurrency (log scale)"
		p.Y.Label.Text = ylabel
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		return p
	}
	colors := map[string]color.Color{
		"rsa2048": color.RGBA{R: 0xc0, G: 0x39, B: 0x2b, A: 0xff}, "ecdsa-p256": color.RGBA{R: 0x29, G: 0x80, B: 0xb9, A: 0xff},
	}
	line := func(p *plot.Plot, label string, xys plotter.XYs, c color.Color, dashed bool) error {
		if len(xys) == 0 {
			return nil
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		l.Color, s.Color = c, c
		l.Width = vg.Points(1.5)
		s.Shape, s.Radius = draw.CircleGlyph{}, vg.Points(3)
		if dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			s.Shape = draw.TriangleGlyph{}
		}
		p.Add(l, s)
		p.Legend.Add(label, l, s)
		return nil
	}
	tp := newPlot("HTTPS, full handshake per transaction", "transactions / s (median of rounds)")
	cp := newPlot("Capacity with the PAL-held key", "plain CPU/tx ÷ PAL CPU/tx (%)")
	cp.Y.Max = 120
	modes := append([]string{"plain"}, r.modes()...)
	for _, a := range []string{"rsa2048", "ecdsa-p256"} {
		for mi, m := range modes {
			var tx, cx plotter.XYs
			for _, c := range r.levels() {
				if pt := r.point(a, m, c); pt != nil {
					tx = append(tx, plotter.XY{X: float64(c), Y: pt.TPS})
					if mi > 0 {
						cx = append(cx, plotter.XY{X: float64(c), Y: 100 * pt.CPURatio})
					}
				}
			}
			if err := line(tp, a+" "+m, tx, colors[a], mi > 0); err != nil {
				return err
			}
			if err := line(cp, a+" "+m, cx, colors[a], true); err != nil {
				return err
			}
		}
		if g, ok := httpsGoal[a]; ok && len(ticks) > 0 {
			goal := plotter.XYs{{X: ticks[0].Value, Y: 100 * g}, {X: ticks[len(ticks)-1].Value, Y: 100 * g}}
			l, err := plotter.NewLine(goal)
			if err != nil {
				return err
			}
			l.Color = colors[a]
			l.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
			cp.Add(l)
			cp.Legend.Add(fmt.Sprintf("goal %s %.0f%%", a, 100*g), l)
		}
	}
	cp.Legend.Top = false
	const w, h = 13 * vg.Inch, 5 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4, PadY: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8}
	cs := plot.Align([][]*plot.Plot{{tp, cp}}, tiles, dc)
	tp.Draw(cs[0][0])
	cp.Draw(cs[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// progress draws a bar on stderr: a run takes a minute or more.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	total int
	n     int
	label string
	start time.Time
	ended bool
}

func newProgress(w io.Writer, cfg Config, want map[string]bool) *progress {
	total := 0
	if want["https"] {
		total += 2*2*len(cfg.Levels) + 2 // points, plus the serial signature timings
	}
	if want["ssh"] {
		total += 3 // the example server's two checkers, then the OpenSSH logins
		if cfg.AgentSigns > 0 {
			total++
		}
	}
	if want["utpm"] {
		total += 4
	}
	if want["lifecycle"] {
		total += 4
	}
	if want["web"] && cfg.WebRequests > 0 {
		total += 2 * 4 * len(cfg.WebLevels) // (key, backend, level) points
	}
	return &progress{w: w, total: max(total, 1), start: time.Now()}
}

func (p *progress) note(label string) { p.set(0, label) }
func (p *progress) step(label string) { p.set(1, label) }

func (p *progress) set(inc int, label string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.n = min(p.n+inc, p.total)
	p.label = label
	const width = 30
	fill := width * p.n / p.total
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %3d%% %5s  %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		100*p.n/p.total, time.Since(p.start).Round(time.Second), label)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended {
		p.ended = true
		fmt.Fprintf(p.w, "\r\033[K[%s] 100%% %5s  done\n", strings.Repeat("#", 30), time.Since(p.start).Round(time.Second))
	}
}

// orDash formats a figure, or "–" for one not measured (0).
func orDash(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}
