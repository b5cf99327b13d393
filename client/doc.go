// Package client is the Go SDK for applications that use Palisade through the palisaded daemon:
// register PALs, call them, get evidence about them for a relying party, and sign with keys
// that PALs hold.
//
// # Connecting
//
// Dial connects to the daemon's Unix socket: DefaultSocket, or $PALISADE_SOCKET (SocketPath).
// One Client serves any number of goroutines, and survives restarts of the daemon (it
// reconnects, and calls wait up to ReconnectWait for it). The daemon identifies the application by the uid
// of its process (SO_PEERCRED): there are no credentials to configure, and a PAL registered by
// one uid is invisible to other uids unless the daemon's configuration shares it.
//
// # PALs
//
// Register sends a PAL image — a WebAssembly module (engine "wasm"; see package
// github.com/palisade-project/palisade/sdk/go/pal to write one in Go) or a static x86-64 ELF
// executable (engine "kvm") — and returns its Info: the Handle that Call, Attest and Unregister
// take, and its Measurement, the identity that sealed data, keys and evidence are bound to
// (package github.com/palisade-project/palisade/pal computes it from the image, offline).
// RegisterPath has the daemon read the image from a directory it is configured to trust.
//
// Call runs the PAL once. Its Result carries the PAL's own status (0: success) and output;
// a PAL that refuses is a non-zero Status, not an error.
//
// # Errors
//
// Every failure of the daemon or of the platform is an *Error wrapping one of the sentinels
// (ErrNotFound, ErrTimeout, ErrTrap, ...): test it with errors.Is.
//
// # Evidence
//
// Attest asks the daemon for evidence about a PAL, fresh for a nonce the relying party chose.
// Evidence.Bundle is what the relying party checks with package
// github.com/palisade-project/palisade/attest (or `palisade verify`).
//
// # Keys held by PALs
//
// Signer is a crypto.Signer whose private key never leaves a PAL: crypto/tls, x/crypto/ssh and
// anything else that takes a crypto.Signer sign through the PAL, which decides what it signs.
// The request it sends is encoded by package github.com/palisade-project/palisade/client/signreq,
// which the PAL decodes.
package client
