package main

// The paper's two applications as demos: `palisade demo tls` (an HTTPS server whose key lives
// only in PALs, §6.3) and `palisade demo ssh` (an SSH server whose password check runs in a
// PAL, §6.2). Both talk to palisaded through the client SDK: by default a private daemon on a
// temporary socket, or the one named by --socket.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/examples/sshpass"
	"github.com/palisade-project/palisade/examples/tlskey"
	"github.com/palisade-project/palisade/integrations/pam"
	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/pal"
)

func init() {
	demos["tls"] = demo{"an HTTPS server whose private key exists only in PALs (paper §6.3); fetches a page with curl", demoTLS}
	demos["ssh"] = demo{"an SSH server whose password database is sealed to a checking PAL (paper §6.2); logs in with ssh", demoSSH}
}

// demoPassword is the password the SSH demo enrols unless given another: a demo's, not a secret.
const demoPassword = "correct horse battery staple"

func step(format string, a ...any) { fmt.Printf("==> "+format+"\n", a...) }

// appFlags are the flags both application demos take.
type appFlags struct {
	socket, palDir, addr *string
	serve                *bool
}

func addAppFlags(name string, args []string, extra func(*flag.FlagSet)) (appFlags, error) {
	fs := demoFlags(name)
	f := appFlags{
		socket: fs.String("socket", "", "use the palisaded at this socket (default: start a private one on a temporary socket)"),
		palDir: fs.String("pal-dir", "", "directory with the prebuilt PALs (default: build them from the source tree)"),
		addr:   fs.String("addr", "127.0.0.1:0", "address to serve on"),
		serve:  fs.Bool("serve", false, "keep serving after the demo until interrupted"),
	}
	if extra != nil {
		extra(fs)
	}
	pos, err := parseArgs(fs, args)
	if err == nil && len(pos) > 0 {
		err = usageErrorf("demo %s: unexpected arguments %q", name, pos)
	}
	return f, err
}

// connect dials socket, or starts a private daemon in a process of its own (demo_daemon.go).
func connect(ctx context.Context, socket string) (*client.Client, func(), error) {
	if socket != "" {
		c, err := client.Dial(ctx, socket)
		if err != nil {
			return nil, nil, err
		}
		step("using palisaded at %s", socket)
		return c, func() { c.Close() }, nil
	}
	d, err := startPrivateDaemon(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("private daemon: %w", err)
	}
	step("started a private palisaded, process %d, on %s (root of trust: none — development mode); this process (%d) holds no PAL key", d.Pid, d.Socket, os.Getpid())
	c, err := client.Dial(ctx, d.Socket)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	return c, func() {
		c.Close()
		if err := d.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "palisade demo: %v\n", err)
		}
	}, nil
}

// loadPAL reads name from dir, or builds package pkg from the source tree.
func loadPAL(ctx context.Context, dir, name, pkg string) ([]byte, error) {
	if dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w (without --pal-dir the demo builds its PALs from the source tree)", err)
		}
		return b, nil
	}
	t0 := time.Now()
	b, err := apps.BuildGoPAL(ctx, pkg)
	if err != nil {
		return nil, fmt.Errorf("%w (or give --pal-dir with %s)", err, name)
	}
	img, err := pal.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkg, err)
	}
	step("PAL %-24s %7d bytes, measurement %x… (built or cached in %v)", pkg, len(b), img.Measurement[:8], time.Since(t0).Round(time.Millisecond))
	return b, nil
}

