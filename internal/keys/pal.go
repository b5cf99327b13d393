package keys

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/pal"
)

// The shipped PALs (docs/keys.md §2–3), built from pals/*.c by the clang command of
// docs/sdk.md. TestShippedPALsReproduce rebuilds them and compares the bytes, so their
// measurements are reproducible from source with `palisade measure`.
var (
	//go:embed pals/keygen.wasm
	KeyGenImage []byte
	//go:embed pals/signer.wasm
	SignerImage []byte
)

// Measurement returns the measurement of a PAL image.
func Measurement(image []byte) ([32]byte, error) {
	img, err := pal.Parse(image)
	if err != nil {
		return [32]byte{}, err
	}
	return img.Measurement, nil
}

// Statuses of the key PALs (pals/keypal.h).
const (
	statusOK           = 0
	statusBadRequest   = 1
	statusRefused      = 2
	statusPINRequired  = 3
	statusPINIncorrect = 4
	statusLocked       = 5
	statusBadPINState  = 6
	statusUTPM         = 7
)

// palAlg maps an Alg to the µTPM's key algorithm.
func palAlg(a Alg) (utpm.KeyAlg, error) {
	switch a {
	case ECDSAP256:
		return utpm.KeyECDSAP256, nil
	case Ed25519:
		return utpm.KeyEd25519, nil
	case RSA2048:
		return utpm.KeyRSA2048, nil
	case RSA3072:
		return utpm.KeyRSA3072, nil
	}
	return 0, fmt.Errorf("%w: algorithm %q (want %s, %s, %s or %s)", ErrBadRequest, a, ECDSAP256, Ed25519, RSA2048, RSA3072)
}

// keygenInput is the key-generation PAL's 'K' command.
func keygenInput(alg utpm.KeyAlg, signer [32]byte, nonce [32]byte) []byte {
	b := []byte{'K', byte(alg)}
	b = append(b, signer[:]...)
	return append(b, nonce[:]...)
}

// keygenOutput decodes u32 pub_len ‖ pub ‖ u32 blob_len ‖ blob ‖ quote.
func keygenOutput(out []byte) (pub, blob, quote []byte, err error) {
	pub, rest, ok := lv32(out)
	if ok {
		blob, quote, ok = lv32(rest)
	}
	if !ok || len(pub) == 0 || len(blob) == 0 || len(quote) == 0 {
		return nil, nil, nil, fmt.Errorf("key-generation PAL: malformed output of %d bytes", len(out))
	}
	return pub, blob, quote, nil
}

// lv32 splits u32le length ‖ value ‖ rest.
func lv32(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

// maxPIN bounds a PIN (pals/signer.c MAX_PIN).
const maxPIN = 64

func appendLV32(b, v []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// signInput is the signing PAL's 'S' command.
func signInput(req SignRequest, blob, pinState []byte) []byte {
	b := make([]byte, 0, 1+4+8+len(blob)+len(pinState)+1+len(req.PIN)+len(req.Digest))
	b = append(b, 'S')
	b = binary.LittleEndian.AppendUint16(b, req.Scheme)
	b = binary.LittleEndian.AppendUint16(b, req.Hash)
	b = appendLV32(b, blob)
	b = appendLV32(b, pinState)
	b = append(b, byte(len(req.PIN)))
	b = append(b, req.PIN...)
	return append(b, req.Digest...)
}

// signOutput decodes u32 sig_len ‖ sig ‖ renewed PIN state.
func signOutput(out []byte) (sig, renewed []byte, err error) {
	sig, renewed, ok := lv32(out)
	if !ok || len(sig) == 0 {
		return nil, nil, fmt.Errorf("%w: signing PAL: malformed output of %d bytes", ErrRefused, len(out))
	}
	return sig, renewed, nil
}

// pinInput is the signing PAL's 'P' command.
func pinInput(blob, pinState, oldPIN []byte, maxTries uint8, newPIN []byte) []byte {
	b := []byte{'P'}
	b = appendLV32(b, blob)
	b = appendLV32(b, pinState)
	b = append(b, byte(len(oldPIN)))
	b = append(b, oldPIN...)
	b = append(b, maxTries, byte(len(newPIN)))
	return append(b, newPIN...)
}

// attestInput is the signing PAL's 'A' command.
func attestInput(scheme, hash uint16, blob, nonce []byte) []byte {
	b := []byte{'A'}
	b = binary.LittleEndian.AppendUint16(b, scheme)
	b = binary.LittleEndian.AppendUint16(b, hash)
	b = appendLV32(b, blob)
	return append(b, nonce...)
}

// abiErrors names the µTPM error codes a key PAL may report with statusUTPM (docs/abi.md §4).
var abiErrors = map[uint32]string{
	1: "E_INVAL", 3: "E_SHORT", 5: "E_TAMPERED", 6: "E_FOREIGN", 7: "E_WRONGPAL",
	8: "E_PCRMISMATCH", 9: "E_WRONGTYPE", 10: "E_UNSUPPORTED", 11: "E_TOOLARGE",
	12: "E_INTERNAL", 13: "E_MALFORMED", 14: "E_NOTAUTHORIZED", 15: "E_AUDIT",
}

// statusError maps a key PAL's non-zero status and output to an error of this package.
func statusError(what string, status int32, out []byte) error {
	switch status {
	case statusBadRequest:
		return fmt.Errorf("%w: %s: request refused as malformed", ErrBadRequest, what)
	case statusRefused:
		return fmt.Errorf("%w: %s: %q", ErrRefused, what, out)
	case statusPINRequired:
		return ErrPINRequired
	case statusPINIncorrect:
		if len(out) == 8 {
			return fmt.Errorf("%w (%d tries left)", ErrPINIncorrect, binary.LittleEndian.Uint64(out))
		}
		return ErrPINIncorrect
	case statusLocked:
		return ErrLocked
	case statusBadPINState:
		return fmt.Errorf("%w: %s: the key's PIN state does not verify (tampered, or sealed on another platform)", ErrUnavailable, what)
	case statusUTPM:
		if len(out) != 4 {
			return fmt.Errorf("%w: %s: µTPM error", ErrUnavailable, what)
		}
		code := binary.LittleEndian.Uint32(out)
		name := abiErrors[code]
		if name == "" {
			name = fmt.Sprintf("code %d", code)
		}
		switch code {
		case 1, 10, 11: // the request does not fit the key: scheme, hash or digest length
			return fmt.Errorf("%w: %s: µTPM %s (scheme, hash or digest length does not fit the key)", ErrBadRequest, what, name)
		case 5, 6, 7, 13:
			return fmt.Errorf("%w: %s: µTPM %s: the key blob is not usable on this platform by this signing PAL (tampered, made under another master secret, or bound to another PAL)", ErrUnavailable, what, name)
		}
		return fmt.Errorf("%w: %s: µTPM %s", ErrUnavailable, what, name)
	}
	return fmt.Errorf("%w: %s: status %d: %q", ErrRefused, what, status, out)
}

var errNoPAL = errors.New("signing PAL image is not in the state db")
