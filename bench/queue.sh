#!/usr/bin/env bash
# Queued delivery, measured end to end through a real Caddy and the
# emulated Zulip over https (bench/start.sh's :18089 in front of :19445,
# which allows the bot 100 calls in any 5 s):
#
#  1. Drain pace: a script fires a burst of sends with
#     "Prefer: respond-async"; what Zulip cannot take at once is queued
#     (202) and the deliverer sends it within the bot's budget. The time
#     from the burst to the last delivery is set beside the least time
#     Zulip's limit allows for that many calls: N calls need at least
#     floor((N-1)/L) windows (L at once, then L more each window), and
#     N/L windows at Zulip's steady pace.
#  2. Memory: with Zulip down, 10,000 sends are queued; the Caddy's
#     resident memory (anonymous: heap and stacks; file: the database's
#     pages the kernel maps in, which it can drop) and Go's heap in use
#     before and after, and the queue's size on disk.
#
#	bash bench/queue.sh [burst] [queued]	# defaults 1000 10000
#
# Needs curl (7.66 or later, for --parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${1:-1000}
queued=${2:-10000}
limit=100 window=5 # :19445's rate_limit

. bench/start.sh
key=$ZWOP_BENCH_KEY
pid=$targets_pid
zulip=https://127.0.0.1:19445

status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
metric() { curl -s localhost:12019/metrics | awk -v m="$1" '$1 == m {print $2; f=1} END {if (!f) print 0}'; }
# Go's heap in use after a collection (pprof's gc=1 runs one first).
heap_kib() {
	curl -s -o /dev/null "localhost:12019/debug/pprof/heap?gc=1"
	metric go_memstats_heap_inuse_bytes | awk '{printf "%.0f", $1 / 1024}'
}
now() { date +%s.%N; }
# sends N TOPIC: N sends at once (8 connections), "Prefer: respond-async";
# prints how many of each status came back.
sends() {
	curl -s -Z --parallel-max 8 -o /dev/null -w '%{http_code}\n' \
		-H "X-API-key: $key" -H "Prefer: respond-async" -d "content=a queued send of the bench" \
		"localhost:18089/send_message?topic=$2-[1-$1]" 2>/dev/null | sort | uniq -c | awk '{printf "%s x%s  ", $2, $1} END {print ""}'
}

# A send to warm the path (and learn the bot's budget), then a pause so
# the burst meets an empty window.
sends 1 warm >/dev/null
sleep $((window + 1))
delivered0=$(metric caddy_zulip_proxy_queue_delivered_total | awk '{printf "%.0f", $1}')
echo "1. drain: a burst of $burst sends; Zulip allows $limit calls in any ${window}s"
t0=$(now)
answers=$(sends "$burst" burst)
t1=$(now)
echo "   answers: $answers(in $(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)") s)"
n202=$(grep -o '202 x[0-9]*' <<<"$answers" | cut -dx -f2 || true)
n202=${n202:-0}
target=$((delivered0 + n202))
while [ "$(printf '%.0f' "$(metric caddy_zulip_proxy_queue_delivered_total)")" -lt "$target" ]; do
	sleep 0.1
	if [ "$(echo "$(now) - $t0 > 20 * $burst / $limit * $window" | bc -l)" = 1 ]; then
		echo "   the queue did not drain; delivered $(metric caddy_zulip_proxy_queue_delivered_total), failed:" >&2
		curl -s localhost:12019/metrics | grep queue_failed >&2 || true
		exit 1
	fi
done
t2=$(now)
took=$(echo "$t2 - $t0" | bc -l)
least=$(( (burst - 1) / limit * window ))
steady=$(echo "$burst / $limit * $window" | bc -l)
printf '   %d queued, all delivered; burst to last delivery %.1f s\n' "$n202" "$took"
printf '   least time Zulip allows %d s: ratio %.3f;  at its steady pace %.0f s: ratio %.3f\n' \
	"$least" "$(echo "$took / $least" | bc -l)" "$steady" "$(echo "$took / $steady" | bc -l)"
failed=$(curl -s localhost:12019/metrics | awk '$1 ~ /^caddy_zulip_proxy_queue_failed_total/ {s += $2} END {print s + 0}')
refused=$(curl -s --cacert "$ZWOP_BENCH_CA" "$zulip/_emulator/requests" | { grep -o '"status":429' || true; } | wc -l)
echo "   failed: $failed; Zulip's 429s: $refused"

echo "2. memory: Zulip down, $queued sends queued"
curl -sf -o /dev/null --cacert "$ZWOP_BENCH_CA" -X POST "$zulip/_emulator/down"
sends 100 warm-down >/dev/null
sleep 2
a0=$(status RssAnon) f0=$(status RssFile) h0=$(heap_kib)
t0=$(now)
answers=$(sends "$queued" mem)
t1=$(now)
sleep 2
a1=$(status RssAnon) f1=$(status RssFile) h1=$(heap_kib)
db=$(du -k "${ZWOP_BENCH_STORE%.json}.outbox.db" | cut -f1)
echo "   answers: $answers(in $(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)") s)"
echo "   queued now (caddy_zulip_proxy_queue_sends): $(metric 'caddy_zulip_proxy_queue_sends{store="'"$ZWOP_BENCH_STORE"'"}')"
printf '   RssAnon %6d KiB -> %6d KiB: grew %5d KiB (%.0f bytes a queued send)\n' "$a0" "$a1" $((a1 - a0)) "$(echo "($a1 - $a0) * 1024 / $queued" | bc -l)"
printf '   RssFile %6d KiB -> %6d KiB: grew %5d KiB (the database file is %d KiB)\n' "$f0" "$f1" $((f1 - f0)) "$db"
printf '   Go heap in use %6d KiB -> %6d KiB: grew %5d KiB\n' "$h0" "$h1" $((h1 - h0))
