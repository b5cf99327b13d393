package main

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envAsCLI makes the test binary behave as the palisade command (a demo run as a process of
// its own by TestDemoTLSServerHoldsNoKey).
const envAsCLI = "PALISADE_TEST_BINARY_IS_CLI"

// envHoldKey makes the test binary a process known to hold a P-256 key (hex scalar) in every
// form the memory search looks for: the search's positive control.
const envHoldKey = "PALISADE_TEST_HOLD_KEY"

func TestMain(m *testing.M) {
	if d := os.Getenv(envHoldKey); d != "" {
		os.Exit(holdKey(d))
	}
	// The application demos start their private daemon by running their own executable with
	// privateDaemonCommand first: under `go test` that executable is this binary.
	if os.Getenv(envAsCLI) == "1" || len(os.Args) > 1 && os.Args[1] == privateDaemonCommand {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// held keeps holdKey's values reachable.
var held [][]byte

func holdKey(dHex string) int {
	d, err := hex.DecodeString(dHex)
	if err != nil {
		return 2
	}
	forms, err := keyForms(d)
	if err != nil {
		return 1
	}
	for _, b := range forms {
		held = append(held, bytes.Clone(b))
	}
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(held)
	return 0
}

// keyForms are the forms in which a P-256 private key d would sit in a Go process's memory:
// the raw big-endian scalar (SEC 1 §2.3.6, crypto/ecdsa's Bytes and its FIPS key), the same
// little-endian (big.Int limbs on a little-endian machine: ecdsa.PrivateKey.D), and the SEC 1
// and PKCS #8 DER encodings (x509.MarshalECPrivateKey, the µTPM's key blob plaintext).
func keyForms(d []byte) (map[string][]byte, error) {
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, err
	}
	sec1, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	le := bytes.Clone(d)
	slices.Reverse(le)
	return map[string][]byte{"raw scalar (big-endian)": d, "raw scalar (little-endian limbs)": le, "SEC 1 DER": sec1, "PKCS #8 DER": pkcs8}, nil
}

// region is a readable mapping of a process (/proc/PID/maps).
type region struct {
	start, end uint64
	perms      string
	path       string
}

func readableRegions(pid int) ([]region, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	var rs []region
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[1][0] != 'r' {
			continue
		}
		var r region
		lo, hi, _ := strings.Cut(f[0], "-")
		if r.start, err = strconv.ParseUint(lo, 16, 64); err != nil {
			return nil, err
		}
		if r.end, err = strconv.ParseUint(hi, 16, 64); err != nil {
			return nil, err
		}
		r.perms = f[1]
		if len(f) > 5 {
			r.path = f[5]
		}
		if r.path == "[vvar]" || r.path == "[vvar_vclock]" || r.path == "[vsyscall]" {
			continue // not readable through /proc/PID/mem
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// memScan reads every readable mapping of pid in chunks; visit gets each chunk with its
// address, chunks overlapping by overlap bytes so that nothing shorter is cut in two.
// It returns the bytes read.
func memScan(t *testing.T, pid int, overlap int, visit func(addr uint64, b []byte)) int64 {
	t.Helper()
	rs, err := readableRegions(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	const chunk = 4 << 20
	buf := make([]byte, chunk+overlap)
	var total int64
	for _, r := range rs {
		for a := r.start; a < r.end; a += chunk {
			n := min(uint64(len(buf)), r.end-a)
			got, err := mem.ReadAt(buf[:n], int64(a))
			if got > 0 {
				visit(a, buf[:got])
				total += int64(min(uint64(got), chunk))
			}
			if err != nil && got == 0 && r.perms[1] == 'w' && r.path == "" {
				// An anonymous writable mapping is where a Go heap lives: not being able to
				// read one would make an absence meaningless.
				t.Fatalf("pid %d: reading %x-%x (%s): %v", pid, r.start, r.end, r.perms, err)
			}
		}
	}
	return total
}

// findForms reports which needles occur in pid's memory (name → address).
func findForms(t *testing.T, pid int, needles map[string][]byte) (map[string]uint64, int64) {
	t.Helper()
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	found := map[string]uint64{}
	total := memScan(t, pid, longest-1, func(addr uint64, b []byte) {
		for name, n := range needles {
			if _, ok := found[name]; ok {
				continue
			}
			if i := bytes.Index(b, n); i >= 0 {
				found[name] = addr + uint64(i)
			}
		}
	})
	return found, total
}

// recoverP256 finds the private key of public point q (65 bytes, uncompressed) in a Go
// process that has signed with it: the FIPS module's ecdsa.PrivateKey, which crypto/ecdsa
// caches for every key it has signed with, is {pub {curve *Curve, q []byte}, d []byte}, so a
// word pointing at a copy of q followed by length 65 is followed, two words on, by the pointer
// and length (32) of d. A candidate counts only if d·G = q.
func recoverP256(t *testing.T, pid int, q []byte) []byte {
	t.Helper()
	at := map[uint64]bool{}
	memScan(t, pid, len(q)-1, func(addr uint64, b []byte) {
		for off := 0; ; {
			i := bytes.Index(b[off:], q)
			if i < 0 {
				return
			}
			at[addr+uint64(off+i)] = true
			off += i + 1
		}
	})
	if len(at) == 0 {
		t.Fatalf("pid %d: the public key does not occur in the process's memory", pid)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	var d []byte
	memScan(t, pid, 0, func(addr uint64, b []byte) {
		for off := 0; off+16 <= len(b) && d == nil; off += 8 {
			p := binary.LittleEndian.Uint64(b[off:])
			if !at[p] || binary.LittleEndian.Uint64(b[off+8:]) != 65 {
				continue
			}
			var hdr [24]byte // d: pointer, length, capacity
			if _, err := mem.ReadAt(hdr[:], int64(addr)+int64(off)+24); err != nil {
				continue
			}
			if binary.LittleEndian.Uint64(hdr[8:]) != 32 {
				continue
			}
			cand := make([]byte, 32)
			if _, err := mem.ReadAt(cand, int64(binary.LittleEndian.Uint64(hdr[:]))); err != nil {
				continue
			}
			if k, err := ecdh.P256().NewPrivateKey(cand); err == nil && bytes.Equal(k.PublicKey().Bytes(), q) {
				d = cand
			}
		}
	})
	return d
}

// TestDemoTLSServerHoldsNoKey runs `palisade demo tls --serve` and searches the memory of the
// HTTPS server's process for the server's private key: its raw scalar (both byte orders) and
// its SEC 1 and PKCS #8 encodings. The key is recovered from the demo's private daemon, where
// it must be; the search is shown able to find every form in a process that holds it.
func TestDemoTLSServerHoldsNoKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the TLS demo")
	}
	cmd := exec.Command(os.Args[0], "demo", "tls", "--serve")
	cmd.Env = append(os.Environ(), envAsCLI+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("demo tls: %v", err)
		}
	}()
	var daemonPid int
	var url string
	lines := bufio.NewScanner(out)
	pidRe := regexp.MustCompile(`private palisaded, process (\d+),`)
	urlRe := regexp.MustCompile(`serving (https://localhost:\d+/)`)
	var transcript strings.Builder
	for lines.Scan() {
		l := lines.Text()
		transcript.WriteString(l + "\n")
		if m := pidRe.FindStringSubmatch(l); m != nil {
			daemonPid, _ = strconv.Atoi(m[1])
		}
		if m := urlRe.FindStringSubmatch(l); m != nil {
			url = m[1]
		}
		if strings.Contains(l, "serving until interrupted") {
			break
		}
	}
	go io.Copy(io.Discard, out)
	if daemonPid == 0 || url == "" {
		t.Fatalf("the demo did not report its daemon's process and its URL:\n%s", transcript.String())
	}
	if daemonPid == cmd.Process.Pid {
		t.Fatal("the daemon runs in the server's process")
	}

	// The server's public key, as any client sees it.
	conn, err := tls.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	pub := conn.ConnectionState().PeerCertificates[0].PublicKey.(*ecdsa.PublicKey)
	conn.Close()
	epub, err := pub.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	q := epub.Bytes()

	t0 := time.Now()
	d := recoverP256(t, daemonPid, q)
	if d == nil {
		t.Fatalf("the private key was not found in the daemon's memory (pid %d): the search cannot show its absence elsewhere", daemonPid)
	}
	forms, err := keyForms(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("key recovered from the daemon (pid %d) in %v", daemonPid, time.Since(t0).Round(time.Millisecond))

	// Positive controls: a process holding every form, and the daemon.
	holder := exec.Command(os.Args[0])
	holder.Env = append(os.Environ(), envHoldKey+"="+hex.EncodeToString(d))
	hin, _ := holder.StdinPipe()
	hout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer hin.Close()
	if l, _ := bufio.NewReader(hout).ReadString('\n'); l != "holding\n" {
		t.Fatalf("key holder: %q", l)
	}
	found, n := findForms(t, holder.Process.Pid, forms)
	for name := range forms {
		if _, ok := found[name]; !ok {
			t.Errorf("positive control: %s not found in a process that holds it (%d bytes searched)", name, n)
		}
	}
	found, n = findForms(t, daemonPid, forms)
	t.Logf("daemon (pid %d, %d MiB searched) holds: %v", daemonPid, n>>20, found)
	if _, ok := found["raw scalar (big-endian)"]; !ok {
		t.Errorf("positive control: the raw scalar not found in the daemon's memory")
	}

	// The server: it holds the public key (the search reads its heap) and no form of the
	// private key.
	needles := map[string][]byte{"public key": q}
	for name, b := range forms {
		needles[name] = b
	}
	found, n = findForms(t, cmd.Process.Pid, needles)
	t.Logf("server (pid %d): %d MiB searched", cmd.Process.Pid, n>>20)
	if _, ok := found["public key"]; !ok {
		t.Errorf("the server's public key was not found in its memory: the search did not read its heap")
	}
	for name := range forms {
		if a, ok := found[name]; ok {
			t.Errorf("the server process holds the private key: %s at %#x", name, a)
		}
	}
}
