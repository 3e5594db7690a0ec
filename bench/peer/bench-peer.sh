#!/usr/bin/env bash
# bench-peer.sh - `make bench-peer`: sipedge and Kamailio side by side, in one run on this machine,
# on the SIPp ladder of bench/peer (README.md there). Installs what is missing (kamailio,
# sip-tester, tcpdump, perl, iproute2, curl; needs root), builds sipedge, then per configuration
# the deny check, the fixed rate (latency, idle CPU) and the ladder:
#   Kamailio with KAM_LIST_SIZES entries (10), sipedge with LIST_SIZES entries (10000 10),
# sipedge at its default flags plus SIPEDGE_ARGS. Writes bench/results/peer-<date>.md (tables,
# chart, the harness's own report), .svg (the chart) and .tsv (every run, machine-readable), and
# copies the chart to bench/results/peer-latest.svg.
#
#   make bench-peer                         # full: 45 s steps, about 30 minutes on 2 vCPUs
#   QUICK=1 make bench-peer                 # smoke: 10 s steps, 3 rates, about 10 minutes
#   DURATION=20 RATES="1000 2000 3000" LIST_SIZES=10000 SIPEDGE_ARGS="--udp-readers 2" make bench-peer
#   REPORT_FROM=/tmp/kept bench/peer/bench-peer.sh   # only the report, from a KEEP=/tmp/kept run
#
# Loopback only (127.0.0.0/8). Every process it starts is stopped by PID (harness.sh).
set -euo pipefail

# Everything is in functions, run from the last line: bash has read the whole file before it
# starts, so editing it during a 30-minute run cannot break that run.

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/peer"
cd "$ROOT"

# The command as given: the knobs that came from the environment.
cmd="make bench-peer"
for v in SIPEDGE_ARGS KAM_LIST_SIZES LIST_SIZES REFINE RATES DURATION QUICK; do
	if [ -n "${!v+x}" ]; then cmd="$v=$(printf '%q' "${!v}") $cmd"; fi
done

: "${QUICK:=0}"
if [ "$QUICK" = 1 ]; then
	: "${DURATION:=10}" "${RATES:=1000 2000 3000}" "${REFINE:=0}" "${IDLE_SECS:=3}"
	: "${QUIET_WAIT:=5}" "${NOISE_RETRIES:=0}"
fi
: "${DURATION:=45}"                                   # s of load per step
: "${RATES:=1000 2000 3000 4000 5000 6000 8000 10000}" # ladder, cps (keep 2000: the CPU figure)
: "${REFINE:=2}" "${REFINE_STEP:=250}"                 # bisection after the first failure
: "${REPEATS:=1}" "${LAT_REPEATS:=1}"                  # runs per step / at the fixed rate
: "${LIST_SIZES:=10000 10}"                            # sipedge ACL entries
: "${KAM_LIST_SIZES:=10}"                              # Kamailio allow-list entries
: "${SIPEDGE_ARGS:=}"                                  # extra sipedge flags (the promise is about none)
: "${RESULTS_DIR:=bench/results}"
: "${KEEP:=}"                                          # keep the raw harness output in this directory
: "${INSTALL:=1}"                                      # 0: fail instead of apt-get installing
: "${CPU_RATE:=2000}"                                  # the rate whose CPU per call is compared
: "${BASELINE:=0}"                                     # 1: also SIPp straight UAC->UAS (the harness's ceiling)
export DURATION RATES REFINE REFINE_STEP REPEATS LAT_REPEATS SIPEDGE_ARGS
for v in IDLE_SECS QUIET_WAIT NOISE_RETRIES NOISE_MAX_PCT LAT_RATE AFTER_SECS FAIL_PCT OFFER_MIN_PCT \
	COOLDOWN KAM_CHILDREN KAM_SHM_MB KAM_PKG_MB KAM_MAXBUF UAC_IP DENY_IP UAS_ADDR PROXY_ADDR; do
	if [ -n "${!v+x}" ]; then export "${v?}"; fi
done

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

