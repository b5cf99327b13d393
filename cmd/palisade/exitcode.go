package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/visor"
	"github.com/palisade-project/palisade/pal"
)

// Exit statuses of palisade (docs/cli.md). A script must be able to tell a PAL's own failure
// from the platform's: a PAL that returns status 7 exits exitPALStatus, a call the platform
// stopped exits with the class of the stop. Statuses 3–8 come from commands that call or
// register PALs (run, pal, attest, demo); any other failure is exitFailure.
const (
	exitOK          = 0
	exitFailure     = 1 // any failure not classified below (a file not found, a bad signature, …)
	exitUsage       = 2 // bad command line: unknown command or flag, wrong arguments
	exitPALStatus   = 3 // the PAL ran and returned a non-zero status (the status: stderr, --json)
	exitTimeout     = 4 // the call ran out of time (the PAL's time limit or the caller's --timeout)
	exitTrap        = 5 // the PAL trapped: it crashed, and its instance was reset
	exitOutOfMemory = 6 // the PAL exhausted its memory cap, and its instance was reset
	exitRefused     = 7 // the platform refused the request: permission, limits, image, options, no such PAL
	exitUnavailable = 8 // palisaded cannot be reached
)

// palStatusError is a call that completed with a non-zero status chosen by the PAL.
type palStatusError struct{ status int32 }

func (e *palStatusError) Error() string { return fmt.Sprintf("PAL returned status %d", e.status) }

// exitClasses maps errors to exit statuses; the first class with a matching sentinel wins.
// Both the embedded visor's errors (palisade run) and the daemon's (through package client)
// are listed.
var exitClasses = []struct {
	code      int
	name      string // the "error" field of --json output
	sentinels []error
}{
	{exitTimeout, "timeout", []error{engine.ErrTimeout, client.ErrTimeout, context.DeadlineExceeded}},
	{exitTrap, "trap", []error{engine.ErrTrap, client.ErrTrap}},
	{exitOutOfMemory, "out-of-memory", []error{engine.ErrOutOfMemory, client.ErrOutOfMemory}},
	{exitRefused, "refused", []error{
		engine.ErrInputTooLarge, engine.ErrOutputTooLarge, engine.ErrBadImage, engine.ErrNotSupported,
		pal.ErrInvalid, visor.ErrNotFound, visor.ErrUnknownEngine, visor.ErrBadOptions,
		client.ErrPermission, client.ErrNotFound, client.ErrInputTooLarge, client.ErrOutputTooLarge,
		client.ErrBadImage, client.ErrBadOptions, client.ErrUnknownEngine, client.ErrNotSupported,
		client.ErrInvalid,
		// Named keys (docs/keys.md): the daemon refused to make or use the key.
		client.ErrKeyExists, client.ErrPINRequired, client.ErrPINIncorrect, client.ErrLocked,
		client.ErrRefused, client.ErrKeyUnavailable,
	}},
	{exitUnavailable, "unavailable", []error{client.ErrUnavailable}},
}

// exitCode is the exit status for err, and its class name for --json output.
func exitCode(err error) (int, string) {
	var ps *palStatusError
	switch {
	case err == nil:
		return exitOK, ""
	case errors.As(err, &ps):
		return exitPALStatus, "pal-status"
	case errors.Is(err, errUsage):
		return exitUsage, "usage"
	}
	for _, c := range exitClasses {
		for _, s := range c.sentinels {
			if errors.Is(err, s) {
				return c.code, c.name
			}
		}
	}
	return exitFailure, "failure"
}
