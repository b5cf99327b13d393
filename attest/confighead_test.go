package attest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/configtest"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
)

// configHeads applies two real signed configurations to a state and returns its head after
// each, converted the way the daemon does.
func configHeads(t *testing.T) (v1, v2 attest.ConfigHead) {
	t.Helper()
	admin, st := configtest.NewState(t, "es256")
	head := func(v uint64) attest.ConfigHead {
		// Version 2 lists the visor, version 1 does not.
		var visors []config.Measurement
		if v == 2 {
			visors = []config.Measurement{testVisorM}
		}
		raw, err := config.Sign(&config.Config{Version: v, Visors: visors,
			PALs: map[string][]config.Measurement{"vault": {config.Measurement(palMeasurement)}}}, admin)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Apply(raw); err != nil {
			t.Fatal(err)
		}
		p, err := st.Statement(testVisorM)
		if err != nil {
			t.Fatal(err)
		}
		return attest.ConfigHead{Seq: p.Seq, Version: p.Version, Config: p.Config, Head: p.Head,
			Signer: p.Signer, VisorListed: p.VisorListed}
	}
	return head(1), head(2)
}

// testVisorM is the visor measurement the configurations of configHeads list (version 2).
var testVisorM = config.Measurement{0x5e}

func TestVerifyConfigurationHead(t *testing.T) {
	v1, v2 := configHeads(t)
	if v2.Seq != 2 || v2.Version != 2 || v1.Config == v2.Config || v1.Head == v2.Head ||
		v2.Signer == ([32]byte{}) || v1.Signer != v2.Signer || v1.VisorListed || !v2.VisorListed {
		t.Fatalf("heads %+v %+v", v1, v2)
	}
	v := startVisor(t, "visor A")
	nonce := []byte("verifier nonce")
	evidence := func(nonce []byte, h attest.ConfigHead) []byte {
		q, err := v.pal.Quote(nonce, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := attest.Assemble(context.Background(), v.root, q, attest.WithConfiguration(h))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ev := evidence(nonce, v2)
	withPolicy := func(p attest.ConfigPolicy) attest.Options {
		o := v.options(nonce)
		o.Configuration = &p
		return o
	}

	// Without a policy the head is verified and reported; with one it must meet it.
	res, err := attest.Verify(ev, v.options(nonce))
	if err != nil || res.Configuration == nil || *res.Configuration != v2 || !res.Rooted {
		t.Fatalf("Verify: %+v, %v", res, err)
	}
	if _, err := attest.Verify(ev, withPolicy(attest.ConfigPolicy{MinVersion: 2, Config: v2.Config, Head: v2.Head,
		Signer: v2.Signer, VisorListed: true})); err != nil {
		t.Fatalf("Verify with policy: %v", err)
	}
	if res, err := attest.Verify(v.evidence(t, nonce), v.options(nonce)); err != nil || res.Configuration != nil {
		t.Fatalf("evidence without a head: %+v, %v", res, err)
	}

	for _, tc := range []struct {
		name     string
		ev       []byte
		opts     attest.Options
		check    string
		sentinel error
	}{
		{"older than required", ev, withPolicy(attest.ConfigPolicy{MinVersion: 3}),
			attest.CheckConfigVersion, attest.ErrMismatch},
		{"another configuration", ev, withPolicy(attest.ConfigPolicy{Config: v1.Config}),
			attest.CheckConfigHash, attest.ErrMismatch},
		{"another history", ev, withPolicy(attest.ConfigPolicy{Head: v1.Head}),
			attest.CheckConfigHead, attest.ErrMismatch},
		{"another signer", ev, withPolicy(attest.ConfigPolicy{Signer: [32]byte{9}}),
			attest.CheckConfigSigner, attest.ErrMismatch},
		{"visor not listed", evidence(nonce, v1), withPolicy(attest.ConfigPolicy{VisorListed: true}),
			attest.CheckConfigVisor, attest.ErrMismatch},
		{"head required but absent", v.evidence(t, nonce), withPolicy(attest.ConfigPolicy{MinVersion: 1}),
			attest.CheckConfiguration, attest.ErrMismatch},
		{"statement replayed from another nonce", mutate(t, ev, func(e *attest.Evidence) {
			e.Configuration = mustParse(t, evidence([]byte("old nonce"), v2)).Configuration
		}), v.options(nonce), attest.CheckConfiguration, attest.ErrMismatch},
		{"statement of v1 swapped in, edited to claim v2", mutate(t, ev, func(e *attest.Evidence) {
			c := mustParse(t, evidence(nonce, v1)).Configuration
			e.Configuration = flipPayloadVersion(t, c)
		}), v.options(nonce), attest.CheckConfiguration, attest.ErrSignature},
		{"statement by another visor's identity", mutate(t, ev, func(e *attest.Evidence) {
			other := startVisor(t, "visor A")
			q, _ := other.pal.Quote(nonce, nil, 0)
			oev, err := attest.Assemble(context.Background(), other.root, q, attest.WithConfiguration(v2))
			if err != nil {
				t.Fatal(err)
			}
			e.Configuration = mustParse(t, oev).Configuration
		}), v.options(nonce), attest.CheckConfiguration, attest.ErrSignature},
		{"a µTPM quote passed off as the statement", mutate(t, ev, func(e *attest.Evidence) {
			e.Configuration = e.Quote
		}), v.options(nonce), attest.CheckConfiguration, attest.ErrEvidence},
		{"garbage", mutate(t, ev, func(e *attest.Evidence) { e.Configuration = []byte{0x01} }),
			v.options(nonce), attest.CheckConfiguration, attest.ErrEvidence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := attest.Verify(tc.ev, tc.opts)
			wantCheck(t, err, tc.check, tc.sentinel)
			// A statement whose signature fails is not a quote: the error must not say so
			// (it said "quote signature does not verify: configuration statement: ...").
			if tc.check == attest.CheckConfiguration && strings.Contains(err.Error(), "quote signature") {
				t.Errorf("the configuration statement's error speaks of a quote: %v", err)
			}
		})
	}
}

func mustParse(t *testing.T, ev []byte) *attest.Evidence {
	t.Helper()
	e, err := attest.Parse(ev)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// flipPayloadVersion changes the version inside a signed statement without re-signing: the
// payload's second map entry is key 2 followed by a one-byte uint (versions below 24).
func flipPayloadVersion(t *testing.T, stmt []byte) []byte {
	t.Helper()
	out := append([]byte(nil), stmt...)
	for i := 0; i+3 < len(out); i++ {
		// payload: a7 01 <seq> 02 <version> 03 58 20 …
		if out[i] == 0xa7 && out[i+1] == 0x01 && out[i+3] == 0x02 {
			out[i+4] = 0x02
			return out
		}
	}
	t.Fatal("payload not found")
	return nil
}

// FuzzConfigStatement: hostile bytes in evidence field 6 of otherwise valid (unrooted)
// evidence never crash Verify, and nothing but the statement the visor signed is accepted.
func FuzzConfigStatement(f *testing.F) {
	root, err := none.Open(f.TempDir(), utpm.Digest{7})
	if err != nil {
		f.Fatal(err)
	}
	defer root.Close()
	plat, err := utpm.NewPlatform(root.Platform())
	if err != nil {
		f.Fatal(err)
	}
	nonce := []byte("n")
	q, err := plat.NewTPM(palMeasurement).Quote(nonce, nil, 0)
	if err != nil {
		f.Fatal(err)
	}
	head := attest.ConfigHead{Seq: 3, Version: 7, Config: [32]byte{1}, Head: [32]byte{2}, Signer: [32]byte{3}, VisorListed: true}
	ev, err := attest.Assemble(context.Background(), root, q, attest.WithConfiguration(head))
	if err != nil {
		f.Fatal(err)
	}
	e, err := attest.Parse(ev)
	if err != nil {
		f.Fatal(err)
	}
	valid := e.Configuration
	o := attest.Options{Nonce: nonce, PAL: palMeasurement, Visor: utpm.Digest{7}, AllowUnrooted: true,
		Configuration: &attest.ConfigPolicy{MinVersion: 7}}
	if res, err := attest.Verify(ev, o); err != nil || *res.Configuration != head {
		f.Fatalf("valid evidence: %v", err)
	}
	f.Add(valid)
	for _, i := range []int{0, 5, len(valid) / 2, len(valid) - 1} {
		m := append([]byte(nil), valid...)
		m[i] ^= 0x01
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, stmt []byte) {
		e.Configuration = stmt
		b, err := e.Marshal()
		if err != nil {
			return
		}
		res, err := attest.Verify(b, o)
		if err != nil {
			if _, ok := err.(*attest.CheckError); !ok {
				t.Fatalf("error is not a *CheckError: %v", err)
			}
			return
		}
		if *res.Configuration != head {
			t.Fatalf("accepted another head: %+v", res.Configuration)
		}
	})
}
