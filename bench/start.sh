# Sourced by the bench scripts: builds Caddy from this checkout into a
# temporary folder, starts the emulated Zulip (upstream.Caddyfile, on http
# and https) and the targets (targets.Caddyfile) in two processes, waits
# until they answer, and makes a scoped key for the stream "general". Sets
# work, upstream_pid, targets_pid, ZWOP_BENCH_CA and ZWOP_BENCH_KEY;
# everything is stopped and removed on exit.
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
export XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config"

echo "building caddy..." >&2
go build -o "$work/caddy" ./cmd/caddy

export ZWOP_BENCH_STORE="$work/clients.json"
"$work/caddy" run --config bench/upstream.Caddyfile >"$work/upstream.log" 2>&1 &
pids+=($!)
upstream_pid=$!
# The upstream's https site has a certificate from Caddy's internal CA;
# the targets trust that CA's root, as an operator trusts a private Zulip.
export ZWOP_BENCH_CA="$XDG_DATA_HOME/caddy/pki/authorities/local/root.crt"
for _ in $(seq 100); do
	[ -s "$ZWOP_BENCH_CA" ] && curl -s -o /dev/null --cacert "$ZWOP_BENCH_CA" https://127.0.0.1:19443/ &&
		curl -s -o /dev/null --cacert "$ZWOP_BENCH_CA" https://127.0.0.1:19444/ &&
		curl -s -o /dev/null --cacert "$ZWOP_BENCH_CA" https://127.0.0.1:19445/ && break
	sleep 0.1
done
[ -s "$ZWOP_BENCH_CA" ] || { echo "the upstream made no CA; its log:" >&2; cat "$work/upstream.log" >&2; exit 1; }
export ZWOP_BENCH_EXTRA="${ZWOP_BENCH_EXTRA:-}"
"$work/caddy" run --config bench/targets.Caddyfile >"$work/targets.log" 2>&1 &
pids+=($!)
targets_pid=$!
for port in 19991 18080 18081 18082 18083 18084 18085 18086 18087 18088 18089; do
	for _ in $(seq 100); do
		curl -s -o /dev/null "localhost:$port/" && break
		sleep 0.1
	done
done
ZWOP_BENCH_KEY=$("$work/caddy" zulip-proxy add-client --store "$ZWOP_BENCH_STORE" --stream general 2>/dev/null | sed -n 's/^key: *//p')
export ZWOP_BENCH_KEY
# The :18088 target keeps its keys in Caddy's storage.
ZWOP_BENCH_STORAGE_KEY=$("$work/caddy" zulip-proxy add-client --config bench/storage.Caddyfile --stream general 2>/dev/null | sed -n 's/^key: *//p')
export ZWOP_BENCH_STORAGE_KEY
if [ -z "$ZWOP_BENCH_KEY" ]; then
	echo "could not make a key; the targets' log:" >&2
	cat "$work/targets.log" >&2
	exit 1
fi
sleep 1.5 # the running proxy picks the new key up within a second
