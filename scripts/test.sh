#!/usr/bin/env bash
# scripts/test.sh — everything `make test` runs: installs what is missing, lints, starts a
# throwaway redis-server on a free loopback port (scripts/with-redis.sh), runs unit, race,
# integration and end-to-end tests, and stops what it started (by PID).
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
need python3 python3
need ss iproute2
need svwar sipvicious
need chromium chromium
GOBIN="$(go env GOPATH)/bin"
STATICCHECK="$GOBIN/staticcheck"
if [ ! -x "$STATICCHECK" ]; then
	log "installing staticcheck"
	GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

log "gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$bad" ] || { echo "gofmt would change: $bad" >&2; exit 1; }
log "go vet"
go vet ./...
log "staticcheck"
"$STATICCHECK" ./...
log "spectral (OpenAPI lint)"; bash scripts/spectral.sh

export SIPEDGE_TEST_SIPP=1
export SIPEDGE_TEST_BROWSER=1 # the web console in headless Chromium (cmd/sipedge TestConsoleBrowser)

log "go test -race (unit, integration, end-to-end)"
bash scripts/with-redis.sh go test -race -count=1 -timeout 20m ./...

log "end-to-end: the built binary driven as a user would"
bash scripts/e2e.sh
log "all tests passed"
