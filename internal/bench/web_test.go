package bench

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWebVerdicts checks the goal verdicts of the web-server section against hand-made points:
// the throughput goal holds only if it holds at every concurrency level.
func TestWebVerdicts(t *testing.T) {
	pts := func(pal1, pal4, hsm1, hsm4 float64) []webPoint {
		return []webPoint{
			{Alg: "rsa-2048", Backend: "file", Concurrency: 1, PairedRatio: 1},
			{Alg: "rsa-2048", Backend: "palisade", Concurrency: 1, PairedRatio: pal1, Workers: 2},
			{Alg: "rsa-2048", Backend: "softhsm2", Concurrency: 1, PairedRatio: hsm1},
			{Alg: "rsa-2048", Backend: "file", Concurrency: 4, PairedRatio: 1},
			{Alg: "rsa-2048", Backend: "palisade", Concurrency: 4, PairedRatio: pal4, Workers: 2},
			{Alg: "rsa-2048", Backend: "softhsm2", Concurrency: 4, PairedRatio: hsm4},
		}
	}
	withTPM2 := func(p []webPoint, t1, t4 float64) []webPoint {
		return append(p, webPoint{Alg: "rsa-2048", Backend: "tpm2-pkcs11", Concurrency: 1, PairedRatio: t1, Workers: 1},
			webPoint{Alg: "rsa-2048", Backend: "tpm2-pkcs11", Concurrency: 4, PairedRatio: t4, Workers: 1})
	}
	sign := func(pal, tpm float64) []webSign {
		return []webSign{{Alg: "rsa-2048", Backend: "palisade", MedianUs: pal}, {Alg: "rsa-2048", Backend: "tpm2-pkcs11", MedianUs: tpm}}
	}
	tests := []struct {
		name      string
		web       []webPoint
		sign      []webSign
		want, not []string
	}{
		{"all met", pts(0.95, 0.97, 1, 1), nil,
			[]string{"at worst 95.0% of key-in-file", "goal ≥ 93% at every level: **met**", "goal ≥ 0.9×: **met**", "throughput against tpm2-pkcs11 not measured"}, []string{"at every level: **not met**", "0.9×: **not met**"}},
		{"one level below", pts(0.99, 0.92, 1, 1), nil,
			[]string{"at worst 92.0%", "goal ≥ 93% at every level: **not met**"}, nil},
		{"below SoftHSM2", pts(0.95, 0.95, 1.2, 1), nil,
			[]string{"at worst 0.79× SoftHSM2", "goal ≥ 0.9×: **not met**"}, nil},
		{"tpm2-pkcs11 latency only", pts(0.95, 0.95, 1, 1), sign(1000, 6000),
			[]string{"throughput against tpm2-pkcs11 not measured", "tpm2-pkcs11 (swtpm) ÷ Palisade = 6.0× (≥ 5×: true)", "latency ≥ 5× lower: **not met**", "tens of ms"}, nil},
		{"tpm2-pkcs11 met", withTPM2(pts(0.95, 0.95, 1, 1), 0.2, 0.3), sign(1000, 6000),
			[]string{"- rsa-2048: throughput Palisade ÷ tpm2-pkcs11 (swtpm) at worst 3.17× over 2 concurrency levels (tpm2-pkcs11's nginx: 1 worker, Palisade's: 2; above at every level: true)",
				"latency ≥ 5× lower: **met**", "far faster than a TPM chip (tens of ms a signature)"}, nil},
		{"worker counts not recorded", func() []webPoint {
			p := withTPM2(pts(0.95, 0.95, 1, 1), 0.2, 0.3)
			for i := range p {
				p[i].Workers = 0
			}
			return p
		}(), sign(1000, 6000),
			[]string{"at worst 3.17× over 2 concurrency levels (worker counts not recorded; above at every level: true)"}, []string{"1 worker"}},
		{"tpm2-pkcs11 above at one level", withTPM2(pts(0.95, 0.5, 1, 1), 0.2, 0.6), sign(1000, 6000),
			[]string{"at worst 0.83× over 2 concurrency levels (tpm2-pkcs11's nginx: 1 worker, Palisade's: 2; above at every level: false)", "latency ≥ 5× lower: **not met**"}, nil},
		{"tpm2-pkcs11 latency too close", withTPM2(pts(0.95, 0.95, 1, 1), 0.2, 0.3), sign(1000, 4000),
			[]string{"= 4.0× (≥ 5×: false)", "latency ≥ 5× lower: **not met**"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &benchReport{Web: tt.web, WebSign: tt.sign}
			md := r.markdown()
			checkMarkdown(t, md, tt.want, tt.not)
		})
	}
}

// TestWebChart draws the chart of points with every backend, tpm2-pkcs11 included, and checks
// that the file is a PNG image of the chart's size.
func TestWebChart(t *testing.T) {
	var web []webPoint
	for _, alg := range []string{"rsa-2048", "ecdsa-p256"} {
		for i, b := range []string{"file", "palisade", "softhsm2", "tpm2-pkcs11"} {
			for _, c := range []int{1, 4, 16} {
				web = append(web, webPoint{Alg: alg, Backend: b, Concurrency: c, RPS: float64(100 * (4 - i) * c)})
			}
		}
	}
	path := filepath.Join(t.TempDir(), "web.png")
	if err := (&benchReport{Web: web}).webChart(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("web.png: %v", err)
	}
	if cfg.Width < 1000 || cfg.Height < 400 {
		t.Errorf("web.png is %dx%d", cfg.Width, cfg.Height)
	}
}

// checkMarkdown reports each of want that md lacks and each of not that it has.
func checkMarkdown(t *testing.T, md string, want, not []string) {
	t.Helper()
	for _, s := range want {
		if !strings.Contains(md, s) {
			t.Errorf("lacks %q:\n%s", s, md)
		}
	}
	for _, s := range not {
		if strings.Contains(md, s) {
			t.Errorf("has %q:\n%s", s, md)
		}
	}
}
