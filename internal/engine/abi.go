package engine

import (
	"encoding/binary"
	"errors"

	"github.com/palisade-project/palisade/internal/utpm"
)

// Op is a µTPM hostcall operation (docs/abi.md §3).
type Op uint32

const (
	OpOutput           Op = 0
	OpExtend           Op = 1
	OpPCRRead          Op = 2
	OpSeal             Op = 3
	OpUnseal           Op = 4
	OpQuote            Op = 5
	OpRandom           Op = 6
	OpIdentityPublic   Op = 7
	OpKeyCreate        Op = 8
	OpKeySign          Op = 9
	OpCounterRead      Op = 10
	OpCounterIncrement Op = 11
	OpLog              Op = 12
)

// ABI error codes (docs/abi.md §4).
const (
	EInval         = 1
	EFault         = 2
	EShort         = 3
	EPCR           = 4
	ETampered      = 5
	EForeign       = 6
	EWrongPAL      = 7
	EPCRMismatch   = 8
	EWrongType     = 9
	EUnsupported   = 10
	ETooLarge      = 11
	EInternal      = 12
	EMalformed     = 13
	ENotAuthorized = 14
	EAudit         = 15
	MaxHostcallIO  = 1<<20 + 4<<10 // largest req_len and resp_cap
	maxLog         = 4 << 10
)

// CallState is the per-call state of one PAL invocation that hostcalls update.
type CallState struct {
	MaxOutput      int
	Output         []byte // last value passed to OUTPUT
	OutputTooLarge bool   // OUTPUT was called with more than MaxOutput bytes
}

// Memory is a PAL's memory as the hostcall sees it: each engine translates the PAL's pointers
// its own way, and Hostcall applies the ABI's rules around the translation.
type Memory interface {
	// Buffer returns the host view of the n bytes at ptr (n > 0), or false if they do not all
	// lie in memory the PAL may pass for this buffer (write: the response buffer). The view
	// has capacity n, so nothing can append past it.
	Buffer(ptr uint64, n uint32, write bool) ([]byte, bool)
}

// Hostcall serves utpm(op, req_ptr, req_len, resp_ptr, resp_cap) (docs/abi.md §2) for every
// engine, so that the rules on buffers are the same everywhere and in one place. In order:
//
//  1. sizes: a req_len or resp_cap above MaxHostcallIO is E_TOOLARGE, whatever the pointers;
//     an OUTPUT whose request is too large also fails the whole call (ErrOutputTooLarge), as
//     an output over the registration's cap does;
//  2. bounds: a length of 0 is an empty buffer whatever its pointer; any other buffer must lie
//     entirely in memory the PAL may pass (mem.Buffer), else E_FAULT, request first;
//  3. the operation (Dispatch).
func Hostcall(h Host, cs *CallState, mem Memory, op uint32, reqPtr uint64, reqLen uint32, respPtr uint64, respCap uint32) int64 {
	if reqLen > MaxHostcallIO || respCap > MaxHostcallIO {
		if Op(op) == OpOutput && reqLen > MaxHostcallIO {
			cs.OutputTooLarge = true
		}
		return -ETooLarge
	}
	var req, resp []byte
	if reqLen > 0 {
		var ok bool
		if req, ok = mem.Buffer(reqPtr, reqLen, false); !ok {
			return -EFault
		}
	}
	if respCap > 0 {
		var ok bool
		if resp, ok = mem.Buffer(respPtr, respCap, true); !ok {
			return -EFault
		}
	}
	return Dispatch(h, cs, Op(op), req, resp)
}

// Dispatch executes one µTPM hostcall for a PAL. req and resp are views of the PAL's memory
// that Hostcall has already bounds-checked (and whose sizes are ≤ MaxHostcallIO). It returns
// the response length, or minus an ABI error code. It never panics on any input.
func Dispatch(h Host, cs *CallState, op Op, req, resp []byte) int64 {
	n, err := dispatch(h, cs, op, req, resp)
	if err != nil {
		return -int64(errCode(err))
	}
	return int64(n)
}

