package config

import (
	"fmt"
	"sort"
	"strings"
)

// Text renders c for people: every name with its measurements and the secrets it receives.
func (c *Config) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: %d\n", c.Version)
	fmt.Fprintf(&b, "visors: %d\n", len(c.Visors))
	for _, m := range c.Visors {
		fmt.Fprintf(&b, "  %s\n", m)
	}
	for _, k := range []struct {
		kind  Kind
		names map[string][]Measurement
	}{{KindPAL, c.PALs}, {KindApp, c.Apps}} {
		names := make([]string, 0, len(k.names))
		for n := range k.names {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "%s %s:\n", k.kind, n)
			for _, m := range k.names[n] {
				fmt.Fprintf(&b, "  %s\n", m)
			}
			if len(k.names[n]) == 0 {
				b.WriteString("  (no measurement: nothing may run as this name)\n")
			}
			if s := c.SecretsOf(n); len(s) > 0 {
				fmt.Fprintf(&b, "  secrets: %s\n", strings.Join(s, ", "))
			}
		}
	}
	secrets := make([]string, 0, len(c.Secrets))
	for s := range c.Secrets {
		secrets = append(secrets, s)
	}
	sort.Strings(secrets)
	for _, s := range secrets {
		fmt.Fprintf(&b, "secret %s: %s\n", s, strings.Join(c.Secrets[s], ", "))
	}
	return b.String()
}
