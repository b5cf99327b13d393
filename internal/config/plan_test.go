package config

import (
	"slices"
	"strings"
	"testing"
)

func TestPlanGolden(t *testing.T) {
	v1 := baseConfig(1)
	v2 := baseConfig(2)
	v2.Visors = append(v2.Visors, meas("visor-2"))
	v2.PALs["signer"] = []Measurement{meas("signer-2")} // signer-1 revoked
	v2.PALs["ca"] = []Measurement{meas("ca-1")}         // new PAL
	delete(v2.Apps, "db")                               // db removed: loses db-pass
	v2.Apps["web"] = append(v2.Apps["web"], meas("web-2"))
	v2.Secrets["db-pass"] = nil
	delete(v2.Secrets, "db-pass")
	v2.Secrets["ca-key"] = []string{"ca"}
	v2.Secrets["tls-key"] = []string{"web"} // signer loses tls-key
	if err := v2.Normalize(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		old, new *Config
	}{
		{"first", nil, v1},
		{"update", v1, v2},
		{"rollback-view", v2, v1},
		{"nochange", v1, baseConfig(2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "plan/"+tc.name+".golden", []byte(Diff(tc.old, tc.new).String()))
		})
	}
	if !Diff(v1, baseConfig(2)).Empty() || Diff(v1, v2).Empty() {
		t.Fatal("Empty is wrong")
	}
}

func TestShowGolden(t *testing.T) {
	golden(t, "show.golden", []byte(baseConfig(4).Text()))
}

// TestPlanKindChangeMovesSecrets: PALs and apps share one namespace, and a secret names its
// recipient without a kind, so a name that turns from a PAL into an app (or back) keeps the
// secrets listed under it, now for other code: the plan must say that the old kind loses
// them and the new kind gains them (it said only "pal x: removed", "app x: added", and
// nothing about the secret an application build could now receive).
func TestPlanKindChangeMovesSecrets(t *testing.T) {
	v1 := baseConfig(1)
	v1.PALs["vault"] = []Measurement{meas("vault-1")}
	v1.Secrets["master"] = []string{"vault"}
	v2 := baseConfig(2)
	v2.Apps["vault"] = []Measurement{meas("vault-1"), meas("shell")}
	v2.Secrets["master"] = []string{"vault"}
	for _, c := range []*Config{v1, v2} {
		if err := c.Normalize(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		old, new *Config
		want     []string
	}{
		{"pal to app", v1, v2, []string{"app vault: gains secret master", "pal vault: loses secret master"}},
		{"app to pal", v2, v1, []string{"pal vault: gains secret master", "app vault: loses secret master"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := Diff(tc.old, tc.new).Lines()
			for _, w := range tc.want {
				if !slices.Contains(lines, w) {
					t.Errorf("plan lacks %q:\n%s", w, strings.Join(lines, "\n"))
				}
			}
		})
	}
}
