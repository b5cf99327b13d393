package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
//
// Failures. A record the log cannot take (its disk is full) is an error of Log or LogBuffered,
// and the caller refuses the operation it records. The first failure of an episode is logged
// once, with the file's name; the episode ends at the next record the log takes, which is
// preceded by an "audit_failed" record saying what failed, since when, and how many records
// were refused. When the flusher's fsync fails, the key uses written since the last good fsync
// may not be on disk (and Linux reports such a write-back error once: a later fsync succeeds
// without having written them), so the next record of any kind is fsync'd itself, with its
// audit_failed record, before its operation may go on: it fails, and the operation is refused,
// as long as the disk does; the buffered contract resumes once it succeeded.
type Audit struct {
	path   string
	logger *slog.Logger
	// sync is (*os.File).Sync. Tests replace it: no file system a test can mount makes fsync
	// fail on demand (tmpfs never fails one).
	sync func(*os.File) error

	mu       sync.Mutex
	f        *os.File
	dirty    bool      // written since the last fsync
	lastSync time.Time // of the last fsync that succeeded
	// The failure episode under way (failOp ""; none): what failed first, when, how many
	// records were refused since, and whether buffered records may be lost (fsync failed).
	failOp    string
	failErr   error
	failSince time.Time
	refused   uint64
	unsynced  bool

	writeFails uint64 // records the log could not take
	syncFails  uint64 // fsyncs that failed

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

const flushInterval = 100 * time.Millisecond

// errAuditLog begins every error of a record the log could not take: the operation it records
// is refused, and clients are told so (UNAVAILABLE: it works again once the log takes records).
var errAuditLog = errors.New("audit log")

// OpenAudit opens (creating) the audit log at path for appending; log (nil: slog.Default())
// gets its failures. A last line without its newline (torn by a crash of the machine
// mid-write) is ended, so that the next record starts on a line of its own; the torn one
// stays, as found.
func OpenAudit(path string, log *slog.Logger) (*Audit, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if err := endLastLine(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Audit{
		path: path, logger: log, sync: (*os.File).Sync, f: f, lastSync: time.Now().UTC(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
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
			f, dirty, sync := a.f, a.dirty, a.sync
			a.dirty = false
			a.mu.Unlock()
			if !dirty || f == nil {
				continue
			}
			// Sync outside the lock: writers go on while the disk works. Close waits for this
			// goroutine before closing f.
			start := time.Now().UTC()
			err := sync(f)
			a.mu.Lock()
			if err != nil {
				a.unsynced = true
				a.failed("fsync", fmt.Errorf("%w %s: fsync: %w", errAuditLog, a.path, err))
			} else if start.After(a.lastSync) {
				a.lastSync = start
			}
			a.mu.Unlock()
		}
	}
}

// failed counts a failure of op ("write", "fsync") and starts a failure episode, logged once,
// if none is under way. a.mu is held.
func (a *Audit) failed(op string, err error) {
	if op == "fsync" {
		a.syncFails++
	} else {
		a.writeFails++
		a.refused++
	}
	if a.failOp != "" {
		if op == "fsync" && a.failOp != "fsync" {
			// A write episode whose fsync failed too: what may be missing now starts at the
			// last good fsync, which the episode's record must say.
			a.failOp, a.failErr = op, err
			if a.lastSync.Before(a.failSince) {
				a.failSince = a.lastSync
			}
			a.logger.Error("audit log: fsync failed too; records written since the last fsync may not be on disk",
				"file", a.path, "since", a.failSince, "err", err)
		}
		return
	}
	a.failOp, a.failErr, a.failSince = op, err, time.Now().UTC()
	if op == "fsync" {
		// What may be lost is what was written since the last good fsync.
		a.failSince = a.lastSync
		a.logger.Error("audit log: fsync failed; key uses written since the last fsync may not be on disk; the next record is fsync'd before its operation may go on",
			"file", a.path, "since", a.failSince, "err", err)
		return
	}
	a.logger.Error("audit log cannot take records; the operations they record are refused until it can",
		"file", a.path, "err", err)
}

// recovered ends the failure episode under way: the log took a record again. a.mu is held.
func (a *Audit) recovered() {
	a.logger.Warn("audit log takes records again", "file", a.path, "failed", a.failOp,
		"since", a.failSince, "refused", a.refused)
	a.failOp, a.failErr, a.refused, a.unsynced = "", nil, 0, false
}

// metrics reads the failure counters; a nil Audit has none.
func (a *Audit) metrics() auditMetrics {
	if a == nil {
		return auditMetrics{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return auditMetrics{writeFails: a.writeFails, syncFails: a.syncFails, failing: a.failOp != ""}
}

// Event is one audit record. Fields that do not apply are omitted.
type Event struct {
	Time        time.Time `json:"time"`
	Event       string    `json:"event"` // register, unregister, restore, restore_failed, attest, denied, key_use, key_* (KeyAudit), audit_failed
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
	// audit_failed: the records the log missed, from Since on; Op says what failed ("write":
	// those records were refused, and their operations with them; "fsync": records written
	// from Since on may not be on disk).
	Since   *time.Time `json:"since,omitempty"`
	Refused *uint64    `json:"refused,omitempty"`
}

// Log appends e and fsyncs it. A nil Audit logs nothing.
func (a *Audit) Log(e Event) error { return a.log(e, true) }

// LogBuffered appends e; the flusher fsyncs it within flushInterval.
func (a *Audit) LogBuffered(e Event) error { return a.log(e, false) }

func (a *Audit) log(e Event, durable bool) error {
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
		return fmt.Errorf("%w %s is closed", errAuditLog, a.path)
	}
	if a.failOp != "" {
		// The first record after a failure says what the log missed, in the same write.
		refused := a.refused
		note, err := json.Marshal(Event{
			Time: e.Time, Event: "audit_failed", Op: a.failOp, Error: a.failErr.Error(),
			Since: &a.failSince, Refused: &refused,
		})
		if err != nil {
			return err
		}
		b = append(append(note, '\n'), b...)
		// After a failed fsync, this record must show that the disk takes records again.
		durable = durable || a.unsynced
	}
	// The end of the log, where this record starts (with O_APPEND, the offset a write leaves;
	// asked, not remembered, so that a log truncated behind the daemon's back is still cut at
	// the right place below).
	end, err := a.f.Seek(0, io.SeekEnd)
	if err != nil {
		err = fmt.Errorf("%w %s: %w", errAuditLog, a.path, err)
		a.failed("write", err)
		return err
	}
	if _, err := a.f.Write(b); err != nil {
		// A short write (disk full) left part of the record: cut it off, or the next record
		// would continue its line and neither would parse. If even that fails the log stays
		// torn, and says so.
		err = fmt.Errorf("%w %s: %w", errAuditLog, a.path, err)
		if terr := a.f.Truncate(end); terr != nil {
			err = fmt.Errorf("%w (and a partial record is left: %v)", err, terr)
		}
		a.failed("write", err)
		return err
	}
	if !durable {
		a.dirty = true
		if a.failOp != "" {
			a.recovered()
		}
		return nil
	}
	start := time.Now().UTC()
	if err := a.sync(a.f); err != nil {
		// The operation is refused: its record goes too (it may be on disk or not).
		err = fmt.Errorf("%w %s: fsync: %w", errAuditLog, a.path, err)
		if terr := a.f.Truncate(end); terr != nil {
			err = fmt.Errorf("%w (and the record is left: %v)", err, terr)
		}
		a.unsynced = true
		a.failed("fsync", err)
		a.refused++
		return err
	}
	a.dirty, a.lastSync = false, start
	if a.failOp != "" {
		a.recovered()
	}
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
	err := a.sync(a.f)
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	a.f = nil
	return err
}

func u32p(v uint32) *uint32 { return &v }
