// Package sshagent is an SSH agent (the protocol of OpenSSH's ssh-agent, draft-miller-ssh-agent)
// whose keys are Palisade named keys: it lists the keys palisaded lets its user sign with, and
// has every signature made by the key's signing PAL. The agent's process never holds a private
// key. Requests for keys it does not hold can go on to another agent (Options.Forward), as
// ssh-tpm-agent's fallback does, so one $SSH_AUTH_SOCK serves both.
//
// The same agent serves sshd's host keys through sshd_config's HostKeyAgent (docs/ssh.md).
package sshagent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/client"
)

// Errors of the agent. The agent protocol carries no reason, only SSH_AGENT_FAILURE; these are
// what the agent logs and what Go callers of Agent see.
var (
	ErrLocked     = errors.New("sshagent: the agent is locked")
	ErrNotLocked  = errors.New("sshagent: the agent is not locked")
	ErrBadUnlock  = errors.New("sshagent: incorrect passphrase")
	ErrUnknownKey = errors.New("sshagent: no such key in this agent")
	// ErrNoPrivateKeys refuses ssh-add of a private key with no agent to forward it to: this
	// agent's point is that no private key is in its memory (`palisade key import` moves an
	// existing key into palisaded instead).
	// ErrKeysStay refuses ssh-add -d of a Palisade key, and answers ssh-add -D while Palisade
	// keys are served: the agent cannot forget a key that lives in palisaded.
	ErrKeysStay      = errors.New("sshagent: Palisade keys stay served (palisade key delete deletes one, --keys serves fewer, ssh-add -x locks the agent)")
	ErrNoPrivateKeys = errors.New("sshagent: this agent holds no private keys; import the key into palisaded (palisade key import) or give the agent --forward")
)

// Comment is the comment the agent lists a Palisade key under ("palisade:NAME"); `palisade key
// create --ssh` ends its authorized_keys line with the same.
func Comment(name string) string { return "palisade:" + name }

// Supported reports whether keys of algorithm alg (client.Alg*) can be SSH keys: Ed25519,
// ECDSA P-256 and RSA (rsa-sha2-256 and rsa-sha2-512 signatures).
func Supported(alg string) bool {
	switch alg {
	case client.AlgEd25519, client.AlgECDSAP256, client.AlgRSA2048, client.AlgRSA3072:
		return true
	}
	return false
}

// AuthorizedKey returns the authorized_keys line of a Palisade key (no trailing newline).
func AuthorizedKey(k client.KeyInfo) (string, error) {
	pub, err := ssh.NewPublicKey(k.Public)
	if err != nil {
		return "", fmt.Errorf("key %q: %w", k.Name, err)
	}
	line := bytes.TrimRight(ssh.MarshalAuthorizedKey(pub), "\n")
	return string(line) + " " + Comment(k.Name), nil
}

// Options configure an Agent.
type Options struct {
	// Client reaches palisaded; the agent signs as the uid that dialled it.
	Client *client.Client
	// Keys restricts the agent to these key names; empty: every key the daemon lets the
	// caller use whose algorithm SSH supports.
	Keys []string
	// Forward, if not nil, returns a connection to another agent, which gets the requests for
	// keys this agent does not hold (and ssh-add of private keys). It is called per request,
	// so the other agent may restart.
	Forward func() (agent.ExtendedAgent, func() error, error)
	// PIN returns the PIN of a key that has one (an askpass program, for instance); nil: such
	// keys are listed but cannot sign.
	PIN func(k client.KeyInfo) ([]byte, error)
	// PINCache, if positive, keeps a PIN that PIN returned for this long after it was asked,
	// as ssh-tpm-agent caches PINs by default, so that a burst of signatures (an ssh
	// connection, a git fetch) asks once. A PIN the signing PAL refuses is dropped at once,
	// and every PIN when the agent is locked. Zero: ask at every signature and keep no PIN.
	PINCache time.Duration
	// Confirm, if not nil, is asked before every signature with a Palisade key, as OpenSSH's
	// agent asks for a key added with `ssh-add -c`; an error refuses the signature.
	Confirm func(k client.KeyInfo) error
	// Certs are files of OpenSSH certificates (ssh-keygen -s … key.pub makes key-cert.pub) of
	// Palisade keys. Each is read at every listing, so a renewed certificate is served without
	// a restart; a certificate is listed after its key, and signing with it is signing with
	// the key. A file that does not hold a certificate of a key the agent serves is logged and
	// skipped (CheckCerts reports it at start).
	Certs []string
	// SignTimeout bounds each signature, waiting for a restarting daemon included (default 30 s).
	SignTimeout time.Duration
	// DaemonWait is how long requests wait for palisaded when nothing answers on its socket
	// (a restart), counted from the moment the agent found it so: a restart is ridden
	// through, and once the daemon has been unreachable this long, requests fail at once
	// (without --forward: ssh-add -l fails, ssh tries its other keys) until it is back.
	// Default DefaultDaemonWait; negative: no wait.
	DaemonWait time.Duration
	// UnlockDelay is slept after an incorrect unlock passphrase, as OpenSSH's agent does, to
	// slow guessing (default 1 s; negative: none).
	UnlockDelay time.Duration
	Logger      *slog.Logger
}

