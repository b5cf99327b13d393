package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/internal/api"
)

func TestSignRequest(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	d32, d48 := make([]byte, 32), make([]byte, 48)
	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		digest []byte
		opts   crypto.SignerOpts
		scheme uint16
		hash   uint16
		bad    bool
	}{
		{"ecdsa sha256", &ec.PublicKey, d32, crypto.SHA256, signreq.SchemeECDSA, signreq.HashSHA256, false},
		{"ecdsa sha384", &ec.PublicKey, d48, crypto.SHA384, signreq.SchemeECDSA, signreq.HashSHA384, false},
		{"rsa pkcs1", &rk.PublicKey, d32, crypto.SHA256, signreq.SchemeRSASSA, signreq.HashSHA256, false},
		{"rsa pss", &rk.PublicKey, d32, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}, signreq.SchemeRSAPSS, signreq.HashSHA256, false},
		{"ed25519", edPub, []byte("whole message"), crypto.Hash(0), signreq.SchemeEdDSA, signreq.HashNone, false},
		{"rsa pss auto salt", &rk.PublicKey, d32, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto}, 0, 0, true},
		{"ed25519ph", edPub, make([]byte, 64), &ed25519.Options{Hash: crypto.SHA512}, 0, 0, true},
		{"wrong digest length", &ec.PublicKey, d48, crypto.SHA256, 0, 0, true},
		{"sha1", &ec.PublicKey, make([]byte, 20), crypto.SHA1, 0, 0, true},
		{"nil opts", &ec.PublicKey, d32, nil, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := signRequest(tc.pub, tc.digest, tc.opts)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Scheme != tc.scheme || r.Hash != tc.hash {
				t.Fatalf("scheme %#x hash %#x, want %#x %#x", r.Scheme, r.Hash, tc.scheme, tc.hash)
			}
			if _, err := signreq.Unmarshal(r.Marshal()); err != nil {
				t.Fatalf("PAL side refuses the request: %v", err)
			}
		})
	}
	if _, err := NewSigner(nil, "pal-1", "not a key"); err == nil {
		t.Fatal("NewSigner accepted a string as a public key")
	}
}

func TestFromStatus(t *testing.T) {
	withReason := func(c codes.Code, reason string) error {
		st, err := status.New(c, "detail").WithDetails(&errdetails.ErrorInfo{Domain: api.ErrorDomain, Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	c := &Client{path: "/run/x.sock"}
	for _, tc := range []struct {
		in   error
		want error
	}{
		{withReason(codes.DeadlineExceeded, api.ReasonTimeout), ErrTimeout},
		{withReason(codes.InvalidArgument, api.ReasonInputTooLarge), ErrInputTooLarge},
		{withReason(codes.PermissionDenied, api.ReasonPermission), ErrPermission},
		{withReason(codes.Aborted, api.ReasonTrap), ErrTrap},
		{withReason(codes.InvalidArgument, api.ReasonBadImage), ErrBadImage},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), ErrTimeout},
		{status.Error(codes.Unavailable, "connection refused"), ErrUnavailable},
		{status.Error(codes.DataLoss, "?"), ErrInternal},
		{withReason(codes.Internal, "SOMETHING_NEW"), ErrInternal},
	} {
		err := c.fromStatus(tc.in)
		if !errors.Is(err, tc.want) {
			t.Errorf("%v → %v, want %v", tc.in, err, tc.want)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%v is not an *Error", err)
		}
	}
	if err := c.fromStatus(status.Error(codes.Unavailable, "x")); !strings.Contains(err.Error(), "cannot reach palisaded at /run/x.sock") {
		t.Errorf("unavailable message: %v", err)
	}
	if c.fromStatus(nil) != nil {
		t.Error("nil error mapped to non-nil")
	}
}

func TestDialNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := Dial(context.Background(), sock)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cannot reach palisaded at "+sock+": is it running?") {
		t.Fatalf("Dial without a daemon: %v", err)
	}
	t.Setenv("PALISADE_SOCKET", "/x/y.sock")
	if SocketPath() != "/x/y.sock" {
		t.Fatal("PALISADE_SOCKET ignored")
	}
	os.Unsetenv("PALISADE_SOCKET")
	if SocketPath() != DefaultSocket {
		t.Fatal("default socket")
	}
}