func demoTLS(ctx context.Context, args []string) error {
	var alg, variant *string
	f, err := addAppFlags("tls", args, func(fs *flag.FlagSet) {
		alg = fs.String("alg", "ecdsa-p256", "server key: ecdsa-p256, rsa2048 or rsa3072")
		variant = fs.String("variant", "keyobject", "keyobject (a µTPM key object; the key never enters a PAL) or sealed (the PAL generates the key and seals it for the signer; ecdsa-p256)")
	})
	if err != nil {
		return err
	}
	var img tlskey.Images
	if img.Keygen, err = loadPAL(ctx, *f.palDir, "keygen.wasm", "examples/tlskey/keygen"); err != nil {
		return err
	}
	if img.Signer, err = loadPAL(ctx, *f.palDir, "signer.wasm", "examples/tlskey/signer"); err != nil {
		return err
	}
	c, done, err := connect(ctx, *f.socket)
	if err != nil {
		return err
	}
	defer done()
	o := tlskey.Options{Alg: tlskey.Alg(*alg)}
	switch *variant {
	case "keyobject":
	case "sealed":
		o.Variant = tlskey.SealedKey
	default:
		return usageErrorf("--variant %q: want keyobject or sealed", *variant)
	}
	k, err := tlskey.Setup(ctx, c, img, o)
	if err != nil {
		return err
	}
	defer k.Close(context.Background())
	step("key-generation PAL made a %s key for the signing PAL %x… in %v; it returned only the public key", *alg, k.SignerMeasurement[:8], k.Creation.Round(time.Millisecond))
	step("%d signing PALs hold the key blob: %s", len(k.Handles()), strings.Join(k.Handles(), " "))
	step("self-signed certificate, signed by the PAL: %s, SHA-256 fingerprint %x", k.Leaf.Subject, sha256.Sum256(k.Leaf.Raw))

	l, err := net.Listen("tcp", *f.addr)
	if err != nil {
		return err
	}
	srv := tlskey.Serve(l, tlskey.ServerConfig(k.Cert), tlskey.Handler())
	defer srv.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	url := "https://localhost:" + port + "/"
	step("serving %s (TLS 1.2 and 1.3, no session resumption: every connection signs in the PAL)", url)

	dir, err := os.MkdirTemp("", "palisade-demo-tls-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Leaf.Raw}), 0o644); err != nil {
		return err
	}
	for _, v := range []string{"1.2", "1.3"} {
		if _, lerr := exec.LookPath("curl"); lerr == nil {
			cmd := exec.CommandContext(ctx, "curl", "-sS", "--cacert", ca, "--resolve", "localhost:"+port+":127.0.0.1",
				"--tlsv"+v, "--tls-max", v, "-w", "   (curl: TLS handshake %{time_appconnect}s, HTTP %{http_code})\n", url)
			out, err := cmd.CombinedOutput()
			step("curl --cacert cert.pem --tlsv%s %s\n%s", v, url, strings.TrimRight(string(out), "\n"))
			if err != nil {
				return fmt.Errorf("curl: %w", err)
			}
			continue
		}
		if err := fetchGo(ctx, l.Addr().String(), k.Leaf, v); err != nil {
			return err
		}
	}
	if !*f.serve {
		step("demo complete (run with --serve to keep the server up)")
		return nil
	}
	step("serving until interrupted (Ctrl-C); certificate: %s is removed on exit — trust it with: curl -k", ca)
	<-ctx.Done()
	return nil
}

func fetchGo(ctx context.Context, addr string, leaf *x509.Certificate, v string) error {
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	ver := map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}[v]
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: ver, MaxVersion: ver}}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	step("Go client over TLS %s (curl is not installed): %s", v, strings.TrimSpace(string(b)))
	return err
}

