package bench

import (
	"strings"
	"testing"
)

// TestWebVerdicts checks the goal verdicts of the web-server section against hand-made points:
// the throughput goal holds only if it holds at every concurrency level.
func TestWebVerdicts(t *testing.T) {
	pts := func(pal1, pal4, hsm1, hsm4 float64) []webPoint {
		return []webPoint{
			{Alg: "rsa-2048", Backend: "file", Concurrency: 1, PairedRatio: 1},
			{Alg: "rsa-2048", Backend: "palisade", Concurrency: 1, PairedRatio: pal1},
			{Alg: "rsa-2048", Backend: "softhsm2", Concurrency: 1, PairedRatio: hsm1},
			{Alg: "rsa-2048", Backend: "file", Concurrency: 4, PairedRatio: 1},
			{Alg: "rsa-2048", Backend: "palisade", Concurrency: 4, PairedRatio: pal4},
			{Alg: "rsa-2048", Backend: "softhsm2", Concurrency: 4, PairedRatio: hsm4},
		}
	}
	tests := []struct {
		name      string
		web       []webPoint
		sign      []webSign
		want, not []string
	}{
		{"all met", pts(0.95, 0.97, 1, 1), nil,
			[]string{"at worst 95.0% of key-in-file", "goal ≥ 93% at every level: **met**", "goal ≥ 0.9×: **met**", "against tpm2-pkcs11: not measured"}, []string{"not met"}},
		{"one level below", pts(0.99, 0.92, 1, 1), nil,
			[]string{"at worst 92.0%", "goal ≥ 93% at every level: **not met**"}, nil},
		{"below SoftHSM2", pts(0.95, 0.95, 1.2, 1), nil,
			[]string{"at worst 0.79× SoftHSM2", "goal ≥ 0.9×: **not met**"}, nil},
		{"tpm2-pkcs11 latency", pts(0.95, 0.95, 1, 1),
			[]webSign{{Alg: "rsa-2048", Backend: "palisade", MedianUs: 1000}, {Alg: "rsa-2048", Backend: "tpm2-pkcs11", MedianUs: 4000}},
			[]string{"tpm2-pkcs11 (swtpm) ÷ Palisade = 4.0×; goal ≥ 5×: **not met**", "tens of ms"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &benchReport{Web: tt.web, WebSign: tt.sign}
			md := r.markdown()
			for _, s := range tt.want {
				if !strings.Contains(md, s) {
					t.Errorf("lacks %q:\n%s", s, md)
				}
			}
			for _, s := range tt.not {
				if strings.Contains(md, s) {
					t.Errorf("has %q:\n%s", s, md)
				}
			}
		})
	}
}
