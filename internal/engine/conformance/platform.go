package conformance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

// NewPlatform creates a µTPM platform for tests: a fresh random master secret, a fresh P-256
// identity key and counters kept in memory.
func NewPlatform(t testing.TB) *utpm.Platform {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var visor utpm.Digest
	copy(visor[:], "conformance visor measurement...")
	p, err := utpm.NewPlatform(utpm.PlatformConfig{
		MasterSecret: secret,
		Identity:     id,
		Visor:        visor,
		Counters:     &MemCounters{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// MemCounters is a utpm.CounterStore that lives in memory: monotonic for the life of the
// process, which is all a test needs.
type MemCounters struct {
	mu sync.Mutex
	m  map[utpm.Digest]map[uint32]uint64
}

func (c *MemCounters) Read(pal utpm.Digest, id uint32) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[pal][id], nil
}

func (c *MemCounters) Increment(pal utpm.Digest, id uint32) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[utpm.Digest]map[uint32]uint64{}
	}
	if c.m[pal] == nil {
		c.m[pal] = map[uint32]uint64{}
	}
	c.m[pal][id]++
	return c.m[pal][id], nil
}

// Host is the engine.Host of a test instance: its µTPM and the PAL's log.
type Host struct {
	T *utpm.TPM

	mu   sync.Mutex
	logs []string
}

func (h *Host) TPM() *utpm.TPM { return h.T }

func (h *Host) Log(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, string(msg))
}

// Logs returns what the PAL logged so far.
func (h *Host) Logs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.logs...)
}
