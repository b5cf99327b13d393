package main

import (
	"encoding/json"
	"os"
)

// callReport is the --json output of `palisade run` and `palisade pal call` (docs/cli.md): one
// JSON object on standard output, whatever happened after the command line was understood.
// Status and Output are null when the PAL did not complete a call (a platform error); Error
// names the class of failure, as the exit status does.
type callReport struct {
	Exit        int    `json:"exit"`                  // the command's exit status
	Handle      string `json:"handle,omitempty"`      // the PAL's handle
	Engine      string `json:"engine,omitempty"`      // palisade run: the engine it ran in
	Measurement string `json:"measurement,omitempty"` // palisade run: the PAL's measurement, hex
	Status      *int32 `json:"status"`                // the PAL's own status; 0 is success
	Output      []byte `json:"output"`                // the PAL's output, base64
	Error       string `json:"error,omitempty"`       // timeout, trap, out-of-memory, refused, unavailable, failure, pal-status
	Message     string `json:"message,omitempty"`     // the error in words
}

// completed records a call that ran to its end.
func (r *callReport) completed(status int32, output []byte) {
	r.Status = &status
	r.Output = output
	if r.Output == nil {
		r.Output = []byte{}
	}
}

// finish fills in the outcome of the command (err, nil on success) and writes the report.
// It returns err unchanged, so that the exit status and the message on standard error are
// the same as without --json.
func (r *callReport) finish(err error) error {
	r.Exit, r.Error = exitCode(err)
	if err != nil {
		r.Message = err.Error()
	}
	enc := json.NewEncoder(os.Stdout)
	if werr := enc.Encode(r); werr != nil && err == nil {
		return werr
	}
	return err
}
