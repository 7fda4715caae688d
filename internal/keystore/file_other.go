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
