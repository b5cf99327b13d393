package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/lean"
)

// listenLean creates the lean protocol's server and socket (same mode and group as the gRPC
// socket: whoever may use one may use the other). Both are nil when cfg turns it off.
func listenLean(cfg Config, srv *server.Server, k keys.Signer, log *slog.Logger, mode os.FileMode, gid int) (*lean.Server, *net.UnixListener, error) {
	path := cfg.leanSocket()
	if path == "" {
		return nil, nil, nil
	}
	ls, err := lean.New(lean.Config{API: srv, Keys: k, Logger: log, Version: version})
	if err != nil {
		return nil, nil, err
	}
	l, err := server.Listen(path, server.SocketOptions{Mode: mode, GID: gid})
	if err != nil {
		return nil, nil, err
	}
	log.Info("serving the lean protocol", "socket", path, "keys", k != nil)
	return ls, l, nil
}

func shutdownLean(ctx context.Context, ls *lean.Server) error {
	if ls == nil {
		return nil
	}
	return ls.Shutdown(ctx)
}

// metricsHandler serves the gRPC server's metrics followed by the lean protocol's.
func metricsHandler(srv *server.Server, ls *lean.Server) http.Handler {
	h := srv.MetricsHandler()
	if ls == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		ls.WriteMetrics(w)
	})
}
