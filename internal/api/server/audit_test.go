package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/proctest"

	"github.com/palisade-project/palisade/internal/tmpfstest"
	"github.com/palisade-project/palisade/internal/visor"
)

// countIn counts s in what l holds.
func countIn(l *proctest.SyncBuffer, s string) int { return strings.Count(l.String(), s) }

// newLogBuffer gives a logger whose text output the tests read while it runs.
func newLogBuffer() (*proctest.SyncBuffer, *slog.Logger) {
	l := &proctest.SyncBuffer{}
	return l, slog.New(slog.NewTextHandler(l, nil))
}

// nearPageEnd logs ev until the log at path ends near the end of a page, so that the next
// record needs a page a full tmpfs cannot give (a record that fits the last page is written
// even on a full file system).
func nearPageEnd(t *testing.T, a *Audit, path string, ev Event) {
	t.Helper()
	for {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size()%4096 > 4096-100 {
			return
		}
		if err := a.Log(ev); err != nil {
			t.Fatal(err)
		}
	}
}

// readEvents parses every line of the audit log at path.
func readEvents(t *testing.T, path string) []Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d does not parse: %q: %v", i+1, l, err)
		}
		out = append(out, e)
	}
	return out
}

// TestAuditFailureEpisode fills the audit log's file system: each record then fails with an
// error that names the file and classifies as UNAVAILABLE (its operation is refused), the
// failure is logged once for the whole episode and shows in the metrics, and once space
// returns the next record is taken, preceded by an audit_failed record that counts the refused
// ones.
func TestAuditFailureEpisode(t *testing.T) {
	dir := tmpfstest.Mount(t, 64<<10)
	path := filepath.Join(dir, "audit.log")
	logs, logger := newLogBuffer()
	a, err := OpenAudit(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	info := visor.Info{Handle: 0x1234, Name: "signer"}
	nearPageEnd(t, a, path, KeyUseEvent(info, "key-sign", nil))
	free := tmpfstest.Fill(t, dir)
	const refused = 3
	for i := range refused {
		err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil))
		if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, errAuditLog) || !strings.Contains(err.Error(), path) {
			t.Fatalf("record %d on a full disk: %v, want ENOSPC naming %s", i, err, path)
		}
		if r := classify(fmt.Errorf("key sign: %w", err)); r != reasonUnavailable {
			t.Errorf("classified %s, want UNAVAILABLE", r)
		}
	}
	if m := a.metrics(); m != (auditMetrics{writeFails: refused, failing: true}) {
		t.Errorf("metrics on a full disk: %+v", m)
	}
	if n := countIn(logs, "audit log cannot take records"); n != 1 {
		t.Errorf("failure logged %d times, want once:\n%s", n, logs.String())
	}
	before := len(readEvents(t, path))

	free()
	if err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil)); err != nil {
		t.Fatalf("after space returned: %v", err)
	}
	if m := a.metrics(); m != (auditMetrics{writeFails: refused}) {
		t.Errorf("metrics after space returned: %+v", m)
	}
	if n := countIn(logs, "audit log takes records again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
	evs := readEvents(t, path)
	if len(evs) != before+2 {
		t.Fatalf("%d records after recovery, want %d (the note and the record)", len(evs), before+2)
	}
	note := evs[before]
	if note.Event != "audit_failed" || note.Op != "write" || note.Refused == nil || *note.Refused != refused ||
		note.Since == nil || !strings.Contains(note.Error, "no space left") || evs[before+1].Event != "key_use" {
		t.Errorf("after recovery: %+v then %+v", note, evs[before+1])
	}
	// The episode is over: the next record has no note.
	if err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil)); err != nil {
		t.Fatal(err)
	}
	if evs := readEvents(t, path); len(evs) != before+3 || evs[before+2].Event != "key_use" {
		t.Errorf("after the episode: %d records, last %+v", len(evs), evs[len(evs)-1])
	}
}

// failingSync makes a's fsyncs fail while *fail is set, and counts them. A test double: no
// file system a test can mount fails fsync on demand.
func failingSync(a *Audit) (fail *atomic.Bool, calls func() int) {
	var n atomic.Int64
	fail = new(atomic.Bool)
	a.mu.Lock()
	a.sync = func(file *os.File) error {
		n.Add(1)
		if fail.Load() {
			return syscall.EIO
		}
		return file.Sync()
	}
	a.mu.Unlock()
	return fail, func() int { return int(n.Load()) }
}

// TestAuditFlusherFsyncFailure makes the flusher's fsync of buffered key uses fail: the failure
// is logged once with the file and counted, and the next record is fsync'd itself before its
// operation may go on — refused (and cut off) while fsync fails, taken with an audit_failed
// record once it succeeds, after which records are buffered again.
func TestAuditFlusherFsyncFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	logs, logger := newLogBuffer()
	a, err := OpenAudit(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fail, calls := failingSync(a)
	fail.Store(true)
	info := visor.Info{Handle: 0x1234, Name: "signer"}
	if err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.metrics().syncFails == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the flusher did not fsync within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !a.metrics().failing || countIn(logs, "fsync failed") != 1 || countIn(logs, "file="+path) != 1 {
		t.Fatalf("after the flusher's failed fsync: %+v, log:\n%s", a.metrics(), logs.String())
	}

	// fsync still fails: the next key use is refused, and its record cut off again.
	n := calls()
	err = a.LogBuffered(KeyUseEvent(info, "key-sign", nil))
	if !errors.Is(err, syscall.EIO) || !errors.Is(err, errAuditLog) || calls() != n+1 {
		t.Fatalf("key use while fsync fails: %v (%d fsyncs), want EIO after one fsync", err, calls()-n)
	}
	if evs := readEvents(t, path); len(evs) != 1 {
		t.Fatalf("%d records, want the first one only", len(evs))
	}

	// fsync works again: the next key use is fsync'd with its note, and the episode ends.
	fail.Store(false)
	n = calls()
	if err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil)); err != nil {
		t.Fatal(err)
	}
	if calls() < n+1 {
		t.Error("the first record after a failed fsync was not fsync'd")
	}
	evs := readEvents(t, path)
	if len(evs) != 3 || evs[1].Event != "audit_failed" || evs[1].Op != "fsync" || evs[1].Since == nil ||
		!strings.Contains(evs[1].Error, "input/output error") || evs[2].Event != "key_use" {
		t.Fatalf("after recovery: %+v", evs)
	}
	m := a.metrics()
	if m.failing || m.syncFails < 2 || m.writeFails != 0 || countIn(logs, "fsync failed") != 1 {
		t.Errorf("after recovery: %+v, log:\n%s", m, logs.String())
	}
	a.mu.Lock()
	unsynced := a.unsynced
	a.mu.Unlock()
	if unsynced {
		t.Error("records are still fsync'd one by one after recovery")
	}
}
