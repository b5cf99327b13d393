package server

import "net"

// What other front ends of the daemon (the lean protocol of internal/lean) share with the gRPC
// service: the peer credentials of a connection, and the classification of errors, so that a
// caller gets the same answer whichever protocol it speaks.

// PeerOf returns the credentials of the process that connected c (SO_PEERCRED, and its
// supplementary groups), as the gRPC handshake records them. c must be a Unix socket
// connection.
func PeerOf(c net.Conn) (Peer, error) { return peerOf(c) }

// Reason names the class of err as the gRPC API reports it (api.Reason*, in its ErrorInfo):
// "NOT_FOUND", "PERMISSION", "TIMEOUT", ... and "INTERNAL" for anything unclassified.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	return classify(err).String()
}
