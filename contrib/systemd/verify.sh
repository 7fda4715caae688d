#!/usr/bin/env bash
# Checks contrib/systemd/caddy.service: systemd-analyze verify accepts it
# (with ExecStart pointed at a Caddy built from this checkout, since
# verify wants the binary to exist), it never prints the environment
# (--environ), and it hands the bot's key over where the README's
# Caddyfile reads it. Needs systemd-analyze (Debian: apt-get install
# systemd). CI runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
unit=contrib/systemd/caddy.service
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if grep -v '^#' "$unit" | grep -q -- '--environ'; then
	echo "$unit: --environ prints every environment variable into the journal" >&2
	exit 1
fi
grep -q '^LoadCredential=zulip-bot-key:/etc/caddy/zulip-bot-key$' "$unit" ||
	{ echo "$unit: no LoadCredential for the bot's key" >&2; exit 1; }
grep -q 'api_key {file./run/credentials/caddy.service/zulip-bot-key}' README.md ||
	{ echo "README.md: the Caddyfile does not read the key where $unit puts it" >&2; exit 1; }

go build -o "$work/caddy" ./cmd/caddy
sed "s#/usr/bin/caddy#$work/caddy#g" "$unit" >"$work/caddy.service"
out=$(systemd-analyze verify "$work/caddy.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
	echo "systemd-analyze verify warns:" >&2
	echo "$out" >&2
	exit 1
fi
echo "$unit: systemd-analyze verify passes"