// DefaultDaemonWait is Options.DaemonWait's default: several times what a restart of palisaded
// takes (0.2–0.8 s measured, with the development root and with swtpm), short enough that an
// interactive ssh or ssh-add waits little when the daemon is down. client.ReconnectWait (10 s),
// which a program's calls wait, made every agent request wait 10 s while the daemon was down.
const DefaultDaemonWait = 3 * time.Second

// Agent implements agent.ExtendedAgent over palisaded's named keys. It is safe for concurrent
// use: ServeAgent runs one goroutine per connection.
type Agent struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	locked  bool
	lockSum [sha256.Size]byte // SHA-256(salt ‖ passphrase) while locked
	salt    [16]byte
	signers map[string]*client.KeySigner // by key name, made on first use
	pins    map[string]cachedPIN         // by key name, with Options.PINCache
	lockGen uint64                       // incremented by Lock: a request that saw another value stops
	// listed holds the key blobs (certificates' too) of the last listing the daemon answered,
	// nil before the first: a signature request for another key goes to the forwarded agent
	// first, without waiting for a daemon that may be down.
	listed map[string]bool
	// downSince is when a request first found nothing answering on the daemon's socket, zero
	// while the daemon answers (daemonUp).
	downSince time.Time

	// unlockMu serialises unlock attempts, the delay after a wrong one included: guesses sent
	// on many connections at once are then as slow as on one (OpenSSH's agent, single-threaded,
	// gets this for free).
	unlockMu sync.Mutex

	// pinMu serialises PIN prompts (and the first signature with the PIN) while the cache is
	// cold, so that a burst of requests asks once, and a mistyped PIN costs one try, not one
	// per request in flight.
	pinMu sync.Mutex
}

type cachedPIN struct {
	pub     []byte // the key's public DER: a key made again under the name needs its own PIN
	pin     []byte
	expires time.Time
}

// New returns an agent on o.Client.
func New(o Options) (*Agent, error) {
	if o.Client == nil {
		return nil, errors.New("sshagent: no client")
	}
	if o.SignTimeout == 0 {
		o.SignTimeout = client.DefaultKeySignTimeout
	}
	if o.UnlockDelay == 0 {
		o.UnlockDelay = time.Second
	}
	if o.DaemonWait == 0 {
		o.DaemonWait = DefaultDaemonWait
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{o: o, log: log, signers: map[string]*client.KeySigner{}, pins: map[string]cachedPIN{}}, nil
}

var _ agent.ExtendedAgent = (*Agent)(nil)

// held is a Palisade key as the agent offers it: its plain public key, or a certificate of it
// (pub is then the *ssh.Certificate).
type held struct {
	info client.KeyInfo
	pub  ssh.PublicKey
	// cert is the certificate's file, "" for the plain key.
	cert string
}

// keys asks the daemon for the keys on every call, so keys created or deleted while the agent
// runs show up (or go) without a restart. Every request that needs the daemon starts here, so
// daemonUp decides here how long a request waits for a daemon that does not answer.
func (a *Agent) keys(ctx context.Context) ([]held, error) {
	if err := a.daemonUp(ctx); err != nil {
		return nil, err
	}
	var infos []client.KeyInfo
	if len(a.o.Keys) == 0 {
		all, err := a.o.Client.KeyList(ctx)
		if err != nil {
			return nil, err
		}
		infos = all
	} else {
		seen := map[string]bool{}
		for _, name := range a.o.Keys {
			if seen[name] {
				continue // listed once: ssh spends an authentication attempt on each entry
			}
			seen[name] = true
			k, err := a.o.Client.KeyGet(ctx, name)
			if errors.Is(err, client.ErrNotFound) || errors.Is(err, client.ErrPermission) {
				// Deleted, or the caller's access taken away, since the agent started: that
				// key goes, as it would from KeyList's answer; the other keys stay served.
				a.log.Warn("key not served", "key", name, "err", err)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", name, err)
			}
			infos = append(infos, k)
		}
	}
	out := make([]held, 0, len(infos))
	for _, k := range infos {
		if !Supported(k.Alg) {
			continue
		}
		pub, err := ssh.NewPublicKey(k.Public)
		if err != nil {
			a.log.Warn("key not offered", "key", k.Name, "err", err)
			continue
		}
		out = append(out, held{info: k, pub: pub})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].info.Name < out[j].info.Name })
	hs := a.withCerts(out)
	listed := make(map[string]bool, len(hs))
	for _, h := range hs {
		listed[string(h.pub.Marshal())] = true
	}
	a.mu.Lock()
	a.listed = listed
	a.mu.Unlock()
	return hs, nil
}

