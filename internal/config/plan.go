package config

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Plan is what a transition from one configuration to another changes.
type Plan struct {
	OldVersion, NewVersion       uint64
	VisorsAdded, VisorsRevoked   []Measurement
	Names                        []NameChange // sorted by kind, then name
	SecretsAdded, SecretsDropped []string
	Gains, Losses                []Access // sorted by name, then secret
}

// NameChange is what changes for one PAL or application name.
type NameChange struct {
	Kind                   Kind
	Name                   string
	Added, Removed         bool // the name appears or disappears
	MeasAdded, MeasRevoked []Measurement
}

// Access is a secret released to a name.
type Access struct {
	Kind   Kind
	Name   string
	Secret string
}

// Empty reports whether the transition changes nothing but the version.
func (p Plan) Empty() bool {
	return len(p.VisorsAdded)+len(p.VisorsRevoked)+len(p.Names)+len(p.SecretsAdded)+
		len(p.SecretsDropped)+len(p.Gains)+len(p.Losses) == 0
}

// Diff computes the plan from old (nil: nothing active) to new.
func Diff(old, new *Config) Plan {
	if old == nil {
		old = &Config{}
	}
	p := Plan{OldVersion: old.Version, NewVersion: new.Version}
	p.VisorsAdded, p.VisorsRevoked = diffMeasurements(old.Visors, new.Visors)
	for _, k := range []struct {
		kind     Kind
		old, new map[string][]Measurement
	}{{KindPAL, old.PALs, new.PALs}, {KindApp, old.Apps, new.Apps}} {
		for _, n := range unionKeys(k.old, k.new) {
			om, inOld := k.old[n]
			nm, inNew := k.new[n]
			c := NameChange{Kind: k.kind, Name: n, Added: !inOld, Removed: !inNew}
			c.MeasAdded, c.MeasRevoked = diffMeasurements(om, nm)
			if c.Added || c.Removed || len(c.MeasAdded)+len(c.MeasRevoked) > 0 {
				p.Names = append(p.Names, c)
			}
		}
	}
	for _, s := range unionKeys(old.Secrets, new.Secrets) {
		on, inOld := old.Secrets[s]
		nn, inNew := new.Secrets[s]
		switch {
		case !inOld:
			p.SecretsAdded = append(p.SecretsAdded, s)
		case !inNew:
			p.SecretsDropped = append(p.SecretsDropped, s)
		}
		// A recipient is a kind and a name: a name listed on both sides that turned from a
		// PAL into an app (or back) is other code, so its old kind loses the secret and its
		// new kind gains it.
		for _, n := range nn {
			k, _, _ := new.Lookup(n)
			if oldKind, _, _ := old.Lookup(n); !slices.Contains(on, n) || oldKind != k {
				p.Gains = append(p.Gains, Access{Kind: k, Name: n, Secret: s})
			}
		}
		for _, n := range on {
			k, _, _ := old.Lookup(n)
			if newKind, _, _ := new.Lookup(n); !slices.Contains(nn, n) || newKind != k {
				p.Losses = append(p.Losses, Access{Kind: k, Name: n, Secret: s})
			}
		}
	}
	byName := func(a []Access) {
		sort.Slice(a, func(i, j int) bool {
			if a[i].Name != a[j].Name {
				return a[i].Name < a[j].Name
			}
			return a[i].Secret < a[j].Secret
		})
	}
	byName(p.Gains)
	byName(p.Losses)
	return p
}

func unionKeys[V any](a, b map[string]V) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// diffMeasurements returns what b adds to a and what it drops, sorted.
func diffMeasurements(a, b []Measurement) (added, dropped []Measurement) {
	for _, m := range b {
		if !slices.Contains(a, m) {
			added = append(added, m)
		}
	}
	for _, m := range a {
		if !slices.Contains(b, m) {
			dropped = append(dropped, m)
		}
	}
	cmp := func(x, y Measurement) int { return bytes.Compare(x[:], y[:]) }
	slices.SortFunc(added, cmp)
	slices.SortFunc(dropped, cmp)
	return added, dropped
}

// Lines renders the plan, one change per line, in a fixed order: what `palisade config plan`
// prints and what the history records.
func (p Plan) Lines() []string {
	var out []string
	add := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	for _, m := range p.VisorsAdded {
		add("visor: + %s", m)
	}
	for _, m := range p.VisorsRevoked {
		add("visor: - %s (revoked)", m)
	}
	for _, c := range p.Names {
		switch {
		case c.Added:
			add("%s %s: added", c.Kind, c.Name)
		case c.Removed:
			add("%s %s: removed", c.Kind, c.Name)
		}
		for _, m := range c.MeasAdded {
			add("%s %s: + %s", c.Kind, c.Name, m)
		}
		for _, m := range c.MeasRevoked {
			add("%s %s: - %s (revoked)", c.Kind, c.Name, m)
		}
	}
	for _, s := range p.SecretsAdded {
		add("secret %s: added", s)
	}
	for _, s := range p.SecretsDropped {
		add("secret %s: removed", s)
	}
	for _, a := range p.Gains {
		add("%s %s: gains secret %s", a.Kind, a.Name, a.Secret)
	}
	for _, a := range p.Losses {
		add("%s %s: loses secret %s", a.Kind, a.Name, a.Secret)
	}
	return out
}

// String is the full human-readable plan.
func (p Plan) String() string {
	var b strings.Builder
	if p.OldVersion == 0 {
		fmt.Fprintf(&b, "version: (none) -> %d\n", p.NewVersion)
	} else {
		fmt.Fprintf(&b, "version: %d -> %d\n", p.OldVersion, p.NewVersion)
	}
	lines := p.Lines()
	if len(lines) == 0 {
		b.WriteString("no changes\n")
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}
