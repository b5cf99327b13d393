package sshagent_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/integrations/sshagent"
)

// TestAgentRules drives the Agent type directly against a real palisaded: RSA signatures follow
// the flags (SHA-1 refused), lock and unlock errors, no private keys without a forward agent,
// unknown keys, and PIN keys (refused without a PIN source, signed with one, refused with a
// wrong PIN).
func TestAgentRules(t *testing.T) {
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "rsa", "--alg", "rsa-2048")
	pinFile := filepath.Join(e.Dir, "pin")
	if err := os.WriteFile(pinFile, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Palisade("key", "create", "pinned", "--alg", "ed25519", "--pin-file", pinFile)
	ctx := context.Background()
	c, err := client.Dial(ctx, e.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pin := []byte("1234")
	a, err := sshagent.New(sshagent.Options{Client: c, UnlockDelay: -1,
		PIN: func(client.KeyInfo) ([]byte, error) { return pin, nil }})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := a.List()
	if err != nil || len(keys) != 2 {
		t.Fatalf("List: %v %v", keys, err)
	}
	pub := map[string]ssh.PublicKey{}
	for _, k := range keys {
		p, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			t.Fatal(err)
		}
		pub[k.Comment] = p
	}
	data := []byte("data")

	for _, tc := range []struct {
		flags  agent.SignatureFlags
		format string // "" = refused
	}{
		{0, ""},
		{agent.SignatureFlagRsaSha256, ssh.KeyAlgoRSASHA256},
		{agent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA512},
	} {
		sig, err := a.SignWithFlags(pub["palisade:rsa"], data, tc.flags)
		if tc.format == "" {
			if err == nil {
				t.Errorf("flags %d: signed %s, want a refusal of SHA-1", tc.flags, sig.Format)
			}
			continue
		}
		if err != nil || sig.Format != tc.format {
			t.Fatalf("flags %d: %v %v", tc.flags, sig, err)
		}
		if err := pub["palisade:rsa"].Verify(data, sig); err != nil {
			t.Errorf("flags %d: %v", tc.flags, err)
		}
	}

	// The PIN key: signed with the right PIN, refused with a wrong one.
	sig, err := a.Sign(pub["palisade:pinned"], data)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub["palisade:pinned"].Verify(data, sig); err != nil {
		t.Fatal(err)
	}
	pin = []byte("0000")
	if _, err := a.Sign(pub["palisade:pinned"], data); !errors.Is(err, client.ErrPINIncorrect) {
		t.Errorf("wrong PIN: %v", err)
	}
	noPIN, _ := sshagent.New(sshagent.Options{Client: c})
	if _, err := noPIN.Sign(pub["palisade:pinned"], data); err == nil {
		t.Error("a PIN key signed with no PIN source")
	}

	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(other)
	if _, err := a.Sign(otherPub, data); !errors.Is(err, sshagent.ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.Add(agent.AddedKey{PrivateKey: priv}); !errors.Is(err, sshagent.ErrNoPrivateKeys) {
		t.Errorf("Add: %v", err)
	}

	for _, step := range []struct {
		op   func() error
		want error
	}{
		{func() error { return a.Unlock([]byte("x")) }, sshagent.ErrNotLocked},
		{func() error { return a.Lock([]byte("pass")) }, nil},
		{func() error { return a.Lock([]byte("pass")) }, sshagent.ErrLocked},
		{func() error { _, err := a.Sign(pub["palisade:rsa"], data); return err }, sshagent.ErrLocked},
		{func() error { return a.Unlock([]byte("wrong")) }, sshagent.ErrBadUnlock},
		{func() error { return a.Unlock([]byte("pass")) }, nil},
	} {
		if err := step.op(); !errors.Is(err, step.want) {
			t.Fatalf("step: %v, want %v", err, step.want)
		}
	}
	if l, _ := a.List(); len(l) != 2 {
		t.Errorf("after unlock: %d keys", len(l))
	}
}

// TestAskpassPIN: `palisade ssh-agent --askpass PROGRAM` gets a PIN key's PIN from the program
// at each signature; a program printing a wrong PIN gets a refusal.
func TestAskpassPIN(t *testing.T) {
	e := ossh.NewEnv(t)
	pinFile := filepath.Join(e.Dir, "pin")
	if err := os.WriteFile(pinFile, []byte("4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Palisade("key", "create", "pinned", "--alg", "ecdsa-p256", "--pin-file", pinFile)
	for _, tc := range []struct {
		pin string
		ok  bool
	}{{"4321", true}, {"9999", false}} {
		prog := filepath.Join(e.Dir, "askpass-"+tc.pin)
		if err := os.WriteFile(prog, []byte("#!/bin/sh\necho "+tc.pin+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		sock, _ := e.Agent("pin-"+tc.pin, "--keys", "pinned", "--askpass", prog)
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		ag := agent.NewClient(conn)
		keys, err := ag.List()
		if err != nil || len(keys) != 1 {
			t.Fatalf("List: %v %v", keys, err)
		}
		data := []byte("session")
		sig, err := ag.Sign(keys[0], data)
		if tc.ok {
			if err != nil {
				t.Fatalf("PIN %s: %v", tc.pin, err)
			}
			if err := keys[0].Verify(data, sig); err != nil {
				t.Fatal(err)
			}
		} else if err == nil {
			t.Errorf("PIN %s: signed", tc.pin)
		}
		conn.Close()
	}
}

// pinnedKey starts a palisaded holding the Ed25519 key "pinned" with PIN 1234 and returns a
// client of it (closed at cleanup).
func pinnedKey(t *testing.T) *client.Client {
	t.Helper()
	e := ossh.NewEnv(t)
	pinFile := filepath.Join(e.Dir, "pin")
	if err := os.WriteFile(pinFile, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Palisade("key", "create", "pinned", "--alg", "ed25519", "--pin-file", pinFile)
	c, err := client.Dial(context.Background(), e.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPINCache: with Options.PINCache the PIN source is asked once for a burst of signatures;
// a PIN the signing PAL refuses is dropped at once (the next signature asks again), as is
// every cached PIN when the agent is locked; without PINCache every signature asks.
func TestPINCache(t *testing.T) {
	c := pinnedKey(t)
	for _, tc := range []struct {
		cache time.Duration
		// answers are the PINs the source gives, in order; wantAsks after each signature.
		answers  []string
		wantOK   []bool
		wantAsks []int
	}{
		{0, []string{"1234", "1234", "1234"}, []bool{true, true, true}, []int{1, 2, 3}},
		{time.Hour, []string{"1234"}, []bool{true, true, true}, []int{1, 1, 1}},
		{time.Hour, []string{"9999", "1234"}, []bool{false, true, true}, []int{1, 2, 2}},
	} {
		asks := 0
		a, err := sshagent.New(sshagent.Options{Client: c, UnlockDelay: -1, PINCache: tc.cache,
			PIN: func(client.KeyInfo) ([]byte, error) {
				p := tc.answers[min(asks, len(tc.answers)-1)]
				asks++
				return []byte(p), nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		keys, err := a.List()
		if err != nil || len(keys) != 1 {
			t.Fatalf("List: %v %v", keys, err)
		}
		for i := range tc.wantOK {
			_, err := a.Sign(keys[0], []byte("data"))
			if (err == nil) != tc.wantOK[i] || asks != tc.wantAsks[i] {
				t.Errorf("cache %v, signature %d: err %v, asked %d times; want ok=%v, %d asks", tc.cache, i, err, asks, tc.wantOK[i], tc.wantAsks[i])
			}
		}
		if tc.cache > 0 {
			if err := a.Lock([]byte("p")); err != nil {
				t.Fatal(err)
			}
			if err := a.Unlock([]byte("p")); err != nil {
				t.Fatal(err)
			}
			before := asks
			if _, err := a.Sign(keys[0], []byte("data")); err != nil || asks != before+1 {
				t.Errorf("cache %v: after lock/unlock the PIN was not asked again (err %v, asks %d→%d)", tc.cache, err, before, asks)
			}
		}
	}
}

// TestPINCacheConcurrent: with a cold cache, a burst of signatures asks for the PIN once at a
// time, so a mistyped PIN costs the key one try (not one per request in flight), and only a
// PIN the signing PAL took is cached. A Lock while askpass is asking ends that request and
// caches nothing.
func TestPINCacheConcurrent(t *testing.T) {
	c := pinnedKey(t)

	var mu sync.Mutex
	asks := 0
	answers := []string{"9999", "1234"} // a typo first
	a, err := sshagent.New(sshagent.Options{Client: c, UnlockDelay: -1, PINCache: time.Hour,
		PIN: func(client.KeyInfo) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			p := answers[min(asks, len(answers)-1)]
			asks++
			return []byte(p), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := a.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List: %v %v", keys, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Sign(keys[0], []byte("data"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if !errors.Is(err, client.ErrPINIncorrect) {
				t.Errorf("signature failed with %v, want ErrPINIncorrect", err)
			}
		}
	}
	if failed != 1 || asks != 2 {
		t.Errorf("6 concurrent signatures, typo then the right PIN: %d failed, %d asks; want 1 and 2", failed, asks)
	}

	// Lock while askpass is asking.
	asked, release := make(chan struct{}), make(chan struct{})
	n := 0
	b, err := sshagent.New(sshagent.Options{Client: c, UnlockDelay: -1, PINCache: time.Hour,
		PIN: func(client.KeyInfo) ([]byte, error) {
			mu.Lock()
			n++
			first := n == 1
			mu.Unlock()
			if first {
				close(asked)
				<-release
			}
			return []byte("1234"), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := b.Sign(keys[0], []byte("data")); done <- err }()
	<-asked
	if err := b.Lock([]byte("p")); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; !errors.Is(err, sshagent.ErrLocked) {
		t.Errorf("a signature whose askpass answered after Lock: %v, want ErrLocked", err)
	}
	if err := b.Unlock([]byte("p")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sign(keys[0], []byte("data")); err != nil || n != 2 {
		t.Errorf("after unlock: err %v, PIN asked %d times; want a signature after a second ask (nothing cached during the lock)", err, n)
	}
}