// daemonUp returns nil at once if something accepts connections on the daemon's socket. If
// nothing does (the daemon stopped, or restarting: its socket is gone or refuses), it waits for
// it up to Options.DaemonWait, counted from when a request first found it so, then fails at
// once with an error wrapping client.ErrUnavailable, until the socket accepts again. So a
// restart of a few hundred ms is ridden through by the requests made meanwhile, while a
// daemon that stays down delays only the requests of its first DaemonWait: without this,
// each call waited client.ReconnectWait (10 s) for the connection, an ssh-add -l included.
//
// The probe is a connect(2) to a local socket, answered by the kernel (a few µs); a daemon
// that accepts but is slow to answer is the calls' own timeouts' business.
func (a *Agent) daemonUp(ctx context.Context) error {
	path := a.o.Client.Socket()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			c.Close()
		}
		// EAGAIN: the daemon's accept queue is full, a busy daemon, not a down one.
		if err == nil || errors.Is(err, syscall.EAGAIN) {
			a.mu.Lock()
			if !a.downSince.IsZero() {
				a.log.Info("palisaded answers again", "socket", path, "after", time.Since(a.downSince).Round(time.Millisecond))
				a.downSince = time.Time{}
			}
			a.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := time.Now()
		a.mu.Lock()
		if a.downSince.IsZero() {
			a.downSince = now
			a.log.Warn("palisaded does not answer; requests wait for it, then fail at once until it is back",
				"socket", path, "wait", max(a.o.DaemonWait, 0), "err", err)
		}
		since := a.downSince
		a.mu.Unlock()
		left := since.Add(a.o.DaemonWait).Sub(now)
		if left <= 0 {
			return fmt.Errorf("%w: palisaded has not answered on %s for %v: %v", client.ErrUnavailable, path,
				now.Sub(since).Round(time.Millisecond), err)
		}
		t := time.NewTimer(min(left, daemonPoll))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// daemonPoll is how often daemonUp looks at the daemon's socket while it waits: a restarted
// daemon is served within this of its socket's creation.
const daemonPoll = 25 * time.Millisecond

// withCerts returns hs with each certificate of Options.Certs placed after its key.
func (a *Agent) withCerts(hs []held) []held {
	if len(a.o.Certs) == 0 {
		return hs
	}
	// Each file read once per listing (not once per key).
	certs := make([]*ssh.Certificate, len(a.o.Certs))
	for i, path := range a.o.Certs {
		cert, err := ReadCert(path)
		if err != nil {
			a.log.Warn("certificate not offered", "file", path, "err", err)
			continue
		}
		certs[i] = cert
	}
	out := make([]held, 0, len(hs)+len(a.o.Certs))
	seen := map[string]bool{} // a certificate in two files (or one file named twice) is listed once
	for _, h := range hs {
		out = append(out, h)
		for i, cert := range certs {
			if cert == nil || !bytes.Equal(cert.Key.Marshal(), h.pub.Marshal()) || seen[string(cert.Marshal())] {
				continue
			}
			seen[string(cert.Marshal())] = true
			out = append(out, held{info: h.info, pub: cert, cert: a.o.Certs[i]})
		}
	}
	return out
}

// ReadCert reads an OpenSSH certificate file (the one line of key-cert.pub).
func ReadCert(path string) (*ssh.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s holds a plain %s key, not a certificate", path, pub.Type())
	}
	return cert, nil
}

