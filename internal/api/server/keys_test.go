package server

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/palisade-project/palisade/internal/api"
)

// TestKeyRPCsWithoutKeyService holds every key RPC of a daemon without a key service to the
// same answer: no response, and an InvalidArgument status that says why.
func TestKeyRPCsWithoutKeyService(t *testing.T) {
	s := &Server{}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() (any, error)
	}{
		{"KeyCreate", func() (any, error) { return s.KeyCreate(ctx, &api.KeyCreateRequest{Name: "k"}) }},
		{"KeyImport", func() (any, error) { return s.KeyImport(ctx, &api.KeyImportRequest{Name: "k"}) }},
		{"KeyGet", func() (any, error) { return s.KeyGet(ctx, &api.KeyGetRequest{Name: "k"}) }},
		{"KeyList", func() (any, error) { return s.KeyList(ctx, &api.KeyListRequest{}) }},
		{"KeyDelete", func() (any, error) { return s.KeyDelete(ctx, &api.KeyDeleteRequest{Name: "k"}) }},
		{"KeySetAccess", func() (any, error) { return s.KeySetAccess(ctx, &api.KeySetAccessRequest{Name: "k"}) }},
		{"KeySetPIN", func() (any, error) { return s.KeySetPIN(ctx, &api.KeySetPINRequest{Name: "k"}) }},
		{"KeySetChain", func() (any, error) { return s.KeySetChain(ctx, &api.KeySetChainRequest{Name: "k"}) }},
		{"KeySign", func() (any, error) { return s.KeySign(ctx, &api.KeySignRequest{Name: "k"}) }},
		{"KeyAttest", func() (any, error) { return s.KeyAttest(ctx, &api.KeyAttestRequest{Name: "k"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.call()
			st, ok := status.FromError(err)
			if !ok || st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "no key service") {
				t.Fatalf("error %v, want InvalidArgument: no key service", err)
			}
			// The handlers return typed pointers: the interface holds one, and it must be nil.
			if v := reflect.ValueOf(resp); v.Kind() != reflect.Pointer || !v.IsNil() {
				t.Fatalf("response %#v with the error, want a nil pointer", resp)
			}
		})
	}
}