func demoSSH(ctx context.Context, args []string) error {
	var user, passwordFile, hostKey, stateDir *string
	var maxFail *uint
	f, err := addAppFlags("ssh", args, func(fs *flag.FlagSet) {
		user = fs.String("user", "alice", "user to enrol")
		passwordFile = fs.String("password-file", "", "file holding their password ('-': standard input, prompted with echo off on a terminal; default: the demo's own password, "+demoPassword+")")
		refuseSecretFlag(fs, "password", "--password-file FILE, or - for standard input")
		hostKey = fs.String("host-key", "memory", "memory (an ed25519 key in the server) or pal (an ECDSA P-256 key held by the HTTPS example's PALs)")
		stateDir = fs.String("dir", "", "pam_palisade state `DIR` to use, as palisade passwd --dir (default: a temporary one, removed at the end)")
		maxFail = fs.Uint("max-failures", 3, "failed checks that lock the user (a new database's threshold)")
	})
	if err != nil {
		return err
	}
	if *maxFail < 1 || *maxFail > 20 {
		return usageErrorf("--max-failures %d: want 1..20 (the demo then tries one more wrong password)", *maxFail)
	}
	password := []byte(demoPassword)
	if *passwordFile != "" {
		if password, err = readSecret(ctx, *passwordFile, "password for "+*user+": "); err != nil {
			return fmt.Errorf("--password-file: %w", err)
		}
	}
	if *stateDir == "" {
		if *stateDir, err = os.MkdirTemp("", "palisade-demo-ssh-"); err != nil {
			return err
		}
		defer os.RemoveAll(*stateDir)
	}
	c, done, err := connect(ctx, *f.socket)
	if err != nil {
		return err
	}
	defer done()
	// The checking PAL is pam_palisade's shipped build (integrations/pam: wasm, or kvm where the
	// daemon offers it and the state is new), opened and enrolled through the same state
	// directory and requests as `palisade passwd`; --pal-dir is not read for it.
	p, err := sshpass.OpenPassDB(ctx, c, *stateDir, nil, "")
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	t0 := time.Now()
	if err := p.Enrol(ctx, *user, password, pam.Params{}, uint32(*maxFail)); err != nil {
		return err
	}
	el := time.Since(t0)
	db, err := p.SealedDB()
	if err != nil {
		return err
	}
	step("enrolled %q in pam_palisade's checking PAL %s (%v): the server holds only a %d-byte database sealed to the PAL, in %s", *user, p.Handle(), el.Round(time.Millisecond), len(db), *stateDir)

	var hk ssh.Signer
	switch *hostKey {
	case "memory":
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		hk, _ = ssh.NewSignerFromSigner(priv)
	case "pal":
		var img tlskey.Images
		if img.Keygen, err = loadPAL(ctx, *f.palDir, "keygen.wasm", "examples/tlskey/keygen"); err != nil {
			return err
		}
		if img.Signer, err = loadPAL(ctx, *f.palDir, "signer.wasm", "examples/tlskey/signer"); err != nil {
			return err
		}
		k, err := tlskey.Setup(ctx, c, img, tlskey.Options{Alg: tlskey.ECDSAP256, Signers: 1})
		if err != nil {
			return err
		}
		defer k.Close(context.Background())
		if hk, err = ssh.NewSignerFromSigner(k.Signer()); err != nil {
			return err
		}
		step("host key: ECDSA P-256 µTPM key object held by signing PAL %s", k.Handles()[0])
	default:
		return usageErrorf("--host-key %q: want memory or pal", *hostKey)
	}
	srv := sshpass.NewServer(hk, p)
	srv.Logf = func(format string, a ...any) { fmt.Printf("    server: "+format+"\n", a...) }
	l, err := net.Listen("tcp", *f.addr)
	if err != nil {
		return err
	}
	go srv.Serve(l)
	defer srv.Close()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	step("SSH server on %s (host key %s %s; it runs no shell: only whoami and echo)", l.Addr(), hk.PublicKey().Type(), ssh.FingerprintSHA256(hk.PublicKey()))

	login := func(pw, command string) (string, error) {
		if _, err := exec.LookPath("sshpass"); err == nil {
			cmd := exec.CommandContext(ctx, "sshpass", "-e", "ssh", "-p", port, "-o", "StrictHostKeyChecking=no",
				"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "PreferredAuthentications=password",
				"-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1", *user+"@"+host, command)
			cmd.Env = append(os.Environ(), "SSHPASS="+pw)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		return sshpass.Login(l.Addr().String(), *user, pw, command)
	}
	tool := "sshpass -e ssh"
	if _, err := exec.LookPath("sshpass"); err != nil {
		tool = "Go SSH client (sshpass is not installed)"
	}
	t0 = time.Now()
	out, err := login(string(password), "whoami")
	step("%s %s@%s -p %s whoami   → %q, %v (%v)", tool, *user, host, port, out, errText(err), time.Since(t0).Round(time.Millisecond))
	if err != nil {
		return err
	}
	// maxFail failures lock the user; the attempt after them is refused without a check.
	for i := 1; i <= int(*maxFail)+1; i++ {
		_, err = login("wrong password", "whoami")
		step("attempt %d with a wrong password → %v", i, errText(err))
		if err == nil {
			return errors.New("a wrong password was accepted")
		}
	}
	_, err = login(string(password), "whoami")
	step("right password during the lockout → %v", errText(err))
	if err == nil {
		return errors.New("the lockout did not hold")
	}
	if !*f.serve {
		step("demo complete (run with --serve to keep the server up)")
		return nil
	}
	step("serving until interrupted (Ctrl-C): ssh -p %s %s@%s", port, *user, host)
	<-ctx.Done()
	return nil
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return "refused (" + strings.TrimSpace(err.Error()) + ")"
}