// CheckKeys reports a daemon that does not answer, or a name of Options.Keys that it does not
// let the caller use (no such key, or no access), so that a mistake shows when the agent
// starts. While the agent runs, such a key is only left out of the listing (a key deleted, or
// the caller's access taken away, goes; the others stay), and a daemon that does not answer
// leaves the forwarded agent's keys listed.
func (a *Agent) CheckKeys() error {
	ctx, cancel := a.ctx()
	defer cancel()
	if len(a.o.Keys) == 0 {
		_, err := a.o.Client.KeyList(ctx)
		return err
	}
	for _, name := range a.o.Keys {
		if _, err := a.o.Client.KeyGet(ctx, name); err != nil {
			return fmt.Errorf("sshagent: key %q: %w", name, err)
		}
	}
	return nil
}

// CheckCerts reports a file of Options.Certs that is not a certificate of a key the agent
// serves now, so that a mistake shows when the agent starts rather than at the first ssh.
func (a *Agent) CheckCerts() error {
	ctx, cancel := a.ctx()
	defer cancel()
	hs, err := a.keys(ctx)
	if err != nil {
		return err
	}
	for _, path := range a.o.Certs {
		found := false
		for _, h := range hs {
			found = found || h.cert == path
		}
		if found {
			continue
		}
		// keys() read it already; read it again to see whether it is the copy of a listed
		// certificate (listed once, under the other file), or to say why it is not offered.
		cert, err := ReadCert(path)
		if err != nil {
			return fmt.Errorf("sshagent: certificate %w", err)
		}
		for _, h := range hs {
			found = found || bytes.Equal(h.pub.Marshal(), cert.Marshal())
		}
		if found {
			continue
		}
		return fmt.Errorf("sshagent: certificate %s (%s) certifies none of the keys this agent serves", path, cert.KeyId)
	}
	return nil
}

func (a *Agent) isLocked() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.locked
}

func (a *Agent) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.o.SignTimeout)
}

// forwardFunc runs f on a connection to the forwarded agent (Options.Forward): a new one per
// call for Agent's methods, the Session's own for a Session's.
type forwardFunc func(f func(agent.ExtendedAgent) error) error

// List implements agent.Agent: Palisade keys first, then the forwarded agent's. A locked
// agent lists nothing.
func (a *Agent) List() ([]*agent.Key, error) { return a.list(a.forward) }

func (a *Agent) list(forward forwardFunc) ([]*agent.Key, error) {
	if a.isLocked() {
		return nil, nil
	}
	ctx, cancel := a.ctx()
	defer cancel()
	hs, kerr := a.keys(ctx)
	if kerr != nil {
		a.log.Error("list keys", "err", kerr)
		// With a forwarded agent, its keys are still listed: palisaded being down (or
		// restarting) takes the Palisade keys away, not the user's other keys.
		if a.o.Forward == nil {
			return nil, kerr
		}
	}
	out := make([]*agent.Key, 0, len(hs))
	seen := map[string]bool{}
	for _, h := range hs {
		blob := h.pub.Marshal()
		seen[string(blob)] = true
		out = append(out, &agent.Key{Format: h.pub.Type(), Blob: blob, Comment: Comment(h.info.Name)})
	}
	if a.o.Forward != nil {
		err := forward(func(f agent.ExtendedAgent) error {
			fks, err := f.List()
			for _, k := range fks {
				if !seen[string(k.Blob)] {
					out = append(out, k)
				}
			}
			return err
		})
		if err != nil {
			a.log.Warn("forwarded agent: list", "err", err)
			if kerr != nil {
				return nil, kerr
			}
		}
	}
	return out, nil
}

// forward runs f on a new connection to the forwarded agent, closed when f returns.
func (a *Agent) forward(f func(agent.ExtendedAgent) error) error {
	if a.o.Forward == nil {
		return ErrUnknownKey
	}
	fa, closeFn, err := a.o.Forward()
	if err != nil {
		return fmt.Errorf("forwarded agent: %w", err)
	}
	defer closeFn()
	return f(fa)
}

// Sign implements agent.Agent.
func (a *Agent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return a.SignWithFlags(key, data, 0)
}

// SignWithFlags implements agent.ExtendedAgent: the key's signing PAL signs; for RSA, flags
// choose rsa-sha2-256 or rsa-sha2-512 (ssh-rsa with SHA-1 is refused, as OpenSSH 8.8+ does).
func (a *Agent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	return a.signWithFlags(a.forward, key, data, flags)
}

