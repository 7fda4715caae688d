package zulipproxy

import (
	"strconv"

	"github.com/dustin/go-humanize"
)

func itoa(n int) string { return strconv.Itoa(n) }

func formatBytes(n int64) string { return humanize.IBytes(uint64(n)) }
