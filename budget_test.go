package zulipproxy

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// countingZulip counts one user's calls as Zulip's Redis rate limiter
// does (a sliding log of the last limit calls) and answers with its
// headers: Remaining, Reset when the newest call leaves the window, and
// on a refusal 429 with Retry-After when the oldest does.
type countingZulip struct {
	limit  int
	window time.Duration
	calls  []time.Time
	// refused counts the 429s it answered.
	refused int
}

func (z *countingZulip) answer(now time.Time) *zulip.Response {
	kept := z.calls[:0]
	for _, t := range z.calls {
		if now.Sub(t) < z.window {
			kept = append(kept, t)
		}
	}
	z.calls = kept
	h := http.Header{"X-Ratelimit-Limit": {strconv.Itoa(z.limit)}}
	if len(z.calls) >= z.limit {
		z.refused++
		free := z.calls[0].Add(z.window)
		h["X-Ratelimit-Remaining"] = []string{"0"}
		h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(free.Unix(), 10)}
		h["Retry-After"] = []string{strconv.FormatFloat(free.Sub(now).Seconds(), 'f', -1, 64)}
		return &zulip.Response{Status: http.StatusTooManyRequests, Header: h}
	}
	z.calls = append(z.calls, now)
	h["X-Ratelimit-Remaining"] = []string{strconv.Itoa(z.limit - len(z.calls))}
	h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(now.Add(z.window).Unix(), 10)}
	return &zulip.Response{Status: http.StatusOK, Header: h}
}

// instance is one proxy's budget for the bot in front of a Zulip.
type instance struct {
	bg *budget
	z  *countingZulip
}

// request is one request of key, admitted or not, making calls calls to
// Zulip when admitted (reserving cost). It returns the verdict.
func (in instance) request(key string, cost, calls int, now time.Time) budgetVerdict {
	sp := &spend{key: key}
	v := in.bg.admit(context.Background(), sp, cost, now)
	if v.ok {
		for range calls {
			in.bg.observe(sp, zulip.Call{Sent: true, Response: in.z.answer(now)}, now)
		}
	}
	in.bg.settle(sp)
	return v
}

// burst sends n requests of one call for key at now, and counts those
// admitted.
func (in instance) burst(key string, n int, now time.Time) (ok int, last budgetVerdict) {
	for range n {
		if last = in.request(key, 1, 1, now); last.ok {
			ok++
		}
	}
	return ok, last
}

// learned is an instance whose bot has answered once (a call of the
// proxy's own at t0), so its budget is known.
func learned(limit int, window time.Duration, t0 time.Time) instance {
	in := instance{bg: newBudget(), z: &countingZulip{limit: limit, window: window}}
	in.bg.observe(nil, zulip.Call{Sent: true, Response: in.z.answer(t0)}, t0)
	return in
}

