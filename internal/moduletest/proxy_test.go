package moduletest

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/swtpmtest"
)

// releaseVersion returns the newest version in CHANGELOG.md: the version the README announces
// and the outer module requires.
func releaseVersion(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## \[(v\d+\.\d+\.\d+)\]`).FindSubmatch(b)
	if m == nil {
		t.Fatal("CHANGELOG.md has no release heading \"## [vX.Y.Z]\"")
	}
	return string(m[1])
}

// TestVersionIsConsistent checks that the version of CHANGELOG.md is the one the README
// announces, the outer module requires and palisaded reports.
func TestVersionIsConsistent(t *testing.T) {
	root, _ := moduleRoot(t)
	v := releaseVersion(t, root)
	for _, c := range []struct{ file, want string }{
		{"README.md", "@" + v},
		{"internal/moduletest/testdata/outer/go.mod", "github.com/palisade-project/palisade " + v},
		{"cmd/palisaded/main.go", fmt.Sprintf("const version = %q", strings.TrimPrefix(v, "v"))},
	} {
		b, err := os.ReadFile(filepath.Join(root, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(c.want)) {
			t.Errorf("%s does not contain %q (the version of CHANGELOG.md)", c.file, c.want)
		}
	}
}

// TestOuterModule is the proof that Palisade works as a Go dependency (#15). It makes a module
// proxy in a directory from the checkout — Palisade's version zip in the go command's format,
// with its .info, .mod and list — and builds testdata/outer, a module that requires Palisade by
// version, with GOPROXY=file://… (no replace directive): an application that signs through
// client, a Go PAL made with sdk/go/pal, a relying party that verifies with attest, and
// palisaded itself from the required module. Then it runs them against that palisaded, on the
// development root of trust and on a TPM (swtpm, where installed).
//
// Palisade's dependencies come from this machine's module download cache, served as a second
// file proxy, and then from the public proxy. The outer module uses its own module cache, from
// which Palisade is removed at every run: the version stays the same while the checkout
// changes, and a stale copy must never be built (nor a test copy leak into the user's cache).
func TestOuterModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module outside the tree and runs palisaded (-short)")
	}
	root, modPath := moduleRoot(t)
	version := releaseVersion(t, root)
	goEnv := func(name string) string {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	sharedDownloads := filepath.Join(goEnv("GOMODCACHE"), "cache", "download")

	cacheDir, err := os.UserCacheDir()
	if err != nil {
		cacheDir = os.TempDir()
	}
	work := filepath.Join(cacheDir, "palisade-moduletest")
	modCache := filepath.Join(work, "mod")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock := lock(t, filepath.Join(work, "lock"))
	defer unlock()
	// Forget the Palisade of earlier runs; keep its dependencies, extracted once.
	for _, dir := range []string{
		filepath.Join(modCache, modPath+"@"+version),
		filepath.Join(modCache, "cache", "download", modPath),
	} {
		removeAll(t, dir)
	}

	// The proxy: <proxy>/<module>/@v/{list, V.info, V.mod, V.zip}.
	proxy := t.TempDir()
	at := filepath.Join(proxy, modPath, "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	zipHash, files := writeModuleZip(t, filepath.Join(at, version+".zip"), root, modPath, version)
	info, _ := json.Marshal(struct{ Version, Time string }{version, time.Now().UTC().Format(time.RFC3339)})
	for name, data := range map[string][]byte{
		"list":            []byte(version + "\n"),
		version + ".info": info,
		version + ".mod":  goMod,
	} {
		if err := os.WriteFile(filepath.Join(at, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("module proxy: %s@%s, %d files", modPath, version, files)

	// The outer module, copied out of the tree. Its go.sum starts as Palisade's (the
	// dependencies it shares) plus Palisade's own hashes, computed here as the go command
	// computes them: the build fails if the zip the go command reads hashes differently.
	outer := t.TempDir()
	copyDir(t, filepath.Join(root, "internal", "moduletest", "testdata", "outer"), outer)
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	sum = fmt.Appendf(sum, "%s %s %s\n%s %s/go.mod %s\n", modPath, version, zipHash,
		modPath, version, hash1(map[string][]byte{"go.mod": goMod}))
	if err := os.WriteFile(filepath.Join(outer, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(outer, "go.mod")); bytes.Contains(b, []byte("replace")) {
		t.Fatal("testdata/outer/go.mod has a replace directive: it must require Palisade by version")
	}

	env := []string{
		"GOPROXY=file://" + filepath.ToSlash(proxy) + ",file://" + filepath.ToSlash(sharedDownloads) + ",https://proxy.golang.org",
		"GOMODCACHE=" + modCache,
		"GOFLAGS=-mod=mod",
		"GONOSUMDB=" + modPath, // never in the public checksum database: go.sum holds its hash
		"GONOPROXY=", "GOPRIVATE=", "GOWORK=off", "GOTOOLCHAIN=local",
		// The go command indexes each module of its module cache once, keyed by the module's
		// directory alone (a module version never changes, it assumes). Palisade's does
		// change here from run to run, so its index would list the files of an earlier
		// checkout: no index.
		"GODEBUG=goindex=0",
	}
	bin := filepath.Join(outer, "bin")
	goCmd := func(extraEnv []string, args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = outer
		cmd.Env = append(append(os.Environ(), env...), extraEnv...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("go %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
	goCmd(nil, "build", "-o", bin+"/", "./app", "./verifier", modPath+"/cmd/palisaded")
	goCmd([]string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"},
		"build", "-buildmode=c-shared", "-trimpath", "-o", filepath.Join(bin, "signpal.wasm"), "./signpal")

	// A real palisaded, built from the required module, on each root of trust.
	t.Run("rot=none", func(t *testing.T) {
		runOuter(t, bin, version, "none", []string{"-allow-unrooted"}, `root "none", rooted false`)
	})
	t.Run("rot=swtpm", func(t *testing.T) {
		if _, err := exec.LookPath("swtpm"); err != nil {
			t.Skip("swtpm not installed (scripts/setup.sh installs it): rooted evidence not checked")
		}
		runOuter(t, bin, version, swtpmtest.Start(t).Device(), nil, `root "tpm", rooted true`)
	})
}

// runOuter starts the palisaded in bin on root of trust rot, runs the application against it,
// and checks the evidence it got with the relying party (run with verifierFlags), whose output
// must contain want. Then it checks that the relying party refuses that evidence for another
// nonce, and, for evidence of the development root of trust, without its explicit consent.
func runOuter(t *testing.T, bin, version, rot string, verifierFlags []string, want string) {
	state := shortTempDir(t)
	socket := filepath.Join(state, "palisade.sock")
	config := filepath.Join(state, "config.json")
	raw, _ := json.Marshal(map[string]any{
		"state_dir": filepath.Join(state, "state"), "socket": socket, "rot": rot,
		"engines": []string{"wasm"}, "log_format": "text", "shutdown_timeout": "5s",
	})
	if err := os.WriteFile(config, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	daemon := exec.Command(filepath.Join(bin, "palisaded"), "--config", config)
	var daemonLog bytes.Buffer
	daemon.Stderr = &daemonLog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			daemon.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("palisaded log:\n%s", daemonLog.String())
		}
	}()
	waitHealthy(t, socket, exited, version)

	run := func(name string, args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(bin, name), args...).CombinedOutput()
		return string(out), err
	}
	evidence := filepath.Join(state, "evidence.cbor")
	nonce := hex.EncodeToString([]byte("relying party nonce"))
	out, err := run("app", socket, filepath.Join(bin, "signpal.wasm"), nonce, evidence)
	t.Logf("app: %s", out)
	if err != nil || !strings.Contains(out, "signature verified") {
		t.Fatalf("app: %v\n%s", err, out)
	}
	verify := func(flags []string, nonce string) (string, error) {
		args := append(append([]string{}, flags...), evidence, nonce,
			filepath.Join(bin, "signpal.wasm"), filepath.Join(bin, "palisaded"), config)
		return run("verifier", args...)
	}
	out, err = verify(verifierFlags, nonce)
	t.Logf("verifier: %s", out)
	if err != nil || !strings.Contains(out, "verified: PAL") || !strings.Contains(out, want) {
		t.Fatalf("verifier: %v\n%s\nwant %q", err, out, want)
	}
	// The relying party really checks: the same evidence for another challenge is refused...
	if out, err := verify(verifierFlags, hex.EncodeToString([]byte("another nonce"))); err == nil || !strings.Contains(out, "nonce") {
		t.Fatalf("verifier accepted evidence for another nonce: %v\n%s", err, out)
	}
	// ...and so is unrooted evidence, unless the relying party says it accepts it.
	if len(verifierFlags) > 0 {
		if out, err := verify(nil, nonce); err == nil || !strings.Contains(out, "not rooted") {
			t.Fatalf("verifier accepted unrooted evidence by default: %v\n%s", err, out)
		}
	}
}

// shortTempDir is a temporary directory with a short path: a Unix socket's path must fit in
// 108 bytes, and t.TempDir's include the test's name.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "palisade-outer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitHealthy waits until palisaded at socket answers Health, and checks the version it
// reports.
func waitHealthy(t *testing.T, socket string, exited <-chan error, version string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.Dial(ctx, socket)
		if err == nil {
			var h client.Health
			h, err = c.Health(ctx)
			c.Close()
			if err == nil {
				cancel()
				if want := strings.TrimPrefix(version, "v"); h.Version != want {
					t.Errorf("palisaded reports version %q, want %q", h.Version, want)
				}
				return
			}
		}
		cancel()
		select {
		case err := <-exited:
			t.Fatalf("palisaded exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("palisaded did not become healthy: %v", err)
		}
	}
}

// writeModuleZip writes the module zip of the checkout at root to path, in the go command's
// format (golang.org/x/mod/zip): every file of the module under "<module>@<version>/", without
// version-control directories, directories that hold another module (a go.mod of their own,
// like testdata/outer) and files that are not regular. In a git checkout, only the files git
// tracks or would track (ignored build outputs stay out). It returns the zip's "h1:" hash and
// the number of files.
func writeModuleZip(t *testing.T, path, root, modPath, version string) (string, int) {
	t.Helper()
	names := moduleFiles(t, root)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	contents := map[string][]byte{}
	prefix := modPath + "@" + version + "/"
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.Create(prefix + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		contents[prefix+name] = data
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return hash1(contents), len(names)
}

// moduleFiles lists the files of the module at root, slash-separated and sorted.
func moduleFiles(t *testing.T, root string) []string {
	t.Helper()
	var candidates []string
	if _, err := os.Stat(filepath.Join(root, ".git")); err == nil {
		cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git ls-files: %v", err)
		}
		candidates = strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	} else {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				candidates = append(candidates, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Directories that are another module, or version-control metadata, are not part of it.
	excluded := map[string]bool{}
	isExcluded := func(dir string) bool {
		for d := dir; d != "." && d != "/"; d = filepath.Dir(d) {
			if ex, ok := excluded[d]; ok {
				if ex {
					return true
				}
				continue
			}
			base := filepath.Base(d)
			_, err := os.Stat(filepath.Join(root, d, "go.mod"))
			excluded[d] = err == nil || base == ".git" || base == ".hg" || base == ".svn" || base == ".bzr"
			if excluded[d] {
				return true
			}
		}
		return false
	}
	var names []string
	for _, name := range candidates {
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil || !fi.Mode().IsRegular() || isExcluded(filepath.Dir(filepath.FromSlash(name))) {
			continue // deleted in the working tree, a symlink, or in another module
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// hash1 is the go command's "h1:" hash of a set of files (golang.org/x/mod/sumdb/dirhash):
// SHA-256 over the lines "<hex SHA-256 of the file>  <name>\n", sorted by name, in base64.
func hash1(files map[string][]byte) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%x  %s\n", sha256.Sum256(files[n]), n)
	}
	return "h1:" + base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// copyDir copies the regular files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// removeAll removes dir, which the go command may have made read-only (module cache).
func removeAll(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

// lock serializes test processes that share the module cache of the outer module.
func lock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}
