package proctest

import (
	"os/exec"
	"testing"
)

func TestFreezeThaw(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	if s, n, err := stoppedThreads(pid); err != nil || s != 0 || n == 0 {
		t.Fatalf("running process: %d of %d threads stopped, %v", s, n, err)
	}
	if err := Freeze(pid); err != nil {
		t.Fatal(err)
	}
	if s, n, err := stoppedThreads(pid); err != nil || s != n {
		t.Fatalf("after Freeze: %d of %d threads stopped, %v", s, n, err)
	}
	if err := Thaw(pid); err != nil {
		t.Fatal(err)
	}
	if s, _, err := stoppedThreads(pid); err != nil || s != 0 {
		t.Fatalf("after Thaw: %d threads still stopped, %v", s, err)
	}
	if err := Freeze(1 << 30); err == nil {
		t.Fatal("Freeze of a pid that does not exist: no error")
	}
}
