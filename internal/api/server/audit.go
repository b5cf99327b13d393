package server

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Audit is an append-only log of security-relevant events, one JSON object per line.
//
// Log writes and fsyncs a record before the operation it records is acknowledged
// (registrations, denials). LogBuffered, for key uses, which come at the rate of TLS handshakes,
// writes the record at once but leaves the fsync to a flusher that runs every flushInterval: an
// fsync costs 0.3–1.5 ms on these machines, more than the signature it would record. A crash of
// the machine (not of the daemon: the data is in the kernel already) loses at most the key uses
// of the last flushInterval.
type Audit struct {
	mu    sync.Mutex
	f     *os.File
	dirty bool // written since the last fsync

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

const flushInterval = 100 * time.Millisecond

// OpenAudit opens (creating) the audit log at path for appending. A last line without its
// newline (torn by a crash of the machine mid-write) is ended, so that the next record starts
// on a line of its own; the torn one stays, as found.
func OpenAudit(path string) (*Audit, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if err := endLastLine(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	a := &Audit{f: f, stop: make(chan struct{}), done: make(chan struct{})}
	go a.flusher()
	return a, nil
}

// endLastLine appends a newline to f if its last byte is not one.
func endLastLine(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return err
	}
	return f.Sync()
}

func (a *Audit) flusher() {
	defer close(a.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.mu.Lock()
			f, dirty := a.f, a.dirty
			a.dirty = false
			a.mu.Unlock()
			// Sync outside the lock: writers go on while the disk works. Close waits for this
			// goroutine before closing f.
			if dirty && f != nil {
				_ = f.Sync()
			}
		}
	}
}

// Event is one audit record. Fields that do not apply are omitted.
type Event struct {
	Time        time.Time `json:"time"`
	Event       string    `json:"event"` // register, unregister, restore, restore_failed, attest, denied, key_use, key_* (KeyAudit)
	UID         *uint32   `json:"uid,omitempty"`
	PID         int32     `json:"pid,omitempty"`
	PAL         string    `json:"pal,omitempty"`
	Name        string    `json:"name,omitempty"`
	Key         string    `json:"key,omitempty"` // key_*: the named key
	Owner       *uint32   `json:"owner,omitempty"`
	Engine      string    `json:"engine,omitempty"`
	Measurement string    `json:"measurement,omitempty"`
	Replicas    int       `json:"replicas,omitempty"`
	Op          string    `json:"op,omitempty"`
	OK          *bool     `json:"ok,omitempty"` // key_use: whether the operation succeeded
	Error       string    `json:"error,omitempty"`
}

// Log appends e and fsyncs it. A nil Audit logs nothing.
func (a *Audit) Log(e Event) error { return a.log(e, true) }

// LogBuffered appends e; the flusher fsyncs it within flushInterval.
func (a *Audit) LogBuffered(e Event) error { return a.log(e, false) }

func (a *Audit) log(e Event, sync bool) error {
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
	// The end of the log, where this record starts (with O_APPEND, the offset a write leaves;
	// asked, not remembered, so that a log truncated behind the daemon's back is still cut at
	// the right place below).
	end, err := a.f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if _, err := a.f.Write(b); err != nil {
		// A short write (disk full) left part of the record: cut it off, or the next record
		// would continue its line and neither would parse. If even that fails the log stays
		// torn, and says so.
		if terr := a.f.Truncate(end); terr != nil {
			return fmt.Errorf("audit log: %w (and a partial record is left: %v)", err, terr)
		}
		return fmt.Errorf("audit log: %w", err)
	}
	if !sync {
		a.dirty = true
		return nil
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	a.dirty = false
	return nil
}

// Close closes the log.
func (a *Audit) Close() error {
	if a == nil {
		return nil
	}
	a.stopOnce.Do(func() { close(a.stop) })
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	a.f = nil
	return err
}

func u32p(v uint32) *uint32 { return &v }