func (a *Agent) signWithFlags(forward forwardFunc, key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	if a.isLocked() {
		return nil, ErrLocked
	}
	// The forwarded agent is asked at most once per request: a key added with ssh-add -c
	// would otherwise have its user asked twice.
	var (
		fwdAsked bool
		fwdErr   error
	)
	fwdSign := func() (*ssh.Signature, error) {
		fwdAsked = true
		var sig *ssh.Signature
		fwdErr = forward(func(f agent.ExtendedAgent) error {
			var err error
			sig, err = f.SignWithFlags(key, data, flags)
			return err
		})
		return sig, fwdErr
	}
	blob := key.Marshal()
	a.mu.Lock()
	notOurs := a.listed != nil && !a.listed[string(blob)]
	a.mu.Unlock()
	if notOurs && a.o.Forward != nil {
		// Not a key the daemon listed last: most likely the forwarded agent's, which then
		// signs without a daemon round trip (and without waiting for a daemon that is
		// down). If it refuses, the key may be a Palisade key made since: asked below.
		if sig, err := fwdSign(); err == nil {
			return sig, nil
		}
	}
	ctx, cancel := a.ctx()
	defer cancel()
	hs, kerr := a.keys(ctx)
	if kerr != nil {
		if a.o.Forward == nil {
			return nil, kerr
		}
		// palisaded is not answering: the key may be the forwarded agent's, which still
		// signs; if that agent refuses too, the daemon's error is the one that explains.
		a.log.Error("list keys", "err", kerr)
		if !fwdAsked {
			if sig, err := fwdSign(); err == nil {
				return sig, nil
			}
		}
		return nil, kerr
	}
	for _, h := range hs {
		if !bytes.Equal(h.pub.Marshal(), blob) {
			continue
		}
		sig, err := a.sign(ctx, h, data, flags)
		if err != nil {
			if errors.Is(err, client.ErrPINIncorrect) || errors.Is(err, client.ErrLocked) {
				a.mu.Lock()
				a.forgetPINLocked(h.info.Name)
				a.mu.Unlock()
			}
			a.log.Error("sign", "key", h.info.Name, "err", err)
			return nil, err
		}
		a.log.Debug("signed", "key", h.info.Name, "type", sig.Format)
		return sig, nil
	}
	if _, ok := key.(*ssh.Certificate); ok && a.o.Forward == nil {
		return nil, fmt.Errorf("%w: a certificate not among the agent's --cert files", ErrUnknownKey)
	}
	if fwdAsked {
		return nil, fwdErr
	}
	return fwdSign()
}

func (a *Agent) sign(ctx context.Context, h held, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	a.mu.Lock()
	gen := a.lockGen
	a.mu.Unlock()
	if a.o.Confirm != nil {
		if err := a.o.Confirm(h.info); err != nil {
			return nil, fmt.Errorf("sshagent: use of key %q not confirmed: %w", h.info.Name, err)
		}
	}
	var pin []byte
	cache := h.info.HasPIN && a.o.PINCache > 0
	if h.info.HasPIN {
		if cache {
			if pin = a.cachedPIN(h.info); pin != nil {
				cache = false // already there
			} else {
				a.pinMu.Lock()
				defer a.pinMu.Unlock()
				if pin = a.cachedPIN(h.info); pin != nil { // cached while this one waited
					cache = false
				}
			}
		}
		if pin == nil {
			var err error
			if pin, err = a.askPIN(h.info); err != nil {
				return nil, err
			}
		}
		defer clear(pin)
	}
	// Locked while askpass asked for a confirmation or a PIN: the request ends here.
	if !a.sameLock(gen) {
		return nil, ErrLocked
	}
	ks, err := a.signer(ctx, h.info, pin)
	if err != nil {
		return nil, err
	}
	sig, err := a.signWith(ks, data, flags)
	if err == nil && cache {
		// Only a PIN the signing PAL took is kept, and not if the agent was locked meanwhile.
		a.mu.Lock()
		if a.lockGen == gen && !a.locked {
			a.pins[h.info.Name] = cachedPIN{pub: h.info.PublicDER, pin: bytes.Clone(pin), expires: time.Now().Add(a.o.PINCache)}
		}
		a.mu.Unlock()
	}
	return sig, err
}

