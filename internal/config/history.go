package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Entry is one transition in the history: configuration Version, whose canonical payload
// hashes to Config, became active at Time. Prev is the hash of the previous entry (zero for
// the first), so the history is a hash chain whose head the active pointer records.
type Entry struct {
	Seq     uint64      `cbor:"1,keyasint"`
	Version uint64      `cbor:"2,keyasint"`
	Config  Measurement `cbor:"3,keyasint"`
	Prev    Measurement `cbor:"4,keyasint"`
	Time    int64       `cbor:"5,keyasint"` // Unix seconds, UTC
	Changes []string    `cbor:"6,keyasint,omitempty"`
}

// ErrHistory is wrapped by every error about a malformed or broken history.
var ErrHistory = errors.New("configuration history is corrupt")

// MaxEntrySize bounds one encoded history record.
const MaxEntrySize = 1 << 20

const tagHistory = "palisade.history.v1\x00"

// Hash is SHA-256 over the domain tag and the entry's canonical CBOR.
func (e Entry) Hash() Measurement {
	b, err := encMode.Marshal(e)
	if err != nil {
		panic(err) // cannot happen: fixed types
	}
	return sha256.Sum256(append([]byte(tagHistory), b...))
}

// When returns Time as a time.Time.
func (e Entry) When() time.Time { return time.Unix(e.Time, 0).UTC() }

// encodeRecord frames an entry as u32 length ‖ canonical CBOR.
func encodeRecord(e Entry) ([]byte, error) {
	b, err := encMode.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("history entry of %d bytes exceeds %d", len(b), MaxEntrySize)
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(b)))
	return append(out, b...), nil
}

// decodeRecord decodes the first record of b and returns it with its framed length.
func decodeRecord(b []byte) (Entry, int, error) {
	var e Entry
	if len(b) < 4 {
		return e, 0, fmt.Errorf("%w: truncated record header (%d of 4 bytes)", ErrHistory, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if n > MaxEntrySize {
		return e, 0, fmt.Errorf("%w: record of %d bytes exceeds the limit of %d bytes", ErrHistory, n, MaxEntrySize)
	}
	if uint64(n) > uint64(len(b)-4) {
		return e, 0, fmt.Errorf("%w: record of %d bytes runs past the end (%d bytes left)", ErrHistory, n, len(b)-4)
	}
	body := b[4 : 4+n]
	if err := decMode.Unmarshal(body, &e); err != nil {
		return e, 0, fmt.Errorf("%w: record: %v", ErrHistory, err)
	}
	if again, _ := encMode.Marshal(e); !bytes.Equal(again, body) {
		return e, 0, fmt.Errorf("%w: record is not in canonical form", ErrHistory)
	}
	return e, 4 + int(n), nil
}

// DecodeHistory decodes a whole history and verifies its chain: sequence numbers count from 1,
// versions increase, each entry's Prev is the hash of the one before. The error names the
// first entry that breaks the chain, and the entries returned with it are those the chain
// still vouches for: a broken link at entry k means entry k-1 or entry k was modified, so
// entry k-1 is not returned either.
func DecodeHistory(b []byte) ([]Entry, error) {
	var out []Entry
	var prev Measurement
	for off := 0; off < len(b); {
		e, n, err := decodeRecord(b[off:])
		if err != nil {
			return out, fmt.Errorf("at byte %d: %w", off, err)
		}
		if err := checkLink(out, prev, e); err != nil {
			if e.Seq == uint64(len(out))+1 && e.Prev != prev && len(out) > 0 {
				return out[:len(out)-1], err
			}
			return out, err
		}
		out = append(out, e)
		prev = e.Hash()
		off += n
	}
	return out, nil
}

func checkLink(before []Entry, prev Measurement, e Entry) error {
	want := uint64(len(before)) + 1
	if e.Seq != want {
		return fmt.Errorf("%w: entry %d has sequence number %d", ErrHistory, want, e.Seq)
	}
	if e.Prev != prev {
		return fmt.Errorf("%w: entry %d: broken link: previous hash %s, expected %s (entry %d or entry %d was modified)",
			ErrHistory, e.Seq, e.Prev.Short(), prev.Short(), e.Seq-1, e.Seq)
	}
	if len(before) > 0 && e.Version <= before[len(before)-1].Version {
		return fmt.Errorf("%w: entry %d: version %d does not increase", ErrHistory, e.Seq, e.Version)
	}
	return nil
}
