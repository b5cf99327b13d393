package lean

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/palisade-project/palisade/internal/lean/wire"
)

// metrics are the lean protocol's own counters, beside the per-PAL ones that CallAs keeps.
type metrics struct {
	accepted, refused                 atomic.Uint64
	idleClosed, slowClosed, truncated atomic.Uint64
	protocolErrors                    atomic.Uint64
	disconnected                      atomic.Uint64        // calls canceled because the client went away
	requests                          [8][32]atomic.Uint64 // [op][code], ops 0..7, codes 0..31
	nanos                             [8]atomic.Uint64
}

func (m *metrics) observe(op wire.Op, code wire.Code, d time.Duration) {
	o, c := int(op), int(code)
	if o >= len(m.requests) {
		o = 0 // unknown ops
	}
	if c >= len(m.requests[0]) {
		c = len(m.requests[0]) - 1
	}
	m.requests[o][c].Add(1)
	m.nanos[o].Add(uint64(d))
}

// WriteMetrics writes the server's counters in the Prometheus text format (appended to the
// daemon's /metrics).
func (s *Server) WriteMetrics(w io.Writer) {
	m := &s.m
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	fmt.Fprintf(w, "# HELP palisade_lean_connections Open lean-protocol connections.\n# TYPE palisade_lean_connections gauge\npalisade_lean_connections %d\n", open)
	fmt.Fprint(w, "# HELP palisade_lean_connections_total Lean-protocol connections by outcome.\n# TYPE palisade_lean_connections_total counter\n")
	for _, c := range []struct {
		name string
		v    *atomic.Uint64
	}{
		{"accepted", &m.accepted}, {"refused_busy", &m.refused}, {"closed_idle", &m.idleClosed},
		{"closed_slow", &m.slowClosed}, {"closed_truncated", &m.truncated}, {"closed_protocol_error", &m.protocolErrors},
		{"gone_mid_call", &m.disconnected},
	} {
		fmt.Fprintf(w, "palisade_lean_connections_total{outcome=%q} %d\n", c.name, c.v.Load())
	}
	fmt.Fprint(w, "# HELP palisade_lean_requests_total Lean-protocol requests by op and code.\n# TYPE palisade_lean_requests_total counter\n")
	for o := range m.requests {
		for c := range m.requests[o] {
			if n := m.requests[o][c].Load(); n > 0 {
				fmt.Fprintf(w, "palisade_lean_requests_total{op=%q,code=%q} %d\n", wire.Op(o).String(), wire.Code(c).String(), n)
			}
		}
	}
	fmt.Fprint(w, "# HELP palisade_lean_request_seconds_total Time spent serving lean-protocol requests, by op.\n# TYPE palisade_lean_request_seconds_total counter\n")
	for o := range m.nanos {
		if n := m.nanos[o].Load(); n > 0 {
			fmt.Fprintf(w, "palisade_lean_request_seconds_total{op=%q} %g\n", wire.Op(o).String(), time.Duration(n).Seconds())
		}
	}
}
