package keystore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
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

// OpenFile opens the store file at path. A missing file is an empty
// store; an unreadable or corrupt one is an error.
func OpenFile(path string, opt Options) (*Store, error) {
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
	if err := folderExists(filepath.Dir(f.path)); err != nil {
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

// wroteBefore: every write takes the lock file beside the store, and it
// stays there, so a lock file without a store is a store that was lost.
func (f *fileBackend) wroteBefore() string {
	if _, err := os.Stat(f.path + ".lock"); err == nil {
		return "its lock file " + f.path + ".lock is there"
	}
	return ""
}

// folderExists says why a store cannot be written in dir when dir is
// not a folder. The store never makes its folder: a missing one is more
// likely a wrong path or a volume not mounted than a store never made.
func folderExists(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("folder %s does not exist; create it for the user the server runs as (install -d -m 0700 %s)", dir, dir)
	case err != nil:
		return fmt.Errorf("folder %s: %w", dir, errnoOf(err))
	case !fi.IsDir():
		return fmt.Errorf("%s is not a folder", dir)
	}
	return nil
}

// CheckWritable says whether a store file at path could be written: its
// folder exists and takes new files (the write goes through a temporary
// file renamed over the store), and the store and its lock file, where
// they exist, can be written. The error names the path and the reason.
func CheckWritable(path string) error {
	dir := filepath.Dir(path)
	if err := folderExists(dir); err != nil {
		return err
	}
	probe, err := os.CreateTemp(dir, ".zwop-write-check-*")
	if err != nil {
		return fmt.Errorf("cannot create files in %s: %w", dir, errnoOf(err))
	}
	probe.Close()
	_ = os.Remove(probe.Name())
	for _, p := range []string{path, path + ".lock"} {
		fh, err := os.OpenFile(p, os.O_WRONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			hint := ""
			if errors.Is(err, fs.ErrPermission) && os.Geteuid() == 0 {
				hint = " (immutable? lsattr shows an i among its flags, chattr -i clears it)"
			}
			return fmt.Errorf("cannot write %s: %w%s", p, errnoOf(err), hint)
		}
		fh.Close()
	}
	return nil
}

// errnoOf is an error without the path an *fs.PathError repeats.
func errnoOf(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// tempPrefix starts the names of the temporary files a write goes through;
// os.CreateTemp puts digits after it.
func (f *fileBackend) tempPrefix() string { return "." + filepath.Base(f.path) + ".tmp-" }

// removeStaleTemps deletes temporary files that a crashed write left. It
// runs under the lock, and only writers holding the lock make temporary
// files, so none of them is in use.
func (f *fileBackend) removeStaleTemps() {
	dir := filepath.Dir(f.path)
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := f.tempPrefix()
	for _, de := range des {
		rest, ok := strings.CutPrefix(de.Name(), prefix)
		if ok && rest != "" && strings.Trim(rest, "0123456789") == "" && de.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}

// write replaces the file so that a crash at any point leaves either the
// old document or the new one: temp file, fsync, rename, fsync the folder.
// It runs under the lock.
func (f *fileBackend) write(_ context.Context, data []byte) (err error) {
	f.removeStaleTemps()
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, f.tempPrefix()+"*")
	if err != nil {
		return err
	}
	crashed := false
	defer func() {
		if err != nil && !crashed {
			_ = os.Remove(tmp.Name())
		}
	}()
	// The new file keeps the old one's mode, owner and group: a store the
	// Caddy service user owns must stay readable to it after a root CLI
	// wrote it. Checked before any data is written.
	mode := os.FileMode(0o600)
	if fi, serr := os.Stat(f.path); serr == nil {
		mode = fi.Mode().Perm()
		if uid, gid, ok := ownerOf(fi); ok && (uid != os.Geteuid() || gid != os.Getegid()) {
			if err = tmp.Chown(uid, gid); err != nil {
				tmp.Close()
				return fmt.Errorf("%w: %s belongs to %s; writing it as %s would leave a file its owner may not read: run this as %s (or as root, which keeps the owner)", ErrNotWritable, f.path, userName(uid, gid), userName(os.Geteuid(), os.Getegid()), userName(uid, -1))
			}
		}
	}
	if err = tmp.Chmod(mode); err != nil {
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

// userName names a user (and group, unless gid < 0) for messages.
func userName(uid, gid int) string {
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	if gid < 0 {
		return name
	}
	group := strconv.Itoa(gid)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return name + ":" + group
}
