#!/usr/bin/env bash
# An experiment, not the product: the proxy with fasthttp's client behind
# the zulip package's RoundTripper instead of net/http's Transport, each
# beside Caddy's reverse_proxy in its own run of bench/run.sh. It answers
# what issue #9's CPU floors would need: net/http is what the issue asks
# for, and the one transport the module ships.
#
#	bash bench/experiments/fasthttp.sh [rounds] [seconds]
#
# Works in a throwaway git worktree of HEAD (fasthttp.patch applied, the
# module fetched from the Go module proxy); this checkout is not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-6}
tree=$(mktemp -d)
git worktree add -q --detach "$tree" HEAD
trap 'git worktree remove --force "$tree"' EXIT
cd "$tree"
git apply bench/experiments/fasthttp.patch
go get github.com/valyala/fasthttp@v1.78.0 >/dev/null 2>&1
export ZWOP_BENCH_TARGETS="proxy reverse_proxy proxy_tls rp_tls"
echo "== the proxy's calls through fasthttp"
ZWOP_EXPERIMENT_FASTHTTP=1 bash bench/run.sh "$rounds" "$secs" 32 2>/dev/null | sed -n '/^target/,/https, h2/p'
echo "== the proxy's calls through net/http (what ships)"
bash bench/run.sh "$rounds" "$secs" 32 2>/dev/null | sed -n '/^target/,/https, h2/p'