// askPIN asks Options.PIN for k's PIN.
func (a *Agent) askPIN(k client.KeyInfo) ([]byte, error) {
	if a.o.PIN == nil {
		return nil, fmt.Errorf("sshagent: key %q needs a PIN and the agent has no way to ask for one (--askpass)", k.Name)
	}
	pin, err := a.o.PIN(k)
	if err != nil {
		return nil, fmt.Errorf("sshagent: PIN for key %q: %w", k.Name, err)
	}
	return pin, nil
}

// sameLock reports whether the agent is unlocked and has not been locked since generation gen.
func (a *Agent) sameLock(gen uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.locked && a.lockGen == gen
}

// signWith signs data with ks as the agent protocol asks: for RSA, flags choose the hash.
func (a *Agent) signWith(ks *client.KeySigner, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	// A certificate's signature is its key's: the signer is the plain key's.
	s, err := ssh.NewSignerFromSigner(ks)
	if err != nil {
		return nil, err
	}
	if s.PublicKey().Type() != ssh.KeyAlgoRSA {
		return s.Sign(rand.Reader, data)
	}
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		return nil, fmt.Errorf("sshagent: RSA signer without algorithm choice")
	}
	switch {
	case flags&agent.SignatureFlagRsaSha512 != 0:
		return as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
	case flags&agent.SignatureFlagRsaSha256 != 0:
		return as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA256)
	}
	return nil, errors.New("sshagent: ssh-rsa (SHA-1) signatures are refused; the client must ask for rsa-sha2-256 or rsa-sha2-512")
}

// signer returns the KeySigner of k, made once per key and refreshed if the key changed (a
// key deleted and created again under the same name), with pin for a key that has one.
func (a *Agent) signer(ctx context.Context, k client.KeyInfo, pin []byte) (*client.KeySigner, error) {
	a.mu.Lock()
	s := a.signers[k.Name]
	a.mu.Unlock()
	if s == nil || !bytes.Equal(s.Info().PublicDER, k.PublicDER) {
		var err error
		if s, err = a.o.Client.KeySigner(ctx, k.Name); err != nil {
			return nil, err
		}
		s.Timeout = a.o.SignTimeout
		a.mu.Lock()
		a.signers[k.Name] = s
		a.mu.Unlock()
	}
	if !k.HasPIN {
		return s, nil
	}
	// A copy per signature: the PIN is not kept in the shared signer.
	c := *s
	c.PIN = pin
	return &c, nil
}

// cachedPIN returns a copy of k's PIN from the cache, or nil; an expired one is cleared and
// dropped.
func (a *Agent) cachedPIN(k client.KeyInfo) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.pins[k.Name]
	if !ok {
		return nil
	}
	if time.Now().After(c.expires) || !bytes.Equal(c.pub, k.PublicDER) {
		a.forgetPINLocked(k.Name)
		return nil
	}
	// A copy: forgetPINLocked overwrites the cached bytes, maybe while this one is in use.
	return bytes.Clone(c.pin)
}

// forgetPINLocked drops name's cached PIN, overwriting its bytes. a.mu is held.
func (a *Agent) forgetPINLocked(name string) {
	if c, ok := a.pins[name]; ok {
		clear(c.pin)
		delete(a.pins, name)
	}
}

// Add implements agent.Agent: private keys go to the forwarded agent, never into this one.
func (a *Agent) Add(key agent.AddedKey) error { return a.add(a.forward, key) }

func (a *Agent) add(forward forwardFunc, key agent.AddedKey) error {
	if a.isLocked() {
		return ErrLocked
	}
	if a.o.Forward == nil {
		return ErrNoPrivateKeys
	}
	return forward(func(f agent.ExtendedAgent) error { return f.Add(key) })
}

// Remove implements agent.Agent. A Palisade key is not removed (ErrKeysStay: it is deleted
// with `palisade key delete`), only its cached PIN forgotten; a key of the forwarded agent is
// removed there.
func (a *Agent) Remove(key ssh.PublicKey) error { return a.remove(a.forward, key) }

func (a *Agent) remove(forward forwardFunc, key ssh.PublicKey) error {
	if a.isLocked() {
		return ErrLocked
	}
	ctx, cancel := a.ctx()
	defer cancel()
	// A daemon that does not answer cannot say the key is its: the forwarded agent is asked.
	hs, _ := a.keys(ctx)
	blob := key.Marshal()
	for _, h := range hs {
		if bytes.Equal(h.pub.Marshal(), blob) {
			a.mu.Lock()
			a.forgetPINLocked(h.info.Name)
			a.mu.Unlock()
			return fmt.Errorf("%w: %q", ErrKeysStay, h.info.Name)
		}
	}
	return forward(func(f agent.ExtendedAgent) error { return f.Remove(key) })
}

