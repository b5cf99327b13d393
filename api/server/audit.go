package server

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Audit is an append-only log of security-relevant events, one JSON object per line, each
// written and fsync'd before the operation it records is acknowledged.
type Audit struct {
	mu sync.Mutex
	f  *os.File
}

// OpenAudit opens (creating) the audit log at path for appending.
func OpenAudit(path string) (*Audit, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &Audit{f: f}, nil
}

// Event is one audit record. Fields that do not apply are omitted.
type Event struct {
	Time        time.Time `json:"time"`
	Event       string    `json:"event"` // register, unregister, restore, restore_failed, attest, denied
	UID         *uint32   `json:"uid,omitempty"`
	PID         int32     `json:"pid,omitempty"`
	PAL         string    `json:"pal,omitempty"`
	Name        string    `json:"name,omitempty"`
	Owner       *uint32   `json:"owner,omitempty"`
	Engine      string    `json:"engine,omitempty"`
	Measurement string    `json:"measurement,omitempty"`
	Replicas    int       `json:"replicas,omitempty"`
	Op          string    `json:"op,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// Log appends e. A nil Audit logs nothing.
func (a *Audit) Log(e Event) error {
	if a == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return fmt.Errorf("audit log is closed")
	}
	if _, err := a.f.Write(b); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Close closes the log.
func (a *Audit) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

func u32p(v uint32) *uint32 { return &v }
