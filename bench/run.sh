#!/usr/bin/env bash
# Load test: the proxy's send_message side by side with Caddy's own
# reverse_proxy, to a Zulip on plain http and on https (HTTP/2 offered, as
# a real Zulip is), with Caddy answering by itself (respond) and the
# upstream alone, in one run on loopback, with ratios. Needs wrk (Debian:
# apt-get install wrk).
#
#	bash bench/run.sh [rounds] [seconds] [connections]
#
# Each round runs every target once, in turn; the table shows each
# target's median over the rounds. ZWOP_BENCH_TARGETS="proxy_tls rp_tls"
# runs a subset. Set ZWOP_BENCH_PROFILE=1 to also take a 10 s CPU profile
# of the targets' Caddy under one target's load: ZWOP_BENCH_PROFILE_TARGET,
# by default the proxy over TLS (proxy_tls).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-10}
conns=${3:-32}
threads=2

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
. bench/start.sh

# A sanity check: each target answers success before it is measured.
check() {
	local out
	out=$(curl -s "$@")
	case "$out" in *'"result":"success"'*) ;; *) echo "target not ready: $* -> $out" >&2; exit 1 ;; esac
}
check -H "X-API-key: $ZWOP_BENCH_KEY" -d content=warm "localhost:18080/send_message?topic=bench"
check -H "X-API-key: $ZWOP_BENCH_KEY" -d content=warm "localhost:18083/send_message?topic=bench"
check -H "X-API-key: $ZWOP_BENCH_KEY" -d content=warm "localhost:18087/send_message?topic=bench"
for port in 18081 18084 18085; do
	check -u demo-bot@zulip.example.com:demobotapikey0123456789abcdefghi -d type=stream -d to=1 -d topic=bench -d content=warm "localhost:$port/api/v1/messages"
done
check -X POST localhost:18082/api/v1/messages
check -u demo-bot@zulip.example.com:demobotapikey0123456789abcdefghi -d type=stream -d to=1 -d topic=bench -d content=warm localhost:19991/api/v1/messages

declare -A url=(
	[proxy]="http://127.0.0.1:18080"
	[reverse_proxy]="http://127.0.0.1:18081"
	[respond]="http://127.0.0.1:18082"
	[proxy_tls]="http://127.0.0.1:18083"
	[rp_tls]="http://127.0.0.1:18084"
	[rp_tls_h1]="http://127.0.0.1:18085"
	[proxy_rl]="http://127.0.0.1:18086"
	[proxy_budget]="http://127.0.0.1:18087"
	[proxy_idem]="http://127.0.0.1:18083"
	[proxy_rid]="http://127.0.0.1:18083"
	[proxy_idem_storage]="http://127.0.0.1:18088"
	[proxy_rid_storage]="http://127.0.0.1:18088"
	[proxy_tls_storage]="http://127.0.0.1:18088"
	[upstream]="http://127.0.0.1:19991"
)
declare -A script=([proxy]=bench/proxy.lua [proxy_tls]=bench/proxy.lua [proxy_rl]=bench/proxy.lua [proxy_budget]=bench/proxy.lua
	[proxy_idem]=bench/proxy_idem.lua [proxy_rid]=bench/proxy_idem.lua [proxy_idem_storage]=bench/proxy_idem.lua [proxy_rid_storage]=bench/proxy_idem.lua [proxy_tls_storage]=bench/proxy.lua)
read -r -a order <<<"${ZWOP_BENCH_TARGETS:-proxy reverse_proxy proxy_tls rp_tls rp_tls_h1 respond upstream}"

# cpu PID: the process's user+system CPU so far, in clock ticks. Divided
# by the requests served, it says what each request cost each process,
# a figure that holds on a shared, noisy machine where req/s wanders.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
per_req() { awk -v d="$1" -v n="$2" -v hz="$hz" 'BEGIN {printf "%.1f", (n > 0 ? d / hz / n * 1e6 : 0)}'; }

for r in $(seq "$rounds"); do
	for t in "${order[@]}"; do
		c0=$(cpu "$targets_pid") u0=$(cpu "$upstream_pid")
		key=$ZWOP_BENCH_KEY
		case "$t" in *_storage) key=$ZWOP_BENCH_STORAGE_KEY ;; esac
		header=Idempotency-Key
		case "$t" in proxy_rid*) header=X-Request-Id ;; esac
		ZWOP_BENCH_KEY=$key ZWOP_BENCH_HEADER=$header wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "${script[$t]:-bench/zulip.lua}" "${url[$t]}" >"$work/$t.$r" 2>&1
		c1=$(cpu "$targets_pid") u1=$(cpu "$upstream_pid")
		n=$(awk '/requests in/ {print $1}' "$work/$t.$r")
		rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$t.$r")
		p50=$(awk '$1=="50%" {print $2}' "$work/$t.$r")
		p99=$(awk '$1=="99%" {print $2}' "$work/$t.$r")
		errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/$t.$r" | tr '\n' ' ')
		cus=$(per_req $((c1 - c0)) "$n") uus=$(per_req $((u1 - u0)) "$n")
		echo "$t $rps $p50 $p99 $cus $uus $errs" >>"$work/results"
		echo "round $r: $t ${rps} req/s p50 $p50 p99 $p99 caddy ${cus}us/req upstream ${uus}us/req $errs" >&2
	done
done

