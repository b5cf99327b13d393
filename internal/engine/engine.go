// Package engine defines what an execution engine for PALs must provide, and the PAL ABI
// (docs/abi.md) that every engine shares.
//
// An Engine turns a validated PAL image into a Module (compiled once, cacheable by
// measurement); a Module is instantiated into Instances, each with its own memory. The visor
// owns the µTPM of every instance and hands the engine a Host through which the PAL's hostcalls
// reach it. Engines treat every PAL as hostile: each pointer, length and op it passes is
// untrusted.
package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/pal"
)

// Engine compiles PAL images of the kinds it supports.
type Engine interface {
	// Name is the engine's name as users type it ("wasm", "kvm").
	Name() string
	// Compile validates img and prepares it for instantiation. It fails with an error wrapping
	// ErrBadImage (malformed, wrong kind, refused import, missing export) or ErrNotSupported.
	Compile(ctx context.Context, img *pal.Image) (Module, error)
	// Close releases the engine's resources. Modules and instances must be closed first.
	Close(ctx context.Context) error
}

// Module is a compiled PAL image.
type Module interface {
	// Instantiate creates a fresh instance with its own memory, bound to host for hostcalls.
	Instantiate(ctx context.Context, host Host, lim Limits) (Instance, error)
	Close(ctx context.Context) error
}

// Instance is one running copy of a PAL. It is not safe for concurrent use: the visor calls one
// instance from one goroutine at a time.
type Instance interface {
	// Call runs the PAL's entry point with input. The deadline of the call is the earlier of
	// ctx's deadline and Limits.Timeout. Platform failures are returned as errors wrapping the
	// sentinels below; a PAL-chosen failure is a nil error with a non-zero Result.Status.
	// After ErrTimeout, ErrTrap or ErrOutOfMemory the instance resets itself before the next
	// call; the error is for this call only.
	Call(ctx context.Context, input []byte) (Result, error)
	Close(ctx context.Context) error
}

// Host serves the PAL's µTPM hostcalls. The engine calls it synchronously from the goroutine
// that is running Call.
type Host interface {
	// TPM is the µTPM that serves this instance's hostcalls.
	TPM() *utpm.TPM
	// Log receives the PAL's debug output (LOG op, WASI fd_write). It must not block.
	Log(msg []byte)
}

// Limits bound what one instance may consume.
type Limits struct {
	Timeout   time.Duration // per call; 0 means DefaultLimits.Timeout
	MemoryMiB uint32        // memory cap of the instance
	MaxInput  int           // bytes
	MaxOutput int           // bytes; at most MaxHostcallIO, what one OUTPUT hostcall can carry
}

// DefaultLimits are applied to every zero field of a registration's Limits.
var DefaultLimits = Limits{
	Timeout:   10 * time.Second,
	MemoryMiB: 64,
	MaxInput:  1 << 20,
	MaxOutput: 1 << 20,
}

// MinInitTimeout bounds the initialisation of an instance (instantiation and the PAL's own
// initialiser) when Limits.Timeout is shorter: a Go PAL's runtime takes milliseconds to start,
// and a reset after a fault must not make the next call fail for lack of time.
const MinInitTimeout = 5 * time.Second

// Validate checks the limits a registration asks for: no negative value, and an output cap
// that an OUTPUT hostcall can reach (at most MaxHostcallIO, docs/abi.md §1). A larger cap would
// be accepted and never honoured, so it is refused, naming the rule.
func (l Limits) Validate() error {
	switch {
	case l.Timeout < 0:
		return fmt.Errorf("negative timeout %v", l.Timeout)
	case l.MaxInput < 0:
		return fmt.Errorf("negative input cap %d", l.MaxInput)
	case l.MaxOutput < 0:
		return fmt.Errorf("negative output cap %d", l.MaxOutput)
	case l.MaxOutput > MaxHostcallIO:
		return fmt.Errorf("output cap %d bytes exceeds %d (1 MiB + 4 KiB), the most one OUTPUT hostcall carries", l.MaxOutput, MaxHostcallIO)
	}
	return nil
}

// WithDefaults returns l with every zero field replaced by its default.
func (l Limits) WithDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultLimits.Timeout
	}
	if l.MemoryMiB == 0 {
		l.MemoryMiB = DefaultLimits.MemoryMiB
	}
	if l.MaxInput <= 0 {
		l.MaxInput = DefaultLimits.MaxInput
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = DefaultLimits.MaxOutput
	}
	return l
}

// Result is what a PAL returned from one call.
type Result struct {
	Status int32  // chosen by the PAL; 0 means success
	Output []byte // owned by the caller
}

// Errors returned by engines, wrapped with detail. Callers test them with errors.Is.
var (
	ErrNotSupported   = errors.New("engine not supported on this machine")
	ErrBadImage       = errors.New("invalid PAL image")
	ErrTimeout        = errors.New("PAL call timed out")
	ErrTrap           = errors.New("PAL trapped")
	ErrOutOfMemory    = errors.New("PAL exhausted its memory limit")
	ErrInputTooLarge  = errors.New("PAL input exceeds the limit")
	ErrOutputTooLarge = errors.New("PAL output exceeds the limit")
	ErrInstanceClosed = errors.New("PAL instance is closed")
)
