// Command checker is the password-checking PAL of the SSH example (paper §6.2). The password
// database — for each user a random salt and an Argon2id verifier — exists in the clear only
// inside this PAL: the SSH server keeps it sealed to this PAL's measurement and passes the
// sealed blob along with every request.
//
//	'E' ‖ u32le db_len ‖ sealed db ‖ u8 user_len ‖ user ‖ password   enrol (db_len 0: new db)
//	    → the new sealed db
//	'C' ‖ u32le db_len ‖ sealed db ‖ u8 user_len ‖ user ‖ password   check
//	    → status 0 "ok"; 4 wrong password or unknown user; 5 rate-limited
//	      (output: u32le seconds to wait ‖ u64le failures ever recorded for the user)
//
// Rate limiting: after FreeFailures consecutive failures for a user, each check is refused
// without looking at the password until a lockout (1 s, doubling per further failure, at most
// MaxLockout) has passed. The state lives in PAL memory; every failure is also counted in a
// µTPM monotonic counter, which survives restarts and re-registration, so the total is
// reported even when the in-memory state was lost.
package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/palisade-project/palisade/examples/sshpass/verifier"
	"github.com/palisade-project/palisade/sdk/go/pal"
)

const (
	verifierLen = verifier.Len
	saltLen     = verifier.SaltLen

	FreeFailures = 3
	MaxLockout   = 5 * time.Minute

	statusWrong       = 4
	statusRateLimited = 5
)

type entry struct {
	salt     [saltLen]byte
	verifier [verifierLen]byte
}

type limit struct {
	fails int
	until time.Time
}

var (
	dbHash [32]byte // the sealed blob last decoded, to skip UNSEAL on repeated checks
	db     map[string]entry
	limits = map[string]*limit{}
	dummy  entry // checked against for unknown users, so they cost the same time
)

func init() { pal.Handle(handle) }

func handle(in []byte) ([]byte, error) {
	if len(in) < 5 {
		return nil, errors.New("checker: short input")
	}
	op := in[0]
	n := binary.LittleEndian.Uint32(in[1:])
	if uint64(n) > uint64(len(in)-5) {
		return nil, errors.New("checker: bad db length")
	}
	blob, rest := in[5:5+n], in[5+n:]
	if len(rest) < 1 || int(rest[0]) > len(rest)-1 || rest[0] == 0 {
		return nil, errors.New("checker: bad user")
	}
	user, password := string(rest[1:1+rest[0]]), rest[1+rest[0]:]
	m, err := load(blob)
	if err != nil {
		return nil, err
	}
	switch op {
	case 'E':
		var e entry
		if err := pal.Random(e.salt[:]); err != nil {
			return nil, err
		}
		e.verifier = hash(password, e.salt)
		m[user] = e
		out, err := pal.Seal(encode(m), pal.Policy{}) // for this PAL's measurement
		if err != nil {
			return nil, fmt.Errorf("checker: seal: %w", err)
		}
		dbHash, db = sha256.Sum256(out), m
		return out, nil
	case 'C':
		return check(m, user, password)
	}
	return nil, fmt.Errorf("checker: unknown op %q", op)
}

func check(m map[string]entry, user string, password []byte) ([]byte, error) {
	now := time.Now()
	l := limits[user]
	if l == nil {
		l = &limit{}
		limits[user] = l
	}
	if now.Before(l.until) {
		return nil, rateLimited(user, l.until.Sub(now))
	}
	e, known := m[user]
	if !known {
		e = dummy
	}
	v := hash(password, e.salt)
	if known && subtle.ConstantTimeCompare(v[:], e.verifier[:]) == 1 {
		l.fails, l.until = 0, time.Time{}
		return []byte("ok"), nil
	}
	l.fails++
	if _, err := pal.CounterIncrement(counterID(user)); err != nil {
		pal.Log("checker: failure counter: " + err.Error())
	}
	if l.fails >= FreeFailures {
		l.until = now.Add(min(time.Second<<(l.fails-FreeFailures), MaxLockout))
	}
	return nil, &pal.Failure{Status: statusWrong, Output: []byte("wrong password")}
}

func rateLimited(user string, wait time.Duration) error {
	total, _ := pal.CounterRead(counterID(user))
	out := binary.LittleEndian.AppendUint32(nil, uint32((wait+time.Second-1)/time.Second))
	out = binary.LittleEndian.AppendUint64(out, total)
	return &pal.Failure{Status: statusRateLimited, Output: out}
}

// counterID names a user's failure counter. Two users may share one (2^-32 per pair): they
// then share only the reported total, not the lockout.
func counterID(user string) uint32 {
	h := sha256.Sum256([]byte("sshpass failures\x00" + user))
	return binary.LittleEndian.Uint32(h[:])
}

func hash(password []byte, salt [saltLen]byte) [verifierLen]byte {
	return verifier.Hash(password, salt)
}

func load(blob []byte) (map[string]entry, error) {
	if len(blob) == 0 {
		return map[string]entry{}, nil
	}
	if sha256.Sum256(blob) == dbHash && db != nil {
		return clone(db), nil
	}
	data, _, err := pal.Unseal(blob)
	if err != nil {
		return nil, fmt.Errorf("checker: unseal db: %w", err)
	}
	m, err := decode(data)
	if err != nil {
		return nil, err
	}
	dbHash, db = sha256.Sum256(blob), m
	return clone(m), nil
}

func clone(m map[string]entry) map[string]entry {
	c := make(map[string]entry, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// encode: repeated u8 user_len ‖ user ‖ salt ‖ verifier.
func encode(m map[string]entry) []byte {
	var b bytes.Buffer
	for u, e := range m {
		b.WriteByte(byte(len(u)))
		b.WriteString(u)
		b.Write(e.salt[:])
		b.Write(e.verifier[:])
	}
	return b.Bytes()
}

func decode(b []byte) (map[string]entry, error) {
	m := map[string]entry{}
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+saltLen+verifierLen {
			return nil, errors.New("checker: db does not decode")
		}
		var e entry
		copy(e.salt[:], b[1+n:])
		copy(e.verifier[:], b[1+n+saltLen:])
		m[string(b[1:1+n])] = e
		b = b[1+n+saltLen+verifierLen:]
	}
	return m, nil
}

func main() {}
