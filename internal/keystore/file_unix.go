//go:build unix

package keystore

import (
	"errors"
	"io/fs"
	"strconv"
	"syscall"
)

// errSyncUnsupported never matches on unix: a failed directory fsync is
// a real error there.
var errSyncUnsupported = errors.New("directory sync unsupported")

// fileIdentity tells a replaced file from the old one even when the
// modification time's resolution is coarse.
func fileIdentity(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.FormatUint(uint64(st.Ino), 10)
	}
	return ""
}

// ownerOf is the file's owner and group.
func ownerOf(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
