package none

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"sync"

	"github.com/palisade-project/palisade/internal/atomicfile"

	"github.com/palisade-project/palisade/internal/utpm"
)

// FileCounters is a utpm.CounterStore in one file, rewritten crash-safely (temporary file,
// fsync, rename, fsync of the directory) on every increment before the new value is returned.
// A crash leaves the old or the new file, never a mix; a damaged file is an error at open,
// never a silent reset to zero. It is safe for concurrent use within one process.
//
// Rollback is NOT detected: whoever can write the file can restore an older copy. The "tpm"
// root of trust anchors counters in TPM NV for that reason.
//
// File format (little-endian):
//
//	"PLCTR\x00\x00\x01" ‖ u32 n ‖ n × (pal[32] ‖ u32 id ‖ u64 value), sorted by (pal, id)
//	‖ SHA-256 of everything before it
type FileCounters struct {
	path string
	mu   sync.Mutex
	m    map[counterKey]uint64
}

type counterKey struct {
	pal utpm.Digest
	id  uint32
}

const (
	counterMagic   = "PLCTR\x00\x00\x01"
	counterRecord  = 32 + 4 + 8
	maxCounterFile = 64 << 20
)

var _ utpm.CounterStore = (*FileCounters)(nil)

// ErrCorrupt is wrapped by OpenFileCounters when the file does not parse or its checksum fails.
var ErrCorrupt = errors.New("counter file is corrupt")

// OpenFileCounters loads the counters in path; a missing file means all counters are zero.
func OpenFileCounters(path string) (*FileCounters, error) {
	c := &FileCounters{path: path, m: make(map[counterKey]uint64)}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rot/none: read counters: %w", err)
	}
	if err := c.decode(b); err != nil {
		return nil, fmt.Errorf("rot/none: %s: %w", path, err)
	}
	return c, nil
}

func (c *FileCounters) decode(b []byte) error {
	if len(b) > maxCounterFile || len(b) < len(counterMagic)+4+sha256.Size {
		return fmt.Errorf("%d bytes: %w", len(b), ErrCorrupt)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(sum, want[:]) {
		return fmt.Errorf("checksum mismatch: %w", ErrCorrupt)
	}
	if string(body[:len(counterMagic)]) != counterMagic {
		return fmt.Errorf("bad magic: %w", ErrCorrupt)
	}
	body = body[len(counterMagic):]
	n := binary.LittleEndian.Uint32(body)
	body = body[4:]
	if uint64(len(body)) != uint64(n)*counterRecord {
		return fmt.Errorf("%d records in %d bytes: %w", n, len(body), ErrCorrupt)
	}
	for ; len(body) > 0; body = body[counterRecord:] {
		var k counterKey
		copy(k.pal[:], body)
		k.id = binary.LittleEndian.Uint32(body[32:])
		if _, dup := c.m[k]; dup {
			return fmt.Errorf("duplicate counter: %w", ErrCorrupt)
		}
		c.m[k] = binary.LittleEndian.Uint64(body[36:])
	}
	return nil
}

func (c *FileCounters) encode() []byte {
	keys := make([]counterKey, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b counterKey) int {
		if r := bytes.Compare(a.pal[:], b.pal[:]); r != 0 {
			return r
		}
		return cmp.Compare(a.id, b.id)
	})
	b := make([]byte, 0, len(counterMagic)+4+len(keys)*counterRecord+sha256.Size)
	b = append(b, counterMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = append(b, k.pal[:]...)
		b = binary.LittleEndian.AppendUint32(b, k.id)
		b = binary.LittleEndian.AppendUint64(b, c.m[k])
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// Read returns the counter's value (0 if never incremented).
func (c *FileCounters) Read(pal utpm.Digest, id uint32) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[counterKey{pal, id}], nil
}

// Increment persists value+1 and returns it. On a write failure the counter keeps its old
// value in memory and on disk.
func (c *FileCounters) Increment(pal utpm.Digest, id uint32) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := counterKey{pal, id}
	old, had := c.m[k]
	if old == math.MaxUint64 {
		return 0, fmt.Errorf("rot/none: counter %d is at its maximum", id)
	}
	c.m[k] = old + 1
	if err := atomicfile.WriteFile(c.path, c.encode(), 0o600); err != nil {
		if had {
			c.m[k] = old
		} else {
			delete(c.m, k)
		}
		return 0, fmt.Errorf("rot/none: persist counters: %w", err)
	}
	return old + 1, nil
}
