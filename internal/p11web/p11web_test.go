package p11web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNginxConfWith checks the lines NginxOptions change, and that the zero options are the
// configuration NginxConf has always written.
func TestNginxConfWith(t *testing.T) {
	file := []VHost{{Port: "1", Cert: "c", Key: "/k.key"}}
	p11 := []VHost{{Port: "1", Cert: "c", Key: "pkcs11:token=t;object=k"}}
	tests := []struct {
		name      string
		hosts     []VHost
		o         NginxOptions
		want, not []string
	}{
		{"file key", file, NginxOptions{}, []string{"worker_processes 2;", `ssl_certificate_key "/k.key";`}, []string{"ssl_engine"}},
		{"pkcs11 key", p11, NginxOptions{}, []string{"worker_processes 2;", "ssl_engine pkcs11;", `"engine:pkcs11:pkcs11:token=t;object=k"`}, nil},
		{"tpm2-pkcs11's options", p11, NginxOptions{Workers: 1, NoSSLEngine: true},
			[]string{"worker_processes 1;", `"engine:pkcs11:pkcs11:token=t;object=k"`, "env TPM2_PKCS11_STORE;", "env DBUS_SESSION_BUS_ADDRESS;"}, []string{"ssl_engine", "worker_processes 2;"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := NginxConfWith("/d", tt.hosts, tt.o)
			for _, s := range tt.want {
				if !strings.Contains(conf, s) {
					t.Errorf("lacks %q:\n%s", s, conf)
				}
			}
			for _, s := range tt.not {
				if strings.Contains(conf, s) {
					t.Errorf("has %q:\n%s", s, conf)
				}
			}
		})
	}
	if a, b := NginxConf("/d", p11), NginxConfWith("/d", p11, NginxOptions{}); a != b {
		t.Errorf("NginxConf differs from NginxConfWith's zero options:\n%s\n---\n%s", a, b)
	}
}

// TestBackendsServe sets up each backend the bench's web section measures (key in a file, in
// Palisade, in SoftHSM2, in tpm2-pkcs11 on swtpm), for each key type, and has nginx serve
// requests with it: several new connections, so that a failure in one of several workers shows.
// A backend whose programs are missing is skipped, saying which.
func TestBackendsServe(t *testing.T) {
	if m := Missing(); m != "" {
		t.Skip("needs " + m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	e, err := Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	// backend sets up one way of holding the key whose file copy is keyFile (certificate
	// fileCert), and returns the host nginx serves, its options and environment.
	type backend struct {
		name    string
		missing func() string
		setup   func(t *testing.T, alg, keyFile, fileCert string) (VHost, NginxOptions, []string)
	}
	backends := []backend{
		{"file", func() string { return "" }, func(t *testing.T, alg, keyFile, fileCert string) (VHost, NginxOptions, []string) {
			return VHost{Cert: fileCert, Key: keyFile}, NginxOptions{}, nil
		}},
		{"palisade", func() string { return "" }, func(t *testing.T, alg, keyFile, fileCert string) (VHost, NginxOptions, []string) {
			cert, err := e.CreateKey(ctx, "tls-"+alg, alg)
			if err != nil {
				t.Fatal(err)
			}
			return VHost{Cert: cert, Key: "pkcs11:token=palisade;object=tls-" + alg + ";type=private"}, NginxOptions{}, nil
		}},
		{"softhsm2", func() string {
			if _, err := exec.LookPath("softhsm2-util"); err != nil {
				return "softhsm2"
			}
			return ""
		}, func(t *testing.T, alg, keyFile, fileCert string) (VHost, NginxOptions, []string) {
			env, err := e.SoftHSM(ctx, alg, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			return VHost{Cert: fileCert, Key: "pkcs11:token=bench;object=k;type=private;pin-value=1234"}, NginxOptions{}, env
		}},
		{"tpm2-pkcs11", TPM2Missing, func(t *testing.T, alg, keyFile, fileCert string) (VHost, NginxOptions, []string) {
			tpm, err := e.StartTPM2(ctx, "tpm2-"+alg, keyFile, alg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(tpm.Stop)
			return VHost{Cert: fileCert, Key: "pkcs11:token=bench;object=k;type=private;pin-value=1234"}, tpm.Nginx, tpm.Env
		}},
	}
	for _, alg := range []string{"ecdsa-p256", "rsa-2048"} {
		keyFile, fileCert, err := e.FileKey("file-"+alg, alg)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range backends {
			t.Run(alg+"/"+b.name, func(t *testing.T) {
				if m := b.missing(); m != "" {
					t.Skipf("%s: this machine lacks %s (scripts/setup.sh installs it)", b.name, m)
				}
				host, o, env := b.setup(t, alg, keyFile, fileCert)
				port, err := FreePort()
				if err != nil {
					t.Fatal(err)
				}
				host.Port = port
				w, err := e.StartNginxWith("nginx-"+alg+"-"+b.name, []VHost{host}, o, env...)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Stop()
				if err := serves(host, 8); err != nil {
					t.Fatalf("%v\n%s", err, w.Log())
				}
			})
		}
	}
}

// serves makes n requests to h, each on a new connection with a full TLS 1.2 handshake
// verifying h's certificate, and checks the page.
func serves(h VHost, n int) error {
	pemBytes, err := os.ReadFile(h.Cert)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("%s: no certificate", h.Cert)
	}
	tr := &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for i := 0; i < n; i++ {
		resp, err := hc.Get("https://127.0.0.1:" + h.Port + "/")
		if err != nil {
			return fmt.Errorf("request %d of %d: %w", i+1, n, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || string(b) != "palisade\n" || resp.TLS.DidResume {
			return fmt.Errorf("request %d: status %d, resumed %v, page %q", i+1, resp.StatusCode, resp.TLS.DidResume, b)
		}
	}
	return nil
}
