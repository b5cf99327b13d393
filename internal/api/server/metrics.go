package server

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Metrics are written in the Prometheus text exposition format by hand: the daemon is part of
// the trusted core and does not take the client library's dependencies for a few counters.

// latencyBounds are the upper bounds (seconds) of the call latency histogram's buckets.
var latencyBounds = []float64{
	50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
	500e-3, 1, 2.5, 5, 10, 30,
}

// palMetrics are the counters of one PAL. Updated with atomics on the call path.
type palMetrics struct {
	handle, name string
	calls        atomic.Uint64
	timeouts     atomic.Uint64
	errors       [numReasons]atomic.Uint64
	buckets      []atomic.Uint64 // per bucket (not cumulative), +Inf last
	sumNanos     atomic.Uint64
}

func newPALMetrics(handle, name string) *palMetrics {
	return &palMetrics{handle: handle, name: name, buckets: make([]atomic.Uint64, len(latencyBounds)+1)}
}

func (m *palMetrics) observe(d time.Duration, r reason) {
	m.calls.Add(1)
	m.sumNanos.Add(uint64(d))
	s := d.Seconds()
	i := sort.SearchFloat64s(latencyBounds, s) // first bound >= s
	m.buckets[i].Add(1)
	if r != reasonNone {
		m.errors[r].Add(1)
		if r == reasonTimeout {
			m.timeouts.Add(1)
		}
	}
}

// labelValue escapes a label value (names are chosen by clients).
func labelValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// auditMetrics are the audit log's failure counters (Audit.metrics).
type auditMetrics struct {
	writeFails, syncFails uint64
	failing               bool
}

// writeMetrics writes the exposition of the daemon's counters and of pals.
func writeMetrics(w io.Writer, pals []*palMetrics, denied uint64, audit auditMetrics) {
	sort.Slice(pals, func(i, j int) bool { return pals[i].handle < pals[j].handle })
	fmt.Fprintf(w, "# HELP palisade_pals Registered PALs.\n# TYPE palisade_pals gauge\npalisade_pals %d\n", len(pals))
	fmt.Fprintf(w, "# HELP palisade_denied_total Requests refused by access control.\n# TYPE palisade_denied_total counter\npalisade_denied_total %d\n", denied)
	fmt.Fprintf(w, "# HELP palisade_audit_failures_total Audit log writes (records refused, and their operations with them) and fsyncs that failed.\n# TYPE palisade_audit_failures_total counter\n")
	fmt.Fprintf(w, "palisade_audit_failures_total{op=\"write\"} %d\npalisade_audit_failures_total{op=\"fsync\"} %d\n", audit.writeFails, audit.syncFails)
	failing := 0
	if audit.failing {
		failing = 1
	}
	fmt.Fprintf(w, "# HELP palisade_audit_failing 1 while the audit log takes no records (operations that need one are refused).\n# TYPE palisade_audit_failing gauge\npalisade_audit_failing %d\n", failing)

	lbl := func(m *palMetrics) string {
		return fmt.Sprintf(`pal="%s",name="%s"`, m.handle, labelValue(m.name))
	}
	fmt.Fprint(w, "# HELP palisade_calls_total Calls of a PAL, failed ones included.\n# TYPE palisade_calls_total counter\n")
	for _, m := range pals {
		fmt.Fprintf(w, "palisade_calls_total{%s} %d\n", lbl(m), m.calls.Load())
	}
	fmt.Fprint(w, "# HELP palisade_call_errors_total Calls of a PAL that failed, by reason.\n# TYPE palisade_call_errors_total counter\n")
	for _, m := range pals {
		for r := reason(1); r < numReasons; r++ {
			if n := m.errors[r].Load(); n > 0 {
				fmt.Fprintf(w, "palisade_call_errors_total{%s,reason=\"%s\"} %d\n", lbl(m), r, n)
			}
		}
	}
	fmt.Fprint(w, "# HELP palisade_call_timeouts_total Calls of a PAL that exceeded its timeout.\n# TYPE palisade_call_timeouts_total counter\n")
	for _, m := range pals {
		fmt.Fprintf(w, "palisade_call_timeouts_total{%s} %d\n", lbl(m), m.timeouts.Load())
	}
	fmt.Fprint(w, "# HELP palisade_call_duration_seconds Latency of PAL calls in the daemon.\n# TYPE palisade_call_duration_seconds histogram\n")
	for _, m := range pals {
		var cum uint64
		for i, b := range latencyBounds {
			cum += m.buckets[i].Load()
			fmt.Fprintf(w, "palisade_call_duration_seconds_bucket{%s,le=\"%s\"} %d\n", lbl(m), strconv.FormatFloat(b, 'g', -1, 64), cum)
		}
		cum += m.buckets[len(latencyBounds)].Load()
		fmt.Fprintf(w, "palisade_call_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", lbl(m), cum)
		fmt.Fprintf(w, "palisade_call_duration_seconds_sum{%s} %s\n", lbl(m), strconv.FormatFloat(time.Duration(m.sumNanos.Load()).Seconds(), 'g', -1, 64))
		fmt.Fprintf(w, "palisade_call_duration_seconds_count{%s} %d\n", lbl(m), cum)
	}
}

// MetricsHandler serves the metrics of s at any path.
func (s *Server) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, s.metricsSnapshot(), s.denied.Load(), s.audit.metrics())
	})
}
