// Command conformance is the Go test PAL of engine/conformance: the same command protocol as
// testdata/c/conformance.c, written with sdk/go/pal. Build with -ldflags=-X=main.variant=b to
// get another measurement.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/palisade-project/palisade/sdk/go/pal"
)

var variant = "a"

const (
	badArgs = 254
	unknown = 255
)

var (
	calls uint64 // memory that persists across calls
	sink  uint64
	hog   [][]byte
)

func fail(status int32) error { return &pal.Failure{Status: status} }

// result turns a µTPM error into the call's status (the positive ABI code).
func result(out []byte, err error) ([]byte, error) {
	var e pal.Errno
	if errors.As(err, &e) {
		return nil, fail(int32(e))
	}
	return out, err
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func parsePolicy(b []byte) (pal.Policy, []byte, bool) {
	var p pal.Policy
	if len(b) < 1 {
		return p, nil, false
	}
	if b[0] == 1 {
		if len(b) < 33 {
			return p, nil, false
		}
		copy(p.Target[:], b[1:33])
		b = b[33:]
	} else if b[0] == 2 {
		if len(b) < 2 || len(b) < 2+int(b[1])+32 {
			return p, nil, false
		}
		p.Name = string(b[2 : 2+b[1]])
		copy(p.Signer[:], b[2+b[1]:])
		b = b[2+int(b[1])+32:]
	} else {
		b = b[1:]
	}
	if len(b) < 2 {
		return p, nil, false
	}
	p.PCRMask, p.CurrentPCRs = b[0], b[1] == 1
	b = b[2:]
	if p.CurrentPCRs {
		return p, b, true
	}
	for i := 0; i < pal.NumPCRs; i++ {
		if p.PCRMask&(1<<i) == 0 {
			continue
		}
		if len(b) < 32 {
			return p, nil, false
		}
		copy(p.PCRValues[i][:], b)
		b = b[32:]
	}
	return p, b, true
}

func handle(in []byte) ([]byte, error) {
	if len(in) == 0 {
		return nil, fail(badArgs)
	}
	a := in[1:]
	le := binary.LittleEndian
	switch in[0] {
	case 'n':
		return nil, nil
	case 'v':
		return []byte(variant), nil
	case 'm':
		calls++
		return u64(calls), nil
	case 'e':
		if len(a) != 36 {
			return nil, fail(badArgs)
		}
		return result(nil, pal.Extend(int(le.Uint32(a)), pal.Digest(a[4:])))
	case 'r':
		if len(a) != 4 {
			return nil, fail(badArgs)
		}
		v, err := pal.PCRRead(int(le.Uint32(a)))
		return result(v[:], err)
	case 's':
		p, data, ok := parsePolicy(a)
		if !ok {
			return nil, fail(badArgs)
		}
		return result(pal.Seal(data, p))
	case 'u':
		data, creator, err := pal.Unseal(a)
		return result(append(creator[:], data...), err)
	case 'q':
		if len(a) < 5 || le.Uint32(a[1:]) > uint32(len(a)-5) {
			return nil, fail(badArgs)
		}
		n := 5 + le.Uint32(a[1:])
		return result(pal.Quote(a[5:n], a[n:], a[0]))
	case 'R':
		if len(a) != 4 || le.Uint32(a) > 128<<10 {
			return nil, fail(badArgs)
		}
		b := make([]byte, le.Uint32(a))
		return result(b, pal.Random(b))
	case 'i':
		return result(pal.IdentityPublic())
	case 'k':
		if len(a) < 1 {
			return nil, fail(badArgs)
		}
		p, rest, ok := parsePolicy(a[1:])
		if !ok || len(rest) != 0 {
			return nil, fail(badArgs)
		}
		blob, pub, err := pal.KeyCreate(pal.KeyAlg(a[0]), p)
		out := le.AppendUint32(nil, uint32(len(pub)))
		return result(append(append(out, pub...), blob...), err)
	case 'g':
		if len(a) < 8 || le.Uint32(a[4:]) > uint32(len(a)-8) {
			return nil, fail(badArgs)
		}
		n := 8 + le.Uint32(a[4:])
		return result(pal.KeySign(a[8:n], pal.Scheme(le.Uint16(a)), pal.Hash(le.Uint16(a[2:])), a[n:]))
	case 'c', 'C':
		if len(a) != 4 {
			return nil, fail(badArgs)
		}
		f := pal.CounterRead
		if in[0] == 'C' {
			f = pal.CounterIncrement
		}
		v, err := f(le.Uint32(a))
		return result(u64(v), err)
	case 'l':
		pal.Log(string(a))
		return nil, nil
	case 'h':
		d := sha256.Sum256(a)
		return d[:], nil
	case 'O':
		if len(a) != 4 || le.Uint32(a) > 128<<10 {
			return nil, fail(badArgs)
		}
		b := make([]byte, le.Uint32(a))
		for i := range b {
			b[i] = byte(i)
		}
		return b, nil
	case 'F':
		return faults(), nil
	case 'E':
		return a, nil
	case 'X':
		outputTooLarge()
		return nil, nil
	case 'L':
		for {
			sink++
		}
	case 'A':
		for {
			b := make([]byte, 1<<20)
			b[0] = 1
			hog = append(hog, b)
		}
	case 'T':
		panic("conformance: trap requested")
	case 'z': // Go only: sleep through WASI poll_oneoff
		if len(a) != 4 {
			return nil, fail(badArgs)
		}
		start := time.Now()
		time.Sleep(time.Duration(le.Uint32(a)) * time.Millisecond)
		return u64(uint64(time.Since(start))), nil
	}
	return nil, fail(unknown)
}

// faults calls the raw hostcall with hostile arguments, as conformance.c does.
func faults() []byte {
	req := make([]byte, 36)
	buf := make([]byte, 128<<10)
	addr := func(b []byte) uint32 { return pal.AddrOf(b) }
	const outside = 0xfffffff0
	rc := []int64{
		pal.RawHostcall(12, 0xfffff000, 0x1000, 0, 0),
		pal.RawHostcall(2, addr(req), 4, outside, 32),
		pal.RawHostcall(12, addr(buf), 0xffffffff, 0, 0),
		pal.RawHostcall(6, 0, 0, addr(buf), 0x7fffffff),
		pal.RawHostcall(99, 0, 0, 0, 0),
		pal.RawHostcall(2, addr(req), 4, addr(buf), 16),
		pal.RawHostcall(1, addr(req), 10, 0, 0),
		pal.RawHostcall(6, 0, 0, addr(buf), 64<<10+1),
		pal.RawHostcall(12, outside, 0, 0, 0),
		pal.RawHostcall(6, 0, 0, outside, 0),
		pal.RawHostcall(2, outside, 4, addr(buf), 0x7fffffff),
		pal.RawHostcall(12, addr(buf), 0xffffffff, outside, 32),
	}
	out := make([]byte, len(rc))
	for i, r := range rc {
		switch {
		case r < 0 && r > -255:
			out[i] = byte(-r)
		case r == 0:
			out[i] = 0
		default:
			out[i] = 0xff
		}
	}
	sink += uint64(req[0] + buf[0]) // keep both alive across the raw calls
	return out
}

// outputTooLarge passes OUTPUT one byte more than any hostcall may carry and ignores the
// E_TOOLARGE it gets: the call must fail all the same.
func outputTooLarge() {
	buf := make([]byte, 16)
	pal.RawHostcall(0, pal.AddrOf(buf), 1<<20+4<<10+1, 0, 0)
	sink += uint64(buf[0])
}

func init() { pal.Handle(handle) }

func main() {}
