package zulipproxy

import (
	"testing"
	"time"
)

// The trail's bounds: a duration back from now, a date (through that
// day, as an end), a time; anything else refused.
func TestAuditTime(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		end  bool
		want time.Time
	}{
		{"7d", false, now.Add(-7 * 24 * time.Hour)},
		{"90m", true, now.Add(-90 * time.Minute)},
		{"2026-12-01", false, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"2026-12-01", true, time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond)},
		{"2026-12-01T08:00:00+01:00", true, time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		got, err := auditTime(c.in, now, c.end)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("%q (end %v): %v %v, want %v", c.in, c.end, got, err, c.want)
		}
	}
	for _, bad := range []string{"yesterday", "-1h", "2026-13-01", "1 week"} {
		if _, err := auditTime(bad, now, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