if [ "${ZWOP_BENCH_PROFILE:-0}" = 1 ]; then
	pt=${ZWOP_BENCH_PROFILE_TARGET:-proxy_tls}
	key=$ZWOP_BENCH_KEY
	case "$pt" in *_storage) key=$ZWOP_BENCH_STORAGE_KEY ;; esac
	header=Idempotency-Key
	case "$pt" in proxy_rid*) header=X-Request-Id ;; esac
	ZWOP_BENCH_KEY=$key ZWOP_BENCH_HEADER=$header wrk -t"$threads" -c"$conns" -d15s -s "${script[$pt]:-bench/proxy.lua}" "${url[$pt]}" >/dev/null 2>&1 &
	sleep 2
	curl -s -o bench/proxy.cpu.pprof "localhost:12019/debug/pprof/profile?seconds=10"
	wait $! || true
	echo "CPU profile: bench/proxy.cpu.pprof (go tool pprof -top $work/caddy bench/proxy.cpu.pprof)" >&2
	go tool pprof -top -nodecount=35 "$work/caddy" bench/proxy.cpu.pprof 2>/dev/null | head -45 >&2 || true
fi

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A med
for t in "${order[@]}"; do
	med[$t]=$(awk -v t="$t" '$1==t {print $2}' "$work/results" | median)
done
echo
echo "wrk -t$threads -c$conns -d${secs}s, $rounds rounds, median req/s ($(nproc) cores, $(date -u +%Y-%m-%d))"
echo "CPU columns: microseconds of CPU per request in the targets' Caddy and in the upstream's (median)"
printf '%-14s %12s %10s %10s %12s %12s\n' target "req/s" "p50" "p99" "caddy us/req" "upstr us/req"
for t in "${order[@]}"; do
	line=$(awk -v t="$t" '$1==t' "$work/results" | sort -k2 -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
	ccpu=$(awk -v t="$t" '$1==t {print $5}' "$work/results" | median)
	ucpu=$(awk -v t="$t" '$1==t {print $6}' "$work/results" | median)
	[ "$t" = upstream ] && ccpu=-
	printf '%-14s %12s %10s %10s %12s %12s\n' "$t" "${med[$t]}" "$(echo "$line" | awk '{print $3}')" "$(echo "$line" | awk '{print $4}')" "$ccpu" "$ucpu"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf (a > 0 && b > 0 ? "%.2f" : "-"), (b > 0 ? a/b : 0)}'; }
declare -A cpu
for t in "${order[@]}"; do
	cpu[$t]=$(awk -v t="$t" '$1==t {print $5}' "$work/results" | median)
done
echo
echo "throughput                         CPU per request"
echo "proxy / reverse_proxy (http)        $(ratio "${med[proxy]:-0}" "${med[reverse_proxy]:-0}")   $(ratio "${cpu[proxy]:-0}" "${cpu[reverse_proxy]:-0}")"
echo "proxy_tls / rp_tls (https, h2)      $(ratio "${med[proxy_tls]:-0}" "${med[rp_tls]:-0}")   $(ratio "${cpu[proxy_tls]:-0}" "${cpu[rp_tls]:-0}")"
echo "proxy_tls / rp_tls_h1 (https, 1.1)  $(ratio "${med[proxy_tls]:-0}" "${med[rp_tls_h1]:-0}")   $(ratio "${cpu[proxy_tls]:-0}" "${cpu[rp_tls_h1]:-0}")"
echo "proxy with rate_limit / without       $(ratio "${med[proxy_rl]:-0}" "${med[proxy]:-0}")   $(ratio "${cpu[proxy_rl]:-0}" "${cpu[proxy]:-0}")"
echo "fair share learned / none (https)     $(ratio "${med[proxy_budget]:-0}" "${med[proxy_tls]:-0}")   $(ratio "${cpu[proxy_budget]:-0}" "${cpu[proxy_tls]:-0}")"
# An Idempotency-Key's cost is read against proxy_rid (the same requests
# with an ignored header) where that ran; the median of the rounds' own
# ratios pairs each round's two targets, run one after the other, and so
# holds better than the ratio of medians on a machine whose load wanders.
paired() {
	awk -v a="$1" -v b="$2" '$1==a {x[++i]=$5} $1==b {y[++j]=$5} END {for (k=1; k<=i && k<=j; k++) if (y[k] > 0) print x[k]/y[k]}' "$work/results" |
		sort -n | awk '{r[NR]=$1} END {if (NR) printf "%.2f (rounds %.2f to %.2f)", (NR%2 ? r[(NR+1)/2] : (r[NR/2]+r[NR/2+1])/2), r[1], r[NR]; else printf "-"}'
}
for st in "" _storage; do
	base=proxy_rid$st
	[ -n "${cpu[$base]:-}" ] || base=proxy_tls$st
	label="file store"
	[ -n "$st" ] && label="Caddy storage"
	echo "Idempotency-Key / none ($label, against $base)    $(ratio "${med[proxy_idem$st]:-0}" "${med[$base]:-0}")   $(ratio "${cpu[proxy_idem$st]:-0}" "${cpu[$base]:-0}")   paired: $(paired "proxy_idem$st" "$base")"
done
echo "proxy / respond                     $(ratio "${med[proxy]:-0}" "${med[respond]:-0}")"
echo "proxy / upstream alone              $(ratio "${med[proxy]:-0}" "${med[upstream]:-0}")"
