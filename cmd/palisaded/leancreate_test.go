package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/lean/wire"
)

// leanCreate sends one key-create request on a new connection to d's lean socket.
func leanCreate(t *testing.T, d *daemon, name, alg string) (wire.Code, []byte) {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(filepath.Dir(d.socket), "lean.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := wire.KeyCreateRequest{Name: name, Alg: alg}.Append(nil)
	req := make([]byte, wire.HeaderSize, wire.HeaderSize+len(body))
	wire.PutHeader(req, wire.Header{Version: wire.Version, Op: wire.OpKeyCreate, ID: 7, Len: uint32(len(body))})
	if _, err := c.Write(append(req, body...)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hb [wire.HeaderSize]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		t.Fatal(err)
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil || h.Op != wire.OpKeyCreate|wire.RespBit || h.ID != 7 {
		t.Fatalf("response header %+v, %v", h, err)
	}
	resp := make([]byte, h.Len)
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatal(err)
	}
	return h.Code, resp
}

// TestLeanKeyCreate: key-create over the lean protocol creates the key the gRPC KeyCreate
// would — owned by the caller, unshared, audited, counted — and refuses what gRPC refuses,
// with the same message.
func TestLeanKeyCreate(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, true)
	c, ctx := d.dial(), context.Background()
	if _, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: "taken", Alg: client.AlgEd25519}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, key, alg string
		code           wire.Code
		grpcErr        error
	}{
		{"ecdsa-p256", "lean-ec", "ecdsa-p256", wire.CodeOK, nil},
		{"ed25519", "lean-ed", "ed25519", wire.CodeOK, nil},
		{"rsa-2048", "lean-rsa", "rsa-2048", wire.CodeOK, nil},
		{"name taken", "taken", "ecdsa-p256", wire.CodeKeyExists, client.ErrKeyExists},
		{"unknown algorithm", "lean-dsa", "dsa-1024", wire.CodeInvalid, client.ErrInvalid},
		{"name outside the alphabet", "a/b", "ed25519", wire.CodeInvalid, client.ErrInvalid},
		{"name starting with a dot", ".k", "ed25519", wire.CodeInvalid, client.ErrInvalid},
		{"name over 128 bytes", strings.Repeat("k", 129), "ed25519", wire.CodeInvalid, client.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := leanCreate(t, d, tc.key, tc.alg)
			if code != tc.code {
				m, _ := wire.DecodeErrorResponse(body)
				t.Fatalf("lean: %v %q, want %v", code, m.Message, tc.code)
			}
			if code != wire.CodeOK {
				m, err := wire.DecodeErrorResponse(body)
				if err != nil {
					t.Fatal(err)
				}
				_, gerr := c.KeyCreate(ctx, client.KeyCreateOptions{Name: tc.key, Alg: tc.alg})
				if !errors.Is(gerr, tc.grpcErr) || !strings.Contains(gerr.Error(), m.Message) {
					t.Fatalf("gRPC refused with %v; lean with %q", gerr, m.Message)
				}
				return
			}
			ki, err := wire.DecodeKeyInfoResponse(body)
			if err != nil {
				t.Fatal(err)
			}
			k, err := c.KeyGet(ctx, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if k.Alg != tc.alg || ki.Alg != tc.alg || !bytes.Equal(k.PublicDER, ki.PublicDER) || ki.Flags != 0 || len(ki.CertChain) != 0 {
				t.Fatalf("gRPC sees %s %x; key-create answered %+v", k.Alg, k.PublicDER, ki)
			}
			if k.Owner != uint32(os.Getuid()) || len(k.AllowUIDs)+len(k.AllowGIDs) != 0 || k.HasPIN || k.Imported {
				t.Fatalf("key %+v: want the caller's own, unshared, without a PIN", k)
			}
		})
	}
	created := map[string]bool{}
	for _, ev := range d.auditEvents() {
		if ev["event"] == "key_create" && ev["uid"] == float64(os.Getuid()) {
			created[ev["key"].(string)] = true
		}
	}
	for _, k := range []string{"lean-ec", "lean-ed", "lean-rsa"} {
		if !created[k] {
			t.Errorf("no key_create audit event for %s: %v", k, created)
		}
	}
	m := metricsOf(t, d)
	for _, want := range []string{
		`palisade_lean_requests_total{op="key-create",code="OK"} 3`,
		`palisade_lean_requests_total{op="key-create",code="KEY_EXISTS"} 1`,
		`palisade_lean_requests_total{op="key-create",code="INVALID"} 4`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
