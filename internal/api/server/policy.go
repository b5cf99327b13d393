package server

import (
	"fmt"
	"slices"
)

// Op is an operation on a PAL that access control decides.
type Op string

const (
	OpCall       Op = "call"
	OpAttest     Op = "attest"
	OpList       Op = "list"
	OpUnregister Op = "unregister"
)

// Policy is the access control of the daemon. A PAL belongs to the uid that registered it.
// Nobody else, root included, may touch it unless the policy says so: root can read the
// daemon's memory anyway, so this is not a defence against root, but it keeps one compromised
// application running as root from using every PAL through the API by accident.
type Policy struct {
	// Registrants, if non-nil, are the only uids that may register PALs. nil means every uid
	// that can connect to the socket (the socket's mode and group decide who can).
	Registrants []uint32 `json:"registrants,omitempty"`
	// Admins may do every operation on every PAL.
	Admins []uint32 `json:"admins,omitempty"`
	// Shares give other uids access to some PALs of an owner.
	Shares []Share `json:"shares,omitempty"`
}

// Share gives UIDs the operations Ops (default: call, attest, list) on the PALs of Owner whose
// name is Name ("*" for all of them).
type Share struct {
	Owner uint32   `json:"owner"`
	Name  string   `json:"name"`
	UIDs  []uint32 `json:"uids"`
	Ops   []Op     `json:"ops,omitempty"`
}

// Check reports whether the policy is well formed.
func (p *Policy) Check() error {
	for i, s := range p.Shares {
		if s.Name == "" {
			return fmt.Errorf("share %d: name is empty (use \"*\" for every PAL of the owner)", i)
		}
		if len(s.UIDs) == 0 {
			return fmt.Errorf("share %d: no uids", i)
		}
		for _, op := range s.Ops {
			switch op {
			case OpCall, OpAttest, OpList, OpUnregister:
			default:
				return fmt.Errorf("share %d: unknown op %q (call, attest, list, unregister)", i, op)
			}
		}
	}
	return nil
}

var defaultShareOps = []Op{OpCall, OpAttest, OpList}

// Allowed reports whether uid may do op on a PAL named name owned by owner.
func (p *Policy) Allowed(uid, owner uint32, name string, op Op) bool {
	if uid == owner || slices.Contains(p.Admins, uid) {
		return true
	}
	for _, s := range p.Shares {
		if s.Owner != owner || (s.Name != "*" && s.Name != name) || !slices.Contains(s.UIDs, uid) {
			continue
		}
		ops := s.Ops
		if len(ops) == 0 {
			ops = defaultShareOps
		}
		if slices.Contains(ops, op) {
			return true
		}
	}
	return false
}

// MayRegister reports whether uid may register PALs.
func (p *Policy) MayRegister(uid uint32) bool {
	return p.Registrants == nil || slices.Contains(p.Registrants, uid) || slices.Contains(p.Admins, uid)
}
