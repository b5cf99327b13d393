// Package api holds the gRPC definition of the palisaded service (palisade.proto) and the Go
// code generated from it. The server is in api/server, the client SDK in client.
package api

//go:generate make generate