var t0 = time.Unix(1_800_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestBudgetShares(t *testing.T) {
	const sec = time.Second
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a lone key among 40 idle gets half the window at once, most of it spread out", func(t *testing.T) {
			in := learned(200, time.Minute, t0)
			// Forty keys called in the last window and are idle now.
			for i := range 40 {
				in.request("idle"+strconv.Itoa(i), 1, 1, at(sec))
			}
			start := 61 * sec
			if ok, _ := in.burst("busy", 200, at(start)); ok != 100 {
				t.Errorf("at once: %d calls, want half the window, 100", ok)
			}
			more := 0
			for s := 1; s < 60; s++ {
				n, _ := in.burst("busy", 10, at(start+time.Duration(s)*sec))
				more += n
			}
			if total := 100 + more; total < 190 || total > 199 {
				t.Errorf("spread over the window: %d calls, want most of 200 with one left for a key that starts", total)
			}
			if ok, _ := in.burst("late", 1, at(start+59*sec+900*time.Millisecond)); ok != 1 {
				t.Error("a key that starts calling at the end of the window found nothing")
			}
		}},
		{"two busy keys get their equal part, one part held back", func(t *testing.T) {
			in := learned(20, 10*sec, t0)
			now := at(11 * sec)
			got := map[string]int{}
			for range 8 {
				for _, k := range []string{"a", "b"} {
					if in.request(k, 1, 1, now).ok {
						got[k]++
					}
				}
			}
			if got["a"] != 6 || got["b"] != 6 {
				t.Errorf("calls admitted: %v, want 6 each", got)
			}
		}},
		{"a noisy key leaves three keys that start calling two calls each", func(t *testing.T) {
			in := learned(20, 10*sec, t0)
			now := at(11 * sec)
			if ok, v := in.burst("noisy", 40, now); ok != 10 || v.reason != "bot_budget" || v.wait <= 0 || v.wait >= 10*sec {
				t.Errorf("noisy: %d admitted, last verdict %+v; want 10 and a wait inside the window", ok, v)
			}
			got := map[string]int{}
			for range 3 {
				for _, k := range []string{"q1", "q2", "q3"} {
					if in.request(k, 1, 1, now.Add(100*time.Millisecond)).ok {
						got[k]++
					}
				}
			}
			if got["q1"] != 2 || got["q2"] != 2 || got["q3"] != 2 {
				t.Errorf("quiet keys: %v, want 2 each", got)
			}
			if in.z.refused != 0 {
				t.Errorf("Zulip refused %d calls", in.z.refused)
			}
		}},
		{"an idle spell then a burst: the window is Zulip's, not a second", func(t *testing.T) {
			in := learned(20, 10*sec, t0)
			start := 25 * sec // idle since t0
			ok, v := in.burst("noisy", 20, at(start))
			if ok != 10 {
				t.Errorf("first burst: %d, want 10", ok)
			}
			// The noisy key obeys Retry-After, again and again, to the
			// end of the window.
			now, end := at(start), at(start+10*sec)
			retries := 0
			for now.Add(v.wait).Before(end.Add(-10 * time.Millisecond)) {
				now = now.Add(v.wait)
				var n int
				n, v = in.burst("noisy", 20, now)
				ok += n
				retries++
			}
			t.Logf("the noisy key: %d calls in %d bursts", ok, retries+1)
			if ok >= 20 {
				t.Errorf("the noisy key made %d calls in one window of 20", ok)
			}
			if n, _ := in.burst("quiet", 1, now.Add(time.Millisecond)); n != 1 {
				t.Error("a key that starts calling after the noisy one's retries found nothing")
			}
			if in.z.refused != 0 {
				t.Errorf("Zulip refused %d calls", in.z.refused)
			}
		}},
		{"a 429 mid-window pauses the bot until Zulip's Retry-After", func(t *testing.T) {
			in := learned(20, 10*sec, t0)
			// Another program, with the bot's own key, spends Zulip's
			// budget behind the proxy's back.
			for range 18 {
				in.z.answer(at(2 * sec))
			}
			if v := in.request("a", 1, 2, at(3*sec)); !v.ok {
				t.Fatalf("first call refused: %+v", v)
			}
			if in.z.refused != 1 {
				t.Fatalf("Zulip refused %d, want the second call", in.z.refused)
			}
			v := in.request("b", 1, 1, at(4*sec))
			if v.ok || v.reason != "zulip_backoff" {
				t.Errorf("another key during Zulip's Retry-After: %+v", v)
			}
			if v.wait <= 0 || v.wait > 9*sec {
				t.Errorf("wait %s, want what is left of Zulip's Retry-After", v.wait)
			}
			if v := in.request("b", 1, 1, at(4*sec).Add(v.wait)); !v.ok {
				t.Errorf("after Retry-After: %+v", v)
			}
		}},
		{"every call to Zulip is charged, the reserved ones given back", func(t *testing.T) {
			in := learned(13, time.Minute, t0)
			now := at(61 * sec)
			// A send with a file and a field refused afterwards: the
			// upload and the clean-up's two calls.
			sent := 0
			for range 5 {
				if in.request("a", 2, 3, now).ok {
					sent++
				}
			}
			if sent != 2 || in.z.refused != 0 {
				t.Errorf("%d requests of 3 calls admitted, Zulip refused %d; want 2 and 0", sent, in.z.refused)
			}
			// A request refused before it reached Zulip costs nothing.
			in2 := learned(13, time.Minute, t0)
			for range 20 {
				in2.request("b", 2, 0, now)
			}
			if ok, _ := in2.burst("b", 13, now); ok != 6 {
				t.Errorf("after 20 requests that made no call: %d admitted, want the key's whole part, 6", ok)
			}
		}},
		{"two instances read the same Zulip counters", func(t *testing.T) {
			z := &countingZulip{limit: 20, window: 10 * sec}
			one, two := instance{bg: newBudget(), z: z}, instance{bg: newBudget(), z: z}
			one.bg.observe(nil, zulip.Call{Sent: true, Response: z.answer(t0)}, t0)
			two.bg.observe(nil, zulip.Call{Sent: true, Response: z.answer(t0)}, t0)
			now := at(11 * sec)
			got := map[string]int{}
			for range 20 {
				if one.request("a", 1, 1, now).ok {
					got["a"]++
				}
				if two.request("b", 1, 1, now).ok {
					got["b"]++
				}
			}
			if z.refused != 0 || got["a"] == 0 || got["b"] == 0 {
				t.Errorf("admitted %v, Zulip refused %d", got, z.refused)
			}
			// What one instance spent, the other sees in Zulip's answers.
			if n := got["a"] + got["b"]; n > 20 {
				t.Errorf("%d calls admitted in a window of 20", n)
			}
			if ok, _ := one.burst("c", 1, now); ok != 1 {
				t.Error("a key that starts calling found nothing")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, c.run)
	}
}

