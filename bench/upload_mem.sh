#!/usr/bin/env bash
# Peak memory of the proxy's Caddy across large uploads: a 200 MiB
# upload_file and a 200 MiB send_message image must each grow the
# process's peak resident set (VmHWM) by less than 16 MiB, since the file
# is streamed to Zulip while it is read. The emulated Zulip runs in its
# own Caddy, so the copy it keeps is not counted. Needs curl.
#
#	bash bench/upload_mem.sh [MiB]
#
# Exits non-zero if a limit is passed.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-200}
limit_kib=$((16 * 1024))

. bench/start.sh
key=$ZWOP_BENCH_KEY
proxy_pid=$targets_pid

hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$proxy_pid/status"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status"; }

head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/big.bin"
# A small call of each kind first, so what is measured is the growth a
# large file causes, not the first use of each code path.
echo small >"$work/small.txt"
curl -sf -o /dev/null -H "X-API-key: $key" -F "file=@$work/small.txt" localhost:18080/upload_file
curl -sf -o /dev/null -H "X-API-key: $key" -F content=warm -F "image=@$work/small.txt" "localhost:18080/send_message?topic=mem"

fail=0
measure() {
	local what=$1
	shift
	local before after out
	before=$(hwm)
	out=$(curl -s -w '\n%{http_code} %{time_total}s' "$@")
	after=$(hwm)
	local code=${out##*$'\n'}
	case "$out" in *'"result":"success"'*) ;; *) echo "$what failed: $out" >&2; fail=1; return ;; esac
	local grew=$((after - before))
	printf '%-34s %s, peak RSS %6d KiB -> %6d KiB: grew %5d KiB (limit %d KiB)\n' \
		"$what" "$code" "$before" "$after" "$grew" "$limit_kib"
	if [ "$grew" -ge "$limit_kib" ]; then fail=1; fi
}
echo "file: $size_mib MiB; proxy's Caddy at start: RSS $(rss) KiB"
measure "upload_file ($size_mib MiB)" -H "X-API-key: $key" -F "file=@$work/big.bin" localhost:18080/upload_file
measure "send_message image ($size_mib MiB)" -H "X-API-key: $key" -F content=scan -F "image=@$work/big.bin" "localhost:18080/send_message?topic=mem"
exit $fail
