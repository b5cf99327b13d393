package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/palisade-project/palisade/internal/api"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/tmpfstest"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
	"github.com/palisade-project/palisade/pal"
)

func TestPolicy(t *testing.T) {
	p := Policy{
		Admins: []uint32{7},
		Shares: []Share{
			{Owner: 1000, Name: "tlskey", UIDs: []uint32{33}},
			{Owner: 1000, Name: "*", UIDs: []uint32{44}, Ops: []Op{OpList}},
			{Owner: 2000, Name: "x", UIDs: []uint32{33}, Ops: []Op{OpUnregister}},
		},
	}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uid, owner uint32
		name       string
		op         Op
		want       bool
	}{
		{1000, 1000, "any", OpUnregister, true},   // owner
		{0, 1000, "any", OpCall, false},           // root is not implicitly allowed
		{7, 1000, "any", OpUnregister, true},      // admin
		{33, 1000, "tlskey", OpCall, true},        // share, default ops
		{33, 1000, "tlskey", OpAttest, true},      //
		{33, 1000, "tlskey", OpUnregister, false}, // not in default ops
		{33, 1000, "other", OpCall, false},        // other name
		{44, 1000, "other", OpList, true},         // wildcard name
		{44, 1000, "other", OpCall, false},        // op not shared
		{33, 2000, "x", OpUnregister, true},       //
		{33, 2000, "x", OpCall, false},            //
		{33, 3000, "tlskey", OpCall, false},       // other owner
	} {
		if got := p.Allowed(tc.uid, tc.owner, tc.name, tc.op); got != tc.want {
			t.Errorf("Allowed(uid %d, owner %d, %q, %s) = %v, want %v", tc.uid, tc.owner, tc.name, tc.op, got, tc.want)
		}
	}
	if !(&Policy{}).MayRegister(5) || (&Policy{Registrants: []uint32{1}}).MayRegister(5) {
		t.Error("MayRegister")
	}
	for _, bad := range []Policy{
		{Shares: []Share{{Owner: 1, UIDs: []uint32{2}}}},
		{Shares: []Share{{Owner: 1, Name: "x"}}},
		{Shares: []Share{{Owner: 1, Name: "x", UIDs: []uint32{2}, Ops: []Op{"delete"}}}},
	} {
		if bad.Check() == nil {
			t.Errorf("Check accepted %+v", bad)
		}
	}
}

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	img1, img2 := []byte("image one"), []byte("image two")
	recs := []Record{
		{Handle: 1, Owner: 1000, Name: "a", Limits: engine.Limits{Timeout: time.Second}, Replicas: 2},
		{Handle: 2, Owner: 1000, Name: "b"},
		{Handle: 3, Owner: 0, Name: "c"},
	}
	for i, r := range recs {
		img := img1
		if i == 2 {
			img = img2
		}
		if err := s.Put(r, img); err != nil {
			t.Fatal(err)
		}
	}
	// A second opener is refused while the first holds the database.
	if _, err := OpenStore(path); err == nil {
		t.Fatal("second OpenStore succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Records()
	if err != nil || len(got) != 3 {
		t.Fatalf("Records after reopen: %v %v", got, err)
	}
	if got[0].Limits.Timeout != time.Second || got[0].Replicas != 2 || got[0].Owner != 1000 {
		t.Errorf("record 1 = %+v", got[0])
	}
	if img, err := s.Image(got[0].Image); err != nil || !bytes.Equal(img, img1) {
		t.Fatalf("Image: %q %v", img, err)
	}
	// Deleting one user of an image keeps the image for the other.
	if err := s.Delete(1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Image(got[1].Image); err != nil {
		t.Fatalf("shared image deleted: %v", err)
	}
	if err := s.Delete(2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Image(got[1].Image); !errors.Is(err, errNoImage) {
		t.Fatalf("unused image kept: %v", err)
	}
	if _, ok, _ := s.Get(2); ok {
		t.Fatal("record 2 still there")
	}
	if r, ok, err := s.Get(3); !ok || err != nil || r.Name != "c" {
		t.Fatalf("Get(3) = %+v %v %v", r, ok, err)
	}
	if err := s.Delete(99); err != nil {
		t.Fatalf("Delete of an unknown handle: %v", err)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "p.sock")
	l, err := Listen(sock, SocketOptions{Mode: 0o600, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	go func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(l)
	if _, err := Listen(sock, SocketOptions{GID: -1}); !errors.Is(err, errDaemonRunning) {
		t.Fatalf("Listen over a live socket: %v", err)
	}
	l.Close()
	// Now stale: replaced.
	l, err = Listen(sock, SocketOptions{GID: -1})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()
	if fi, _ := os.Lstat(sock); fi.Mode().Perm() != 0o660 {
		t.Fatalf("default mode %v", fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(sock))
	if len(entries) != 1 {
		t.Fatalf("leftovers in the socket directory: %v", entries)
	}

	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, err := Listen(filepath.Join(open, "p.sock"), SocketOptions{GID: -1}); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("Listen in a world-writable directory: %v", err)
	}
	// A safe directory under an unsafe one: whoever may write the one above can rename the
	// socket's directory away and put their own in its place. Sticky (as /tmp) is safe.
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o777, false}, {0o775, false}, {0o757, false}, {0o777 | os.ModeSticky, true}, {0o755, true}} {
		above := filepath.Join(dir, fmt.Sprintf("above-%o", uint32(tt.mode)))
		os.Mkdir(above, 0o700)
		if err := os.Chmod(above, tt.mode); err != nil {
			t.Fatal(err)
		}
		l, err := Listen(filepath.Join(above, "run", "p.sock"), SocketOptions{GID: -1})
		if tt.ok {
			if err != nil {
				t.Errorf("Listen under a directory of mode %v: %v", tt.mode, err)
				continue
			}
			l.Close()
		} else if err == nil || !strings.Contains(err.Error(), "above it is writable by group or others") {
			t.Errorf("Listen under a directory of mode %v: %v, want a refusal naming the directory above", tt.mode, err)
			if l != nil {
				l.Close()
			}
		}
	}
	// The same through a symbolic link: the path it resolves to is checked too.
	link := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, fmt.Sprintf("above-%o", uint32(0o777))), link)
	if _, err := Listen(filepath.Join(link, "run", "p.sock"), SocketOptions{GID: -1}); err == nil {
		t.Error("Listen through a symbolic link to an unsafe directory succeeded")
	}

	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(file, SocketOptions{GID: -1}); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

func TestMetricsFormat(t *testing.T) {
	m := newPALMetrics("pal-0000000000000001", `we"ird\name`)
	m.observe(30*time.Microsecond, reasonNone)
	m.observe(3*time.Millisecond, reasonTimeout)
	m.observe(time.Minute, reasonTrap)
	var b bytes.Buffer
	writeMetrics(&b, []*palMetrics{m}, 4, auditMetrics{writeFails: 2, syncFails: 1, failing: true})
	out := b.String()
	lbl := `pal="pal-0000000000000001",name="we\"ird\\name"`
	for _, want := range []string{
		"palisade_pals 1\n",
		"palisade_denied_total 4\n",
		`palisade_audit_failures_total{op="write"} 2` + "\n",
		`palisade_audit_failures_total{op="fsync"} 1` + "\n",
		"palisade_audit_failing 1\n",
		"palisade_calls_total{" + lbl + "} 3\n",
		"palisade_call_timeouts_total{" + lbl + "} 1\n",
		"palisade_call_errors_total{" + lbl + `,reason="TIMEOUT"} 1` + "\n",
		"palisade_call_errors_total{" + lbl + `,reason="TRAP"} 1` + "\n",
		"palisade_call_duration_seconds_bucket{" + lbl + `,le="5e-05"} 1` + "\n",
		"palisade_call_duration_seconds_bucket{" + lbl + `,le="0.0025"} 1` + "\n",
		"palisade_call_duration_seconds_bucket{" + lbl + `,le="0.005"} 2` + "\n",
		"palisade_call_duration_seconds_bucket{" + lbl + `,le="30"} 2` + "\n",
		"palisade_call_duration_seconds_bucket{" + lbl + `,le="+Inf"} 3` + "\n",
		"palisade_call_duration_seconds_count{" + lbl + "} 3\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q\n%s", want, out)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{fmt.Errorf("call: %w", engine.ErrTimeout), codes.DeadlineExceeded, api.ReasonTimeout},
		{fmt.Errorf("x: %w", visor.ErrNotFound), codes.NotFound, api.ReasonNotFound},
		{fmt.Errorf("x: %w", errPermission), codes.PermissionDenied, api.ReasonPermission},
		{fmt.Errorf("register: %w", pal.ErrInvalid), codes.InvalidArgument, api.ReasonBadImage},
		{fmt.Errorf("x: %w", engine.ErrTrap), codes.Aborted, api.ReasonTrap},
		{visor.ErrClosed, codes.Unavailable, api.ReasonUnavailable},
		{context.Canceled, codes.Canceled, api.ReasonCanceled},
		{fmt.Errorf("quote: %w", utpm.ErrInvalid), codes.InvalidArgument, api.ReasonInvalid},
		{errors.New("disk on fire"), codes.Internal, api.ReasonInternal},
	} {
		st := status.Convert(toStatus(tc.err))
		if st.Code() != tc.code || st.Message() != tc.err.Error() {
			t.Errorf("%v: status %v %q", tc.err, st.Code(), st.Message())
		}
		if r := classify(tc.err).String(); r != tc.reason {
			t.Errorf("%v: reason %s, want %s", tc.err, r, tc.reason)
		}
	}
}

func TestAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for i := 0; i < 2; i++ {
		a, err := OpenAudit(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Log(Event{Event: "register", UID: u32p(uint32(i)), PAL: "pal-1"}); err != nil {
			t.Fatal(err)
		}
		a.Close()
		if err := a.Log(Event{Event: "late"}); err == nil {
			t.Fatal("Log after Close succeeded")
		}
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit log: %q", b)
	}
	for i, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Event != "register" || *e.UID != uint32(i) || e.Time.IsZero() {
			t.Fatalf("line %d: %q %v", i, l, err)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit log mode %v", fi.Mode())
	}
}

// TestPeerCredentials serves a real visor over a socket in-process and checks that the
// server sees the caller's uid and pid from SO_PEERCRED.
func TestPeerCredentials(t *testing.T) {
	dir := t.TempDir()
	root, err := none.Open(filepath.Join(dir, "rot"), utpm.Digest{1})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	eng, err := wasm.New()
	if err != nil {
		t.Fatal(err)
	}
	v, err := visor.New(visor.Config{Root: root, Engines: []engine.Engine{eng}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(context.Background())
	s, err := New(Config{Visor: v, Logger: slog.New(slog.DiscardHandler), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "s.sock")
	l, err := Listen(sock, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	defer s.Shutdown(context.Background())

	conn, err := grpc.NewClient("passthrough:///x",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := api.NewPalisadeClient(conn).Health(context.Background(), &api.HealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if h.CallerUid != uint32(os.Getuid()) || h.RotMode != "none" || h.Status != "serving" || h.Version != "test" {
		t.Fatalf("Health = %+v", h)
	}
	vm := root.Platform().Visor
	if !bytes.Equal(h.VisorMeasurement, vm[:]) {
		t.Fatalf("visor measurement %x, want %x", h.VisorMeasurement, vm)
	}
	// Without a store, registration by path is refused, and calls to unknown handles are
	// NOT_FOUND with the palisade reason.
	_, err = api.NewPalisadeClient(conn).Call(context.Background(), &api.CallRequest{Handle: "pal-0000000000000005"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Call unknown: %v", err)
	}
}

// TestAuditDiskFull fills the audit log's file system while a record is being written: the
// failed record must leave no partial line behind, or the next record would be glued to it
// and the log would no longer parse (a disk full once corrupted the audit trail for good).
// A log whose last line was torn before (a machine crash) is repaired the same way at open.
func TestAuditDiskFull(t *testing.T) {
	dir := tmpfstest.Mount(t, 64<<10)
	path := filepath.Join(dir, "audit.log")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ev := Event{Event: "register", UID: u32p(7), PAL: "pal-1", Name: strings.Repeat("n", 100)}
	// Bring the log close to the end of a page, so that the next record needs a new page that
	// the full file system cannot give: the write is cut short, not refused whole.
	for {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size()%4096 > 4096-100 {
			break
		}
		if err := a.Log(ev); err != nil {
			t.Fatal(err)
		}
	}
	free := tmpfstest.Fill(t, dir)
	for _, sync := range []bool{true, false} {
		if err := a.log(ev, sync); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("log on a full disk (sync %v): %v, want ENOSPC", sync, err)
		}
	}
	free()
	if err := a.Log(ev); err != nil {
		t.Fatal(err)
	}
	checkAuditLines(t, path, -1)

	// A torn last line from before (a crash of the machine mid-write): the next record starts
	// on a line of its own.
	a.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"time":"2026-01-01T00:00:00Z","ev`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if a, err = OpenAudit(path, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Log(ev); err != nil {
		t.Fatal(err)
	}
	checkAuditLines(t, path, 1)
}

// checkAuditLines checks that every line of the audit log at path parses, except exactly
// torn lines (-1: any number) that are not JSON.
func checkAuditLines(t *testing.T, path string, torn int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Errorf("audit log does not end with a newline")
	}
	bad := 0
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			bad++
			if torn < 0 {
				t.Errorf("line %d does not parse: %q: %v", i+1, l, err)
			}
		}
	}
	if torn >= 0 && bad != torn {
		t.Errorf("%d lines do not parse, want %d", bad, torn)
	}
}

// TestStoreInUse: a second daemon on the same state directory is refused with a message that
// says why (bbolt's own error was the bare word "timeout").
func TestStoreInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s2, err := OpenStore(path)
	if err == nil {
		s2.Close()
		t.Fatal("a second OpenStore of the same database succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("error %q does not name the database and say it is in use", err)
	}
}

// TestStoreDamaged: a damaged state.db is refused at open with an error that names it. bbolt
// panics when it meets a bad page, so the daemon used to die with a stack trace, at start or
// at the first read of that page, again at every restart.
func TestStoreDamaged(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := OpenStore(good)
	if err != nil {
		t.Fatal(err)
	}
	// Enough records and image bytes for several pages of each kind.
	for i := 1; i <= 40; i++ {
		if err := s.Put(Record{Handle: visor.Handle(i), Name: strings.Repeat("x", 200)}, bytes.Repeat([]byte{byte(i)}, 3000)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		want   string // what the error says
	}{
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }, "truncated"}, // checkStateFile
		{"pages zeroed", func(b []byte) []byte {
			clear(b[5*page : 7*page])
			return b
		}, "damaged"},
		{"both meta pages garbage", func(b []byte) []byte {
			for i := 16; i < 80; i++ {
				b[i], b[page+i] = byte(i*7), byte(i*13)
			}
			return b
		}, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(p, tc.damage(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			var s *Store
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("OpenStore panicked: %v", r)
					}
				}()
				s, err = OpenStore(p)
			}()
			if err == nil {
				// Open may find nothing wrong only if every read works.
				defer s.Close()
				if _, err := s.Records(); err != nil {
					t.Fatalf("OpenStore accepted a database whose records do not read: %v", err)
				}
				t.Fatal("OpenStore accepted a damaged database")
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the database and say it is %s", err, tc.want)
			}
		})
	}
}