// Until Zulip has answered once the budget is unknown: one call goes out
// to learn it; a Zulip without rate-limit headers is not limited; only
// the bot's own calls teach the budget anything.
func TestBudgetLearning(t *testing.T) {
	bg := newBudget()
	sp := &spend{key: "a"}
	if v := bg.admit(context.Background(), sp, 1, t0); !v.ok || !sp.probe {
		t.Fatalf("first call: %+v probe %v", v, sp.probe)
	}
	// Nothing reached Zulip: the next call learns instead.
	bg.observe(sp, zulip.Call{Sent: false}, t0)
	bg.settle(sp)
	sp2 := &spend{key: "b"}
	if v := bg.admit(context.Background(), sp2, 1, t0); !v.ok || !sp2.probe {
		t.Fatalf("after a probe that reached nothing: %+v probe %v", v, sp2.probe)
	}
	// An anonymous 429 (server_settings) neither teaches nor pauses.
	z := &countingZulip{limit: 1, window: time.Minute}
	z.answer(t0)
	anon := z.answer(t0)
	bg.observe(nil, zulip.Call{Anonymous: true, Sent: true, Response: anon}, t0)
	if bg.known || !bg.blocked.IsZero() {
		t.Errorf("an anonymous answer was learned from: known %v blocked %v", bg.known, bg.blocked)
	}
	// An answer without rate-limit headers: no limit to share.
	bg.observe(sp2, zulip.Call{Sent: true, Response: &zulip.Response{Status: 200, Header: http.Header{}}}, t0)
	bg.settle(sp2)
	for i := range 1000 {
		if v := bg.admit(context.Background(), &spend{key: "a"}, 1, t0); !v.ok {
			t.Fatalf("call %d to a Zulip without limits refused: %+v", i, v)
		}
	}
}

// A request that outlives a window gives back only what it took from the
// current one, and its calls still to come count in the new window.
func TestBudgetRequestAcrossWindows(t *testing.T) {
	in := learned(20, 10*time.Second, t0)
	sp := &spend{key: "a"}
	now := at(11 * time.Second)
	if v := in.bg.admit(context.Background(), sp, 2, now); !v.ok {
		t.Fatal(v)
	}
	later := at(22 * time.Second) // the next window
	if v := in.bg.more(sp, 1, later); !v.ok {
		t.Fatal(v)
	}
	if u := in.bg.used["a"]; u != 3 {
		t.Errorf("in the new window: %d calls charged to a, want its 3 to come", u)
	}
	in.bg.observe(sp, zulip.Call{Sent: true, Response: in.z.answer(later)}, later)
	in.bg.settle(sp)
	if u, p := in.bg.used["a"], in.bg.pending; u != 1 || p != 0 {
		t.Errorf("after the request: used %d pending %d, want 1 and 0", u, p)
	}
}

// A backlog drained by one key as fast as the budget lets it (a queue's
// deliverer: each refusal waits the time the budget names) goes at
// Zulip's pace: Zulip counts a sliding window, so a call is free again
// when the call a window before it leaves, not when the whole window is.
func TestBudgetDrainsAtZulipsPace(t *testing.T) {
	for _, c := range []struct {
		limit  int
		window time.Duration
	}{{100, 5 * time.Second}, {200, time.Minute}, {20, 10 * time.Second}} {
		in := learned(c.limit, c.window, t0)
		now := at(2 * c.window) // the learning call long gone
		start := now
		const n = 1000
		for sent := 0; sent < n; {
			if v := in.request("drain", 1, 1, now); v.ok {
				sent++
			} else {
				now = now.Add(v.wait)
			}
		}
		took := now.Sub(start)
		pace := time.Duration(n/c.limit) * c.window // Zulip's steady pace: a limit's worth a window
		ratio := float64(took) / float64(pace)
		t.Logf("%d calls at %d per %v: %v, %.3f times Zulip's pace", n, c.limit, c.window, took, ratio)
		if ratio > 1.05 || in.z.refused > 0 {
			t.Errorf("%d calls at %d per %v took %v, %.2f times the %v Zulip's pace allows; Zulip refused %d",
				n, c.limit, c.window, took, ratio, pace, in.z.refused)
		}
	}
}