// Sentinels for failures that the dispatcher itself detects.
var (
	errShort      = errors.New("response buffer too small")
	errBadRequest = errors.New("malformed hostcall request")
	errBadOp      = errors.New("unknown hostcall op")
	errTooLarge   = errors.New("too large")
)

func errCode(err error) int32 {
	switch {
	case errors.Is(err, errShort):
		return EShort
	case errors.Is(err, errBadRequest):
		return EInval
	case errors.Is(err, errBadOp):
		return EUnsupported
	case errors.Is(err, errTooLarge):
		return ETooLarge
	}
	return utpm.Code(err)
}

func put(resp, b []byte) (int, error) {
	if len(b) > len(resp) {
		return 0, errShort
	}
	return copy(resp, b), nil
}

func dispatch(h Host, cs *CallState, op Op, req, resp []byte) (int, error) {
	t := h.TPM()
	switch op {
	case OpOutput:
		if len(req) > cs.MaxOutput {
			cs.OutputTooLarge = true
			return 0, errTooLarge
		}
		cs.Output = append(cs.Output[:0], req...)
		return 0, nil

	case OpExtend:
		if len(req) != 4+32 {
			return 0, errBadRequest
		}
		var d utpm.Digest
		copy(d[:], req[4:])
		return 0, t.Extend(pcrIndex(req), d)

	case OpPCRRead:
		if len(req) != 4 {
			return 0, errBadRequest
		}
		v, err := t.PCR(pcrIndex(req))
		if err != nil {
			return 0, err
		}
		return put(resp, v[:])

	case OpSeal:
		p, rest, err := DecodePolicy(req)
		if err != nil {
			return 0, err
		}
		blob, err := t.Seal(rest, p)
		if err != nil {
			return 0, err
		}
		return put(resp, blob)

	case OpUnseal:
		data, creator, err := t.Unseal(req)
		if err != nil {
			return 0, err
		}
		if 32+len(data) > len(resp) {
			return 0, errShort
		}
		copy(resp, creator[:])
		return 32 + copy(resp[32:], data), nil

	case OpQuote:
		if len(req) < 5 {
			return 0, errBadRequest
		}
		mask := req[0]
		nl := binary.LittleEndian.Uint32(req[1:5])
		if uint64(nl) > uint64(len(req)-5) {
			return 0, errBadRequest
		}
		ev, err := t.Quote(req[5:5+nl], req[5+nl:], mask)
		if err != nil {
			return 0, err
		}
		return put(resp, ev)

	case OpRandom:
		if len(req) != 0 {
			return 0, errBadRequest
		}
		if len(resp) > utpm.MaxRandom {
			return 0, errTooLarge
		}
		if err := t.Random(resp); err != nil {
			return 0, err
		}
		return len(resp), nil

	case OpIdentityPublic:
		return put(resp, t.Platform().IdentityPublic())

	case OpKeyCreate:
		if len(req) < 1 {
			return 0, errBadRequest
		}
		p, rest, err := DecodePolicy(req[1:])
		if err != nil {
			return 0, err
		}
		if len(rest) != 0 {
			return 0, errBadRequest
		}
		blob, pub, err := t.KeyCreate(utpm.KeyAlg(req[0]), p)
		if err != nil {
			return 0, err
		}
		if 4+len(pub)+len(blob) > len(resp) {
			return 0, errShort
		}
		binary.LittleEndian.PutUint32(resp, uint32(len(pub)))
		n := 4 + copy(resp[4:], pub)
		return n + copy(resp[n:], blob), nil

	case OpKeySign:
		if len(req) < 8 {
			return 0, errBadRequest
		}
		s := utpm.Scheme(binary.LittleEndian.Uint16(req[0:]))
		hh := utpm.Hash(binary.LittleEndian.Uint16(req[2:]))
		bl := binary.LittleEndian.Uint32(req[4:])
		if uint64(bl) > uint64(len(req)-8) {
			return 0, errBadRequest
		}
		sig, err := t.KeySign(req[8:8+bl], s, hh, req[8+bl:])
		if err != nil {
			return 0, err
		}
		return put(resp, sig)

	case OpCounterRead, OpCounterIncrement:
		if len(req) != 4 {
			return 0, errBadRequest
		}
		id := binary.LittleEndian.Uint32(req)
		var v uint64
		var err error
		if op == OpCounterRead {
			v, err = t.CounterRead(id)
		} else {
			v, err = t.CounterIncrement(id)
		}
		if err != nil {
			return 0, err
		}
		if len(resp) < 8 {
			return 0, errShort
		}
		binary.LittleEndian.PutUint64(resp, v)
		return 8, nil

	case OpLog:
		if len(req) > maxLog {
			req = req[:maxLog]
		}
		h.Log(req)
		return 0, nil
	}
	return 0, errBadOp
}

