// Package atomicfile replaces files crash-safely: after a crash at any point a reader finds
// either the old or the new contents, never a mix and never a missing file.
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// TempPattern is the glob of the temporary files WriteFile leaves behind if it is interrupted
// before its rename, relative to the file's directory; callers may remove them at start-up.
const TempPattern = ".*.tmp*"

// WriteFile replaces path with data, with permissions perm: a temporary file in the same
// directory is written and fsync'd, renamed over path, and the directory fsync'd so that the
// rename itself is durable.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFileHook(path, data, perm, nil)
}

// WriteFileHook is WriteFile that calls beforeRename, if not nil, once the temporary file is
// durable and before it replaces path: crash tests kill the process there.
func WriteFileHook(path string, data []byte, perm os.FileMode, beforeRename func()) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if beforeRename != nil {
		beforeRename()
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// MkdirAll is os.MkdirAll that makes every directory it creates durable: once a directory is
// made, its parent is fsync'd, or a crash of the machine could lose the new directory's entry
// (and every file written durably inside it since: their own fsyncs and SyncDir of the new
// directory do not cover its name in its parent). Directories that exist are left as they are.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("not a directory")}
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made by someone else meanwhile, who makes it durable
		}
		return err
	}
	return syncDir(parent)
}

// syncDir is SyncDir; tests replace it to see which directories are made durable (a crash of
// the machine, which would show it, cannot be caused in a test).
var syncDir = SyncDir

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
