package emulator

import (
	"sync"
	"time"
)

// limiter is Zulip's per-user sliding window: at most limit requests in
// any window. It keeps the times of the last limit requests in a ring,
// so each check is O(1). Its answers are those of Zulip's Redis rate
// limiter: Remaining counts the requests in the last window, Reset is
// when the newest of them leaves it (the whole window is free again), and
// a refusal's Retry-After is when the oldest leaves (one call is free).
type limiter struct {
	mu    sync.Mutex
	times []time.Time
	start int // index of the oldest kept time
	n     int // number of kept times
}

type rateResult struct {
	allowed    bool
	limit      int
	remaining  int
	reset      time.Time     // X-RateLimit-Reset: when every counted request has left the window
	retryAfter time.Duration // for 429s
}

func (l *limiter) take(now time.Time, limit int, window time.Duration) rateResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.times) != limit {
		l.times = make([]time.Time, limit)
		l.start, l.n = 0, 0
	}
	for l.n > 0 && !now.Before(l.times[l.start].Add(window)) {
		l.start = (l.start + 1) % limit
		l.n--
	}
	if l.n == limit {
		free := l.times[l.start].Add(window)
		return rateResult{allowed: false, limit: limit, remaining: 0, reset: free, retryAfter: free.Sub(now)}
	}
	l.times[(l.start+l.n)%limit] = now
	l.n++
	return rateResult{
		allowed:   true,
		limit:     limit,
		remaining: limit - l.n,
		reset:     now.Add(window),
	}
}

func (l *limiter) reset() {
	l.mu.Lock()
	l.times, l.start, l.n = nil, 0, 0
	l.mu.Unlock()
}