install_missing() {
	local pkgs=() b
	for b in /usr/sbin/kamailio:kamailio sipp:sip-tester tcpdump:tcpdump perl:perl ss:iproute2 curl:curl; do
		command -v "${b%%:*}" >/dev/null 2>&1 || pkgs+=("${b#*:}")
	done
	[ ${#pkgs[@]} -gt 0 ] || return 0
	[ "$INSTALL" = 1 ] || die "missing packages: ${pkgs[*]} (INSTALL=0)"
	[ "$(id -u)" = 0 ] || die "run as root to install: ${pkgs[*]}"
	log "installing ${pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq "${pkgs[@]}" >/dev/null; } ||
		die "apt-get install ${pkgs[*]} failed"
}


# run_both: Kamailio first, then sipedge with each list size, each with its own harness output
# under $WORK. Sets status[].
run_both() {
	log "building sipedge ($version)"
	mkdir -p "$WORK/bin"
	go build -o "$WORK/bin/sipedge" ./cmd/sipedge
	local nsteps
	nsteps=$(wc -w <<<"$RATES")
	log "about $(((3 * (DURATION + 20) * (nsteps + REFINE + 1) + 180) / 60)) min at most: ${DURATION} s steps, rates $RATES; results: $RESULTS_DIR/$name.md"
	status=()
	if OUT_DIR="$WORK/kamailio" BASELINE="$BASELINE" LIST_SIZES="$KAM_LIST_SIZES" INSTALL="$INSTALL" \
		bash "$HERE/run-kamailio.sh" 2>&1 | tee "$WORK/kamailio.log"; then
		status+=("Kamailio: complete")
	else
		status+=("Kamailio: **the run stopped early** (see its log below)")
	fi
	if OUT_DIR="$WORK/sipedge" LABEL=sipedge LIST_SIZES="$LIST_SIZES" SIPEDGE="$WORK/bin/sipedge" \
		DENY_SCENARIO=uac-deny.xml DENY_RATE=10 DENY_CALLS=100 PROXY_CMD="bash \"$HERE/start-sipedge.sh\"" \
		bash "$HERE/run-proxy.sh" 2>&1 | tee "$WORK/sipedge.log"; then
		status+=("sipedge: complete")
	else
		status+=("sipedge: **the run stopped early** (see its log below)")
	fi
}

# report: bench/results/$name.tsv, .svg, .md (and peer-latest.*) from the harness output in $WORK.
report() {
	local tsv header d machine kam load other other_med subtitle kam_label when
	# One machine-readable file for both: the results.tsv rows of every run, then the harness's
	# verdicts as "#sustained<TAB>config<TAB>entries<TAB>cps" lines; the chart is drawn from it.
	tsv="$RESULTS_DIR/$name.tsv"
	: >"$WORK/results.tsv"
	: >"$WORK/sustained.tsv"
	header=
	for d in kamailio sipedge; do
		if [ -f "$WORK/$d/results.tsv" ]; then
			if [ -n "$header" ]; then tail -n +2 "$WORK/$d/results.tsv"; else cat "$WORK/$d/results.tsv"; fi >>"$WORK/results.tsv"
			header=1
		fi
		if [ -f "$WORK/$d/sustained.tsv" ]; then cat "$WORK/$d/sustained.tsv" >>"$WORK/sustained.tsv"; fi
	done
	[ -s "$WORK/results.tsv" ] || die "no results at all (logs: $WORK/*.log)"
	{
		cat "$WORK/results.tsv"
		sed 's/^/#sustained\t/' "$WORK/sustained.tsv"
	} >"$tsv"

	machine="$(nproc) vCPU ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME")"
	kam="Kamailio $(dpkg-query -W -f '${Version}' kamailio 2>/dev/null || echo '?')"
	load=$(cat "$WORK/loadavg" 2>/dev/null || true)
	# CPU of everything outside the harness while SIPp ran (its noise guard), over the counted runs
	other=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
		/^#/ || $c["phase"] ~ /noisy/ || $c["other_cpu_pct"] == "-" { next }
		{ v[++n] = $c["other_cpu_pct"] + 0 }
		END { if (!n) { print "? ?"; exit } asort_n(); printf "%.0f median %.0f %%, max %.0f %% of a core over %d runs", m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2, m, v[n], n }
		function asort_n(  i, j, t) { for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t } }' "$tsv")
	other_med=${other%% *} other=${other#* }
	when=$started
	subtitle="$when, ${DURATION} s per step, $(nproc) vCPU, sipedge $version, $kam"
	if [ "$QUICK" = 1 ]; then subtitle="SMOKE RUN (QUICK=1) on a busy machine: $subtitle"; fi
	kam_label=$(awk -F'\t' '$1 ~ /^kamailio/ { print $1; exit }' "$WORK/sustained.tsv")
	go run ./bench/peer/chart -results "$tsv" \
		-svg "$RESULTS_DIR/$name.svg" -md "$WORK/tables.md" -cpu-rate "$CPU_RATE" -after-secs "${AFTER_SECS:-10}" \
		-title "sipedge vs Kamailio: offered calls per second, failures and CPU per call" -subtitle "$subtitle"

	{
		echo "# sipedge vs Kamailio, side by side: $when"
		echo
		if [ "$QUICK" = 1 ]; then
			echo "> **Smoke run (\`QUICK=1\`): ${DURATION} s steps, a few rates, no bisection, no redo of noisy runs.**"
			echo "> It shows that the comparison runs end to end; its figures are not a measurement."
			echo
		fi
		if [ "$other_med" != "?" ] && [ "$other_med" -gt "${NOISE_MAX_PCT:-20}" ]; then
			echo "> **Busy machine: other processes used $other while SIPp ran** (the harness's noise"
			echo "> guard allows ${NOISE_MAX_PCT:-20} %). Rates, CPU per call and latency are distorted; compare only runs on a quiet machine."
			echo
		fi
		echo "Command: \`$cmd\` ([bench/peer/bench-peer.sh](../peer/bench-peer.sh)); the SIPp ladder, deny"
		echo "check, fixed-rate latency and memory sampling are [bench/peer](../peer/README.md)'s."
		echo "Machine: $machine${load:+; load average at the end $load}; other processes' CPU while SIPp ran: $other."
		echo "sipedge $version at default flags${SIPEDGE_ARGS:+ plus \`$SIPEDGE_ARGS\`};"
		echo "$kam (Debian package) with 4 children, 2 GiB shm, 4 MiB receive buffer (bench/peer/kamailio-acl.cfg)."
		echo "Steps of ${DURATION} s, one run per rate (a ceiling is good to about one step); a rate passes with"
		echo "< 1 % failed calls and ≥ 95 % of it offered. Runs: ${status[0]}; ${status[1]}."
		echo
		echo "![offered calls per second against failed calls and CPU per call, sipedge and Kamailio](./$name.svg)"
		echo
		sed -n '1,/^$/p' "$WORK/tables.md"
		echo "CPU: utime+stime of the proxy's processes while SIPp ran, per successful call. Memory: the proxy's"
		echo "processes sampled every second; PSS counts memory shared between Kamailio's processes once."
		echo "\"${kam_label:-Kamailio}\" is the reference of the last column."
		echo
		echo "## Every step"
		echo
		sed -n '/^$/,$p' "$WORK/tables.md" | sed '1d'
		echo
		echo "Machine-readable: [$name.tsv](./$name.tsv) (the harness's results.tsv columns, one row per run;"
		echo "redone noisy runs are tagged \`-noisy\`, the verdicts are the \`#sustained\` lines); the chart is"
	echo "drawn from it: \`go run ./bench/peer/chart -results bench/results/$name.tsv -svg x.svg -md x.md\`."
		for d in kamailio sipedge; do
			[ -f "$WORK/$d/summary.txt" ] || continue
			echo
			echo "## The harness's report: $d"
			echo
			echo '```'
			cat "$WORK/$d/summary.txt"
			echo '```'
		done
	} >"$RESULTS_DIR/$name.md"

	: "${LATEST:=1}"
	if [ "$QUICK" = 1 ] && [ -f "$RESULTS_DIR/peer-latest.svg" ] && [ -z "${LATEST_FORCE:-}" ]; then LATEST=0; fi
	if [ "$LATEST" = 1 ]; then
		cp "$RESULTS_DIR/$name.svg" "$RESULTS_DIR/peer-latest.svg"
		cp "$RESULTS_DIR/$name.md" "$RESULTS_DIR/peer-latest.md"
	fi
	if [ -n "$KEEP" ]; then
		mkdir -p "$KEEP"
		cp -r "$WORK/." "$KEEP/"
		log "raw harness output kept in $KEEP"
	fi
	log "wrote $RESULTS_DIR/$name.md, .svg, .tsv$([ "$LATEST" = 1 ] && echo ", peer-latest.svg/.md")"
	sed -n '/^| |/,/^$/p' "$RESULTS_DIR/$name.md"
}

main() {
	if [ -n "${REPORT_FROM:-}" ]; then
		WORK=$REPORT_FROM
		# shellcheck source=/dev/null # the settings of the run, written below
		if [ -f "$WORK/run.env" ]; then . "$WORK/run.env"; fi
		status=("Kamailio: $([ -f "$WORK/kamailio/summary.txt" ] && echo complete || echo '**stopped early**')"
			"sipedge: $([ -f "$WORK/sipedge/summary.txt" ] && echo complete || echo '**stopped early**')")
		KEEP=
	else
		install_missing
		[ "$(id -u)" = 0 ] || log "WARNING: not root: no tcpdump, so no INVITE→200 latency"
		WORK="$(mktemp -d -t bench-peer.XXXXXX)"
		trap 'rm -rf "$WORK"' EXIT
	fi
	if [ -z "${REPORT_FROM:-}" ] || [ ! -f "$WORK/run.env" ]; then
		stamp=$(date -u +%Y%m%d-%H%M)
		started=$(date -u '+%Y-%m-%d %H:%M UTC')
		version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
		local v
		for v in stamp started version cmd QUICK DURATION SIPEDGE_ARGS CPU_RATE; do
			printf '%s=%q\n' "$v" "${!v}"
		done >"$WORK/run.env"
	fi
	name="peer-$stamp"
	if [ "$QUICK" = 1 ]; then name="$name-quick"; fi
	mkdir -p "$RESULTS_DIR"
	if [ -z "${REPORT_FROM:-}" ]; then
		run_both
		cut -d' ' -f1-3 /proc/loadavg >"$WORK/loadavg"
	fi
	report
}

main "$@"; exit
