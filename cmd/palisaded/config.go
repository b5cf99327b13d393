package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/keys"
)

// Config is the daemon's configuration file (JSON; docs/daemon.md). Flags override the fields
// they name.
type Config struct {
	StateDir string `json:"state_dir,omitempty"`
	Socket   string `json:"socket,omitempty"`
	// LeanSocket is where the lean protocol is served (docs/protocol.md), with the mode and
	// group of Socket. Default: lean.sock beside Socket; "none" turns it off.
	LeanSocket      string   `json:"lean_socket,omitempty"`
	SocketMode      string   `json:"socket_mode,omitempty"`  // octal, default "0660"
	SocketGroup     string   `json:"socket_group,omitempty"` // group name or gid
	Rot             string   `json:"rot,omitempty"`          // tpm:/dev/tpmrm0 | swtpm:PATH | none
	Metrics         string   `json:"metrics,omitempty"`      // loopback host:port
	LogLevel        string   `json:"log_level,omitempty"`    // debug, info, warn, error
	LogFormat       string   `json:"log_format,omitempty"`   // json (default) or text
	Engines         []string `json:"engines,omitempty"`      // default: every engine this machine supports
	ImageDirs       []string `json:"image_dirs,omitempty"`   // where register-by-path may read
	ShutdownTimeout string   `json:"shutdown_timeout,omitempty"`
	// MaxKeysPerOwner bounds the named keys one uid may own, so that one user cannot fill
	// the daemon's state; 0: keys.DefaultMaxKeysPerOwner (1024).
	MaxKeysPerOwner int           `json:"max_keys_per_owner,omitempty"`
	Access          server.Policy `json:"access"`
	// ConfigState is the trusted-configuration state directory (docs/configurations.md §4),
	// default STATE_DIR/config. The daemon runs under a trusted configuration only if the
	// directory has been initialised ('palisade config init --state-dir' or 'config apply').
	ConfigState string `json:"config_state,omitempty"`
	// Authority is the PEM file of the administrator's ECDSA P-256 public key that authorizes
	// visor builds (TPM2_PolicyAuthorize for the master secret, docs/attestation.md §6.1);
	// Authorizations are files made by 'palisade config authorize-visor', besides those in
	// STATE_DIR/rot-tpm/authorizations/. Only for a TPM root of trust.
	Authority      string   `json:"authority,omitempty"`
	Authorizations []string `json:"authorizations,omitempty"`
	// EKChain is a PEM file of the CA certificates between the TPM's EK certificate and the
	// vendor's root, issuer first: evidence carries them, so a verifier needs only the root
	// (palisade verify --ek-roots). Only for a TPM root of trust.
	EKChain string `json:"ek_chain,omitempty"`
}

func defaultConfig() Config {
	return Config{
		StateDir:        "/var/lib/palisade",
		Socket:          "/run/palisade/palisade.sock",
		SocketMode:      "0660",
		Rot:             "tpm:/dev/tpmrm0",
		LogLevel:        "info",
		LogFormat:       "json",
		ShutdownTimeout: "10s",
	}
}

// loadConfig reads path over the defaults; unknown fields are errors, so a typo in an access
// rule does not silently grant or deny.
func loadConfig(path string) (Config, []byte, error) {
	c := defaultConfig()
	if path == "" {
		return c, nil, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return c, nil, fmt.Errorf("config: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return c, nil, fmt.Errorf("config %s: %w", path, err)
	}
	// What the decoder takes silently: a second document after the first (ignored, although
	// the visor measurement covers the file's bytes) and a repeated key (the last one wins,
	// so a rule written twice is dropped without a word).
	if _, err := d.Token(); err != io.EOF {
		return c, nil, fmt.Errorf("config %s: trailing data after the configuration object", path)
	}
	if err := checkRepeatedKeys(json.NewDecoder(bytes.NewReader(raw)), ""); err != nil {
		return c, nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, raw, nil
}

// checkRepeatedKeys reads one JSON value (already known to be valid) from d and refuses an
// object, at any level, that repeats a key. Keys are compared as encoding/json matches them
// to fields: after unescaping and case-insensitively ("Access" repeats "access"). path names
// the value in errors (objects in an array are named by the array's key).
func checkRepeatedKeys(d *json.Decoder, path string) error {
	tok, err := d.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return err
			}
			k, _ := kt.(string) // a key is always a string
			if seen[foldKey(k)] {
				if path == "" {
					return fmt.Errorf("duplicate key %q", k)
				}
				return fmt.Errorf("duplicate key %q in %s", k, path)
			}
			seen[foldKey(k)] = true
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			if err := checkRepeatedKeys(d, sub); err != nil {
				return err
			}
		}
		_, err = d.Token() // '}'
		return err
	case json.Delim('['):
		for d.More() {
			if err := checkRepeatedKeys(d, path); err != nil {
				return err
			}
		}
		_, err = d.Token() // ']'
		return err
	}
	return nil
}

