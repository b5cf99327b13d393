package attest

import (
	"io"

	"github.com/palisade-project/palisade/internal/rot/tpm"
)

// Event is one entry of the event log that explains the visor PCR of a TPM-rooted visor
// (docs/attestation.md §3): what the visor extended, in order.
type Event struct {
	PCR    uint32   // the PCR extended (the visor PCR)
	Digest [32]byte // the value extended
	Kind   string   // "visor" (MeasureVisor), "identity" (SHA-256 of the identity key) or "cap"
}

// MeasureVisor computes the visor measurement that Options.Visor expects: SHA-256 over a tag,
// the SHA-256 of the palisaded executable and the SHA-256 of the configuration bytes it was
// started with (nil when it was started without a configuration file), exactly as palisaded
// measures itself at start. A relying party computes it offline from the release and the
// configuration it trusts (docs/attestation.md §3).
func MeasureVisor(executable io.Reader, configuration []byte) ([32]byte, error) {
	d, err := tpm.MeasureVisor(executable, configuration)
	return d, err
}
