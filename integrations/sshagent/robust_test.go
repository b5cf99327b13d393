package sshagent_test

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/integrations/sshagent"
)

// dialDaemon returns a client of e's palisaded, closed at the test's end.
func dialDaemon(t *testing.T, e *ossh.Env) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), e.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// byComment returns the listed keys by comment.
func byComment(t *testing.T, ks []*agent.Key) map[string]ssh.PublicKey {
	t.Helper()
	out := map[string]ssh.PublicKey{}
	for _, k := range ks {
		p, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			t.Fatal(err)
		}
		out[k.Comment] = p
	}
	return out
}

// TestNamedKeyDeletedWhileServing: an agent serving --keys a,b goes on serving a when b is
// deleted while it runs (b goes from the listing and its signatures fail as an unknown key's);
// CheckKeys, which the command runs at start, still names a key that does not exist.
func TestNamedKeyDeletedWhileServing(t *testing.T) {
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "a", "--alg", "ed25519")
	e.Palisade("key", "create", "b", "--alg", "ed25519")
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e), Keys: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := a.List()
	if err != nil || len(ks) != 2 {
		t.Fatalf("List: %v %v", ks, err)
	}
	pubs := byComment(t, ks)
	if err := a.CheckKeys(); err != nil {
		t.Fatalf("CheckKeys with both keys: %v", err)
	}

	e.Palisade("key", "delete", "b")
	ks, err = a.List()
	if err != nil || len(ks) != 1 || ks[0].Comment != "palisade:a" {
		t.Fatalf("List after deleting b: %v %v, want a alone", ks, err)
	}
	data := []byte("session")
	sig, err := a.Sign(pubs["palisade:a"], data)
	if err != nil {
		t.Fatalf("signing with a after b was deleted: %v", err)
	}
	if err := pubs["palisade:a"].Verify(data, sig); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sign(pubs["palisade:b"], data); !errors.Is(err, sshagent.ErrUnknownKey) {
		t.Errorf("signing with the deleted b: %v, want ErrUnknownKey", err)
	}
	if err := a.CheckKeys(); err == nil || !errors.Is(err, client.ErrNotFound) {
		t.Errorf("CheckKeys with b deleted: %v, want b's not-found error", err)
	}
}
