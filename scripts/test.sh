#!/usr/bin/env bash
# scripts/test.sh — everything `make test` runs: installs what is missing, lints, starts a
# throwaway redis-server on a free loopback port, runs unit, race, integration and end-to-end
# tests, and stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

need() { # need BINARY DEBIAN_PACKAGE
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2 (for $1)"
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null 2>&1 ||
		{ $sudo apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null; }
	command -v "$1" >/dev/null 2>&1 || { echo "cannot install $2" >&2; exit 1; }
}

need redis-server redis-server
need sipp sip-tester
need curl curl
GOBIN="$(go env GOPATH)/bin"
STATICCHECK="$GOBIN/staticcheck"
if [ ! -x "$STATICCHECK" ]; then
	log "installing staticcheck"
	GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

PIDS=()
TMP="$(mktemp -d -t sipedge-test.XXXXXX)"
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT

log "gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$bad" ] || { echo "gofmt would change: $bad" >&2; exit 1; }
log "go vet"
go vet ./...
log "staticcheck"
"$STATICCHECK" ./...

# A throwaway redis-server on a free loopback port (it exits at once if the port is taken).
for _ in $(seq 20); do
	port=$((20000 + RANDOM % 20000))
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
		>"$TMP/redis.log" 2>&1 &
	rpid=$!
	for _ in $(seq 50); do
		if redis-cli -p "$port" ping >/dev/null 2>&1; then break 2; fi
		kill -0 "$rpid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$rpid" 2>/dev/null || true
	wait "$rpid" 2>/dev/null || true
	rpid=""
done
[ -n "${rpid:-}" ] || { echo "could not start redis-server" >&2; cat "$TMP/redis.log" >&2; exit 1; }
PIDS+=("$rpid")
log "redis-server pid $rpid on 127.0.0.1:$port"

export SIPEDGE_TEST_REDIS="redis://127.0.0.1:$port/0"
export SIPEDGE_TEST_REDIS_BIN="$(command -v redis-server)"
export SIPEDGE_TEST_SIPP=1

log "go test -race (unit, integration, end-to-end)"
go test -race -count=1 -timeout 20m ./...

log "end-to-end: the built binary driven as a user would"
bash scripts/e2e.sh
log "all tests passed"