// RemoveAll implements agent.Agent: it empties the forwarded agent and forgets every cached
// PIN; while Palisade keys are served, it then fails with ErrKeysStay, so that ssh-add -D does
// not say "All identities removed." with keys still listed and signing.
func (a *Agent) RemoveAll() error { return a.removeAll(a.forward) }

func (a *Agent) removeAll(forward forwardFunc) error {
	if a.isLocked() {
		return ErrLocked
	}
	a.mu.Lock()
	for name := range a.pins {
		a.forgetPINLocked(name)
	}
	a.mu.Unlock()
	if a.o.Forward != nil {
		if err := forward(func(f agent.ExtendedAgent) error { return f.RemoveAll() }); err != nil {
			return err
		}
	}
	ctx, cancel := a.ctx()
	defer cancel()
	hs, err := a.keys(ctx)
	if err != nil {
		return err
	}
	if len(hs) > 0 {
		return ErrKeysStay
	}
	return nil
}

// Lock implements agent.Agent: until Unlock with the same passphrase, the agent lists no keys
// and signs nothing, and neither does it forward. Only a salted hash of the passphrase is kept.
func (a *Agent) Lock(passphrase []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.locked {
		return ErrLocked
	}
	if _, err := rand.Read(a.salt[:]); err != nil {
		return err
	}
	a.lockSum = a.passSum(passphrase)
	a.locked = true
	a.lockGen++
	for name := range a.pins {
		a.forgetPINLocked(name)
	}
	a.log.Info("agent locked")
	return nil
}

func (a *Agent) passSum(p []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(a.salt[:])
	h.Write(p)
	var s [sha256.Size]byte
	copy(s[:], h.Sum(nil))
	return s
}

// Unlock implements agent.Agent.
func (a *Agent) Unlock(passphrase []byte) error {
	a.unlockMu.Lock()
	defer a.unlockMu.Unlock()
	a.mu.Lock()
	if !a.locked {
		a.mu.Unlock()
		return ErrNotLocked
	}
	sum := a.passSum(passphrase)
	if subtle.ConstantTimeCompare(sum[:], a.lockSum[:]) == 1 {
		a.locked = false
		a.mu.Unlock()
		a.log.Info("agent unlocked")
		return nil
	}
	a.mu.Unlock()
	a.log.Warn("agent unlock: incorrect passphrase")
	if a.o.UnlockDelay > 0 {
		time.Sleep(a.o.UnlockDelay)
	}
	return ErrBadUnlock
}