// pcrIndex reads a u32 PCR index; out-of-range values stay out of range for the µTPM to refuse.
func pcrIndex(req []byte) int {
	i := binary.LittleEndian.Uint32(req)
	if i > utpm.NumPCRs {
		return utpm.NumPCRs
	}
	return int(i)
}

// DecodePolicy parses the policy encoding of docs/abi.md §3 from the front of b and returns
// the rest.
func DecodePolicy(b []byte) (utpm.Policy, []byte, error) {
	var p utpm.Policy
	if len(b) < 1 {
		return p, nil, errBadRequest
	}
	switch b[0] {
	case 0:
		b = b[1:]
	case 1:
		if len(b) < 33 {
			return p, nil, errBadRequest
		}
		copy(p.Target[:], b[1:33])
		if p.Target == (utpm.Digest{}) {
			return p, nil, errBadRequest
		}
		b = b[33:]
	case 2:
		// u8 name_len ‖ name ‖ signer[32]
		if len(b) < 2 {
			return p, nil, errBadRequest
		}
		n := int(b[1])
		if len(b) < 2+n+32 {
			return p, nil, errBadRequest
		}
		p.Name = string(b[2 : 2+n])
		copy(p.Signer[:], b[2+n:2+n+32])
		if !utpm.ValidName(p.Name) || p.Signer == (utpm.Digest{}) {
			return utpm.Policy{}, nil, errBadRequest
		}
		b = b[2+n+32:]
	default:
		return p, nil, errBadRequest
	}
	if len(b) < 2 {
		return p, nil, errBadRequest
	}
	p.PCRMask = b[0]
	source := b[1]
	b = b[2:]
	switch source {
	case 1:
		p.CurrentPCRs = true
	case 0:
		for i := 0; i < utpm.NumPCRs; i++ {
			if p.PCRMask&(1<<i) == 0 {
				continue
			}
			if len(b) < 32 {
				return p, nil, errBadRequest
			}
			copy(p.PCRValues[i][:], b[:32])
			b = b[32:]
		}
	default:
		return p, nil, errBadRequest
	}
	return p, b, nil
}

// EncodePolicy is the inverse of DecodePolicy, for SDKs and tests written in Go. A policy
// with a Name encodes as target kind 2 (its Target is not encoded).
func EncodePolicy(p utpm.Policy) []byte {
	var b []byte
	switch {
	case p.Name != "":
		b = append(b, 2, byte(len(p.Name)))
		b = append(b, p.Name...)
		b = append(b, p.Signer[:]...)
	case p.Target == (utpm.Digest{}):
		b = append(b, 0)
	default:
		b = append(b, 1)
		b = append(b, p.Target[:]...)
	}
	b = append(b, p.PCRMask)
	if p.CurrentPCRs {
		return append(b, 1)
	}
	b = append(b, 0)
	for i := 0; i < utpm.NumPCRs; i++ {
		if p.PCRMask&(1<<i) != 0 {
			b = append(b, p.PCRValues[i][:]...)
		}
	}
	return b
}
