// Package kvm is the engine that runs native x86-64 PALs, each instance in its own KVM virtual
// machine with no guest kernel (docs/kvm.md, docs/abi.md §6).
//
// The PAL runs in guest ring 3 with long mode set up from Go: the GDT and page tables sit in a
// read-only memory slot, the PAL's code in another read-only slot shared by all instances of a
// module, and its RAM in a third. There is no IDT, so any exception ends in a triple fault that
// KVM reports as a shutdown. A µTPM hostcall is a store to a guest-physical address with no
// memory behind it (KVM_EXIT_MMIO) with the arguments in registers; the call ends with a store
// of the status to another such address.
//
// Every VM is used by one instance only and destroyed when the instance is closed or faults;
// a pool of VMs created ahead keeps KVM_CREATE_VM and KVM_CREATE_VCPU off the registration
// path. Without /dev/kvm, New returns an error wrapping engine.ErrNotSupported.
package kvm
