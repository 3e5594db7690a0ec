#!/usr/bin/env bash
# scripts/spectral.sh — lints the OpenAPI document the API serves at /v1/openapi.json
# (control/openapi.json, embedded and served byte for byte) with Stoplight spectral's
# spectral:oas ruleset as configured in .spectral.yaml. Any error or warning fails.
# spectral is installed with npm under a cache directory the first time
# (SIPEDGE_SPECTRAL_DIR, default next to Go's build cache); later runs need no network.
set -euo pipefail
cd "$(dirname "$0")/.."

SPECTRAL_VERSION=6.16.3
dir=${SIPEDGE_SPECTRAL_DIR:-$(dirname "$(go env GOCACHE)")/sipedge-spectral-$SPECTRAL_VERSION}
bin="$dir/node_modules/.bin/spectral"
if [ ! -x "$bin" ]; then
	command -v npm >/dev/null 2>&1 || {
		sudo=""
		[ "$(id -u)" = 0 ] || sudo="sudo"
		echo "== installing npm (for spectral)" >&2
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null 2>&1 ||
			{ $sudo apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null; }
	}
	echo "== installing @stoplight/spectral-cli@$SPECTRAL_VERSION under $dir" >&2
	mkdir -p "$dir"
	(cd "$dir" && npm install --silent --no-audit --no-fund --no-save "@stoplight/spectral-cli@$SPECTRAL_VERSION" >/dev/null)
fi
"$bin" lint --ruleset .spectral.yaml --fail-severity warn --format text control/openapi.json
