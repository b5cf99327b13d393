package kvm

import (
	"fmt"

	"github.com/palisade-project/palisade/internal/engine"
)

// FaultError describes how a PAL faulted. It wraps engine.ErrTrap.
type FaultError struct {
	Reason  string
	RIP     uint64 // guest instruction pointer at the fault, if HasRIP
	Addr    uint64 // faulting address (page-fault address or guest-physical address), if HasAddr
	HasRIP  bool
	HasAddr bool
}

func (f *FaultError) Error() string {
	msg := fmt.Sprintf("kvm: %v: %s", engine.ErrTrap, f.Reason)
	if f.HasAddr {
		msg += fmt.Sprintf(" at address %#x", f.Addr)
	}
	if f.HasRIP {
		msg += fmt.Sprintf(" (rip=%#x)", f.RIP)
	}
	return msg
}

func (f *FaultError) Unwrap() error { return engine.ErrTrap }