// foldKey maps k to one representative of the keys encoding/json treats as equal to it:
// each rune becomes the smallest rune of its simple case-folding orbit (so "K", "k" and the
// Kelvin sign, "S", "s" and "ſ" each agree).
func foldKey(k string) string {
	return strings.Map(func(r rune) rune {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		return m
	}, k)
}

// configStateDir is the trusted-configuration state directory.
func (c *Config) configStateDir() string {
	if c.ConfigState != "" {
		return c.ConfigState
	}
	return filepath.Join(c.StateDir, "config")
}

// authority reads the Authority public key and the Authorizations files.
func (c *Config) authority() (*ecdsa.PublicKey, [][]byte, error) {
	if c.Authority == "" {
		if len(c.Authorizations) > 0 {
			return nil, nil, errors.New("authorizations without an authority key")
		}
		return nil, nil, nil
	}
	b, err := os.ReadFile(c.Authority)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: %w", err)
	}
	pub, err := config.ParsePublicKey(b)
	if err != nil {
		return nil, nil, fmt.Errorf("authority %s: %w", c.Authority, err)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, nil, fmt.Errorf("authority %s: want an ECDSA P-256 public key (TPM2_PolicyAuthorize), have %T", c.Authority, pub)
	}
	var auths [][]byte
	for _, p := range c.Authorizations {
		a, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("authorization: %w", err)
		}
		auths = append(auths, a)
	}
	return k, auths, nil
}

// leanSocket is the lean protocol's socket path, "" if it is off.
func (c *Config) leanSocket() string {
	switch c.LeanSocket {
	case "none":
		return ""
	case "":
		return filepath.Join(filepath.Dir(c.Socket), "lean.sock")
	}
	return c.LeanSocket
}

// ekChain reads the EKChain file: PEM certificates only, at least one.
func (c *Config) ekChain() ([][]byte, error) {
	if c.EKChain == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.EKChain)
	if err != nil {
		return nil, fmt.Errorf("ek_chain: %w", err)
	}
	var chain [][]byte
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, fmt.Errorf("ek_chain %s: data that is not PEM after certificate %d", c.EKChain, len(chain))
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("ek_chain %s: PEM block %q, want CERTIFICATE", c.EKChain, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("ek_chain %s: certificate %d: %w", c.EKChain, len(chain)+1, err)
		}
		chain = append(chain, blk.Bytes)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("ek_chain %s: no PEM certificate", c.EKChain)
	}
	return chain, nil
}

func (c *Config) socketMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("socket_mode %q: want octal permission bits like 0660", c.SocketMode)
	}
	return os.FileMode(m), nil
}

func (c *Config) socketGID() (int, error) {
	if c.SocketGroup == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(c.SocketGroup); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(c.SocketGroup)
	if err != nil {
		return 0, fmt.Errorf("socket_group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}

// maxKeysPerOwner checks MaxKeysPerOwner.
func (c *Config) maxKeysPerOwner() (int, error) {
	if c.MaxKeysPerOwner < 0 || c.MaxKeysPerOwner > maxKeysPerOwnerLimit {
		return 0, fmt.Errorf("max_keys_per_owner %d: want 0 (the default, %d) to %d", c.MaxKeysPerOwner, keys.DefaultMaxKeysPerOwner, maxKeysPerOwnerLimit)
	}
	return c.MaxKeysPerOwner, nil
}

// maxKeysPerOwnerLimit keeps the key store's size (loaded whole at start) reasonable.
const maxKeysPerOwnerLimit = 1 << 20

func (c *Config) shutdownTimeout() (time.Duration, error) {
	d, err := time.ParseDuration(c.ShutdownTimeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("shutdown_timeout %q: want a positive duration like 10s", c.ShutdownTimeout)
	}
	return d, nil
}

// checkMetricsAddr allows only loopback addresses: the metrics name every PAL, and the
// daemon does not expose anything on the network.
func checkMetricsAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics address %q: only loopback addresses are allowed (127.0.0.1:PORT or [::1]:PORT)", addr)
	}
	return nil
}
