package pkcs11_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRotatedKeyHandles runs test/rotate.c: a key deleted and created again under its name
// gets new object handles, and the old ones (held, say, by a web server that loaded the key
// at start) answer CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID instead of naming the
// new key.
func TestRotatedKeyHandles(t *testing.T) {
	e := setup(t)
	prog := filepath.Join(t.TempDir(), "rotate")
	if out, err := exec.Command("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
		"-o", prog, "test/rotate.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	const name = "rotated"
	e.cli(t, "key", "create", name, "--alg", "ecdsa-p256")
	cli := filepath.Join(e.bin, "palisade")
	rotate := fmt.Sprintf("%s key delete %s && %s key create %s --alg ecdsa-p256 >/dev/null", cli, name, cli, name)
	if out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + name}, prog, e.module, name, rotate); err != nil {
		t.Fatalf("rotate: %v\n%s\nmodule log:\n%s", err, out, e.logText(t))
	}
}

// TestWrongPINLogsOut runs test/pin.c: a PIN the signing PAL finds incorrect is forgotten, so
// further signatures ask for a login (CKR_USER_NOT_LOGGED_IN) instead of each costing one of
// the key's tries; with two tries, the key still signs with the right PIN afterwards.
func TestWrongPINLogsOut(t *testing.T) {
	e := setup(t)
	prog := filepath.Join(t.TempDir(), "pin")
	if out, err := exec.Command("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
		"-o", prog, "test/pin.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	const name, right = "two-tries", "2468"
	pinFile := e.path(name + ".pin")
	if err := os.WriteFile(pinFile, []byte(right), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cli(t, "key", "create", name, "--alg", "ecdsa-p256", "--pin-file", pinFile, "--max-tries", "2")
	if out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + name}, prog, e.module, name, right, "1357"); err != nil {
		t.Fatalf("pin: %v\n%s\nmodule log:\n%s", err, out, e.logText(t))
	}
}
