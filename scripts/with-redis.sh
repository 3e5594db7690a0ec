#!/usr/bin/env bash
# scripts/with-redis.sh CMD [ARGS...] — runs CMD with a throwaway redis-server on a free
# loopback port (SIPEDGE_TEST_REDIS=redis://127.0.0.1:PORT/0, SIPEDGE_TEST_REDIS_BIN), then
# stops that redis-server by its PID, whatever CMD did.
set -euo pipefail
command -v redis-server >/dev/null || { echo "with-redis: needs redis-server (apt-get install redis-server)" >&2; exit 1; }
dir="$(mktemp -d -t sipedge-redis.XXXXXX)"
rpid=""
cleanup() {
	[ -n "$rpid" ] && { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; }
	rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 20); do
	port=$((20000 + RANDOM % 20000))
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
	rpid=$!
	for _ in $(seq 50); do
		redis-cli -p "$port" ping >/dev/null 2>&1 && break 2
		kill -0 "$rpid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$rpid" 2>/dev/null || true
	wait "$rpid" 2>/dev/null || true
	rpid=""
done
[ -n "$rpid" ] || { echo "with-redis: could not start redis-server" >&2; cat "$dir/redis.log" >&2; exit 1; }
echo "== redis-server pid $rpid on 127.0.0.1:$port" >&2
export SIPEDGE_TEST_REDIS="redis://127.0.0.1:$port/0"
SIPEDGE_TEST_REDIS_BIN="$(command -v redis-server)"
export SIPEDGE_TEST_REDIS_BIN
"$@"