// Signers implements agent.Agent for Go callers: signers of the Palisade keys (the forwarded
// agent's are not included). They are the keys' own signers: a PIN is asked here, once per
// key, and kept in the returned signer; Options.Confirm and a later Lock do not apply to them.
func (a *Agent) Signers() ([]ssh.Signer, error) {
	if a.isLocked() {
		return nil, ErrLocked
	}
	ctx, cancel := a.ctx()
	defer cancel()
	hs, err := a.keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ssh.Signer, 0, len(hs))
	for _, h := range hs {
		var pin []byte
		if h.info.HasPIN {
			if pin, err = a.askPIN(h.info); err != nil {
				return nil, err
			}
		}
		ks, err := a.signer(ctx, h.info, pin)
		if err != nil {
			return nil, err
		}
		s, err := ssh.NewSignerFromSigner(ks)
		if err != nil {
			return nil, err
		}
		if cert, ok := h.pub.(*ssh.Certificate); ok {
			if s, err = ssh.NewCertSigner(cert, s); err != nil {
				return nil, err
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Extension implements agent.ExtendedAgent: none are supported (session-bind@openssh.com is
// answered as unsupported, which OpenSSH's ssh tolerates). A Session passes them on to the
// forwarded agent.
func (a *Agent) Extension(string, []byte) ([]byte, error) {
	return nil, agent.ErrExtensionUnsupported
}

// Session is the agent as one client connection sees it: Server serves each connection with
// a Session of its own. With Options.Forward, a Session keeps one connection to the other
// agent, made at its first forwarded request and kept until Close, and passes the client's
// extension requests on it. That is what ssh-add -h needs: ssh sends session-bind@openssh.com
// to bind its agent connection to the host it authenticates to (or forwards the agent to), and
// OpenSSH's agent refuses a destination-constrained key on a connection that is not bound, and
// checks the constraint against that connection's bindings; so the signature request must go
// on the connection that carried the bindings. If that connection breaks, the Session's
// forwarded requests fail (the bindings are gone with it) until the client connects again.
//
// Palisade keys are served as by Agent (they have no destination constraints). A Session is
// used by one goroutine at a time, as agent.ServeAgent does.
type Session struct {
	a       *Agent
	fa      agent.ExtendedAgent
	closeFn func() error
}

var _ agent.ExtendedAgent = (*Session)(nil)

// Session returns a new Session of a; Close it when its client is gone.
func (a *Agent) Session() *Session { return &Session{a: a} }

func (s *Session) forward(f func(agent.ExtendedAgent) error) error {
	if s.a.o.Forward == nil {
		return ErrUnknownKey
	}
	if s.fa == nil {
		fa, closeFn, err := s.a.o.Forward()
		if err != nil {
			return fmt.Errorf("forwarded agent: %w", err)
		}
		s.fa, s.closeFn = fa, closeFn
	}
	return f(s.fa)
}

// Close closes the Session's connection to the forwarded agent, if it made one.
func (s *Session) Close() error {
	if s.closeFn == nil {
		return nil
	}
	err := s.closeFn()
	s.fa, s.closeFn = nil, nil
	return err
}

// refused logs why a client's request was refused: the protocol answers only
// SSH_AGENT_FAILURE, which ssh-add shows as "agent refused operation". Failures of the
// daemon or of a signature are logged where they happen, at error level.
func (s *Session) refused(request string, err error) {
	if err != nil && (errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrNoPrivateKeys) ||
		errors.Is(err, ErrKeysStay) || errors.Is(err, ErrLocked) || errors.Is(err, ErrNotLocked)) {
		s.a.log.Info("request refused", "request", request, "err", err)
	}
}

// List implements agent.Agent as Agent.List does.
func (s *Session) List() ([]*agent.Key, error) { return s.a.list(s.forward) }

// Sign implements agent.Agent as Agent.Sign does.
func (s *Session) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return s.SignWithFlags(key, data, 0)
}

// SignWithFlags implements agent.ExtendedAgent as Agent.SignWithFlags does.
func (s *Session) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	sig, err := s.a.signWithFlags(s.forward, key, data, flags)
	s.refused("sign", err)
	return sig, err
}

// Add implements agent.Agent as Agent.Add does.
func (s *Session) Add(key agent.AddedKey) error {
	err := s.a.add(s.forward, key)
	s.refused("add", err)
	return err
}

// Remove implements agent.Agent as Agent.Remove does.
func (s *Session) Remove(key ssh.PublicKey) error {
	err := s.a.remove(s.forward, key)
	s.refused("remove", err)
	return err
}

// RemoveAll implements agent.Agent as Agent.RemoveAll does.
func (s *Session) RemoveAll() error {
	err := s.a.removeAll(s.forward)
	s.refused("remove all", err)
	return err
}

// Lock implements agent.Agent: it locks the whole agent (Agent.Lock).
func (s *Session) Lock(passphrase []byte) error {
	err := s.a.Lock(passphrase)
	s.refused("lock", err)
	return err
}

// Unlock implements agent.Agent: it unlocks the whole agent (Agent.Unlock).
func (s *Session) Unlock(passphrase []byte) error { return s.a.Unlock(passphrase) }

// Signers implements agent.Agent as Agent.Signers does.
func (s *Session) Signers() ([]ssh.Signer, error) { return s.a.Signers() }

// Extension implements agent.ExtendedAgent: with Options.Forward, the request goes to the
// forwarded agent on the Session's connection and its answer comes back as it is; without,
// or while the agent is locked, extensions are unsupported.
func (s *Session) Extension(typ string, contents []byte) ([]byte, error) {
	if s.a.o.Forward == nil || s.a.isLocked() {
		return nil, agent.ErrExtensionUnsupported
	}
	var res []byte
	err := s.forward(func(f agent.ExtendedAgent) error {
		var err error
		res, err = f.Extension(typ, contents)
		return err
	})
	if errors.Is(err, agent.ErrExtensionUnsupported) {
		// agent.ServeAgent answers SSH_AGENT_FAILURE only for this very value.
		return nil, agent.ErrExtensionUnsupported
	}
	return res, err
}
