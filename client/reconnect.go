package client

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// ReconnectWait bounds how long a call waits for palisaded to be reachable again when the
// connection is down (the daemon restarting, say) before it fails with ErrUnavailable.
const ReconnectWait = 10 * time.Second

// reconnectBackoff keeps redialling a restarted daemon quick: gRPC's default backoff grows to
// two minutes, so a client whose daemon was down for a while would stay failed long after
// the daemon came back.
var reconnectBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 2 * time.Second,
})

// awaitConnection makes a call issued while the connection is down wait (up to ReconnectWait,
// and never past the call's own deadline) for it to come back, instead of failing at once as
// gRPC does by default. It never resends a request: a call that was in flight when the daemon
// died still fails with ErrUnavailable, since a PAL call need not be idempotent.
func awaitConnection(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if s := cc.GetState(); s != connectivity.Ready {
		wctx, cancel := context.WithTimeout(ctx, ReconnectWait)
		for ; s != connectivity.Ready && s != connectivity.Shutdown; s = cc.GetState() {
			if s == connectivity.Idle {
				cc.Connect()
			}
			if !cc.WaitForStateChange(wctx, s) {
				break
			}
		}
		cancel()
		if s != connectivity.Ready {
			// Whichever deadline ended the wait, the daemon is what failed: say so, rather
			// than let the call time out as if the PAL had been slow.
			return status.Errorf(codes.Unavailable, "palisaded is unreachable (connection %v after waiting for it to come back)", s)
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
