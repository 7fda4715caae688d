//go:build !unix

package keystore

import (
	"io/fs"
	"syscall"
)

// errSyncUnsupported is what Windows answers to a directory fsync, where
// renames are durable without it.
var errSyncUnsupported = syscall.EINVAL

func fileIdentity(fs.FileInfo) string { return "" }

// ownerOf: owners are not kept off unix.
func ownerOf(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }
