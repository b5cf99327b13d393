package tpm

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrTPMFull is wrapped when the TPM has no room for another loaded object or session: they
// are held by another program, or were left by one that died on a TPM without a resource
// manager (the kernel's /dev/tpmrm0 flushes a client's objects when it exits; swtpm's socket
// and /dev/tpm0 do not).
var ErrTPMFull = errors.New("tpm: the TPM's memory for loaded objects or sessions is full")

// hasResourceManager says whether dev is served by the kernel's resource manager
// (/dev/tpmrmN), which gives each client its own view of loaded objects and flushes them when
// the client goes away. A swtpm socket or /dev/tpmN is the TPM itself.
func hasResourceManager(dev string) bool {
	return !strings.HasPrefix(dev, "swtpm:") && strings.HasPrefix(filepath.Base(dev), "tpmrm")
}

// flushLeftovers flushes every transient object and every session in the TPM and returns how
// many there were. Only for a TPM without a resource manager, at start: such a TPM serves one
// client at a time (swtpm's socket accepts one connection, /dev/tpm0 one open), so whatever
// is loaded belongs to no live client: it was left by a client that died (palisaded killed
// with SIGKILL leaves its attestation key) and would fill the TPM's few object slots
// (three on swtpm) within a few crashes.
func flushLeftovers(t transport.TPM) (int, error) {
	seen := map[tpm2.TPMHandle]bool{}
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		handles, err := listHandles(t, ht)
		if err != nil {
			return len(seen), err
		}
		for _, h := range handles {
			if seen[h] {
				continue
			}
			seen[h] = true
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t); err != nil {
				return len(seen), fmt.Errorf("tpm: flush leftover handle %#x: %w", uint32(h), err)
			}
		}
	}
	return len(seen), nil
}

// listHandles lists the handles of type ht (TPM2_GetCapability TPM_CAP_HANDLES): transient
// objects (0x80), or loaded (0x02) and saved (0x03) sessions, which the TPM may list under
// either session type (HMAC 0x02xxxxxx or policy 0x03xxxxxx handles).
func listHandles(t transport.TPM, ht tpm2.TPMHT) ([]tpm2.TPMHandle, error) {
	ok := func(h tpm2.TPMHandle) bool {
		top := tpm2.TPMHT(uint32(h) >> 24)
		if ht == tpm2.TPMHTTransient {
			return top == ht
		}
		return top == tpm2.TPMHTHMACSession || top == tpm2.TPMHTPolicySession
	}
	var out []tpm2.TPMHandle
	next := uint32(ht) << 24
	for {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: next, PropertyCount: 64}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("tpm: list handles %#x: %w", next, err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("tpm: list handles %#x: %w", next, err)
		}
		for _, h := range hs.Handle {
			if !ok(h) {
				return out, nil
			}
			out = append(out, h)
		}
		if !rsp.MoreData || len(hs.Handle) == 0 {
			return out, nil
		}
		next = uint32(hs.Handle[len(hs.Handle)-1]) + 1
	}
}

// tpmFailure names a failed TPM command by its cause: a full TPM is ErrTPMFull, whatever the
// command was.
func tpmFailure(what string, err error) error {
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCObjectMemory, tpm2.TPMRCSessionMemory, tpm2.TPMRCMemory,
		tpm2.TPMRCObjectHandles, tpm2.TPMRCSessionHandles} {
		if errors.Is(err, rc) {
			return fmt.Errorf("%w (held by another program, or left by one that died on a TPM without a resource manager): %s: %w", ErrTPMFull, what, err)
		}
	}
	return fmt.Errorf("tpm: %s: %w", what, err)
}
