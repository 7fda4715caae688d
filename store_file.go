package zulipproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
)

// fileBackend keeps the store in one file, replaced atomically, with a
// lock file beside it shared by every process that writes.
type fileBackend struct {
	path string
	// afterTempWrite, for tests, runs once the temporary file is written
	// and synced; an error stops the write there, as a crash would.
	afterTempWrite func(tmp string) error
}

// OpenFileStore opens the store file at path. A missing file is an empty
// store; an unreadable or corrupt one is an error.
func OpenFileStore(path string, opt StoreOptions) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("key store %s: %w", path, err)
	}
	return openStore(&fileBackend{path: abs}, opt)
}

func (f *fileBackend) String() string { return "file " + f.path }

func (f *fileBackend) read(context.Context) ([]byte, error) {
	return os.ReadFile(f.path)
}

func (f *fileBackend) stamp(context.Context) (string, error) {
	fi, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d/%s", fi.ModTime().UnixNano(), fi.Size(), fileIdentity(fi)), nil
}

func (f *fileBackend) lock(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return nil, err
	}
	fl := flock.New(f.path+".lock", flock.SetPermissions(0o600))
	ok, err := fl.TryLockContext(ctx, 5*time.Millisecond)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("lock not acquired")
	}
	return func() { _ = fl.Unlock() }, nil
}

// write replaces the file so that a crash at any point leaves either the
// old document or the new one: temp file, fsync, rename, fsync the folder.
func (f *fileBackend) write(_ context.Context, data []byte) (err error) {
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return err
	}
	crashed := false
	defer func() {
		if err != nil && !crashed {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err = tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if f.afterTempWrite != nil {
		if err = f.afterTempWrite(tmp.Name()); err != nil {
			crashed = true // leave the temp file, as a crash would
			return err
		}
	}
	if err = os.Rename(tmp.Name(), f.path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename durable: without it, a power cut can bring back
// the old directory entry.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errSyncUnsupported) {
		return err
	}
	return nil
}
