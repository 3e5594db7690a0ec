#!/usr/bin/env bash
# scripts/bench-sip.sh — SIP relay ladder on loopback: SIPp UAC (127.0.0.2) → sipedge → SIPp UAS,
# stepping the call rate; per step: failed %, INVITE→200 latency (SIPp rtd, ms resolution), the
# edge's CPU µs per call and RSS. Runs with a 10-entry and a 10,000-entry ACL on the embedded
# store, the 10,000-entry ACL in Redis mode (REDIS=1, default when redis-server exists), and a
# no-edge ceiling (UAC straight to UAS). Writes bench/results/sip-ladder-<date>.md (+ latest.md)
# and, with gnuplot, a PNG chart of failures and latency against the call rate.
# Loopback only; stops what it starts, by PID.
#   RATES="500 1000 2000" DURATION=10 make bench-sip
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RATES:=250 500 1000 1500 2000 2500 3000}"
: "${DURATION:=10}"
: "${SIZES:=10 10000}"
: "${EDGE_ARGS:=}" # extra sipedge flags, e.g. "--transaction-linger 5s"
: "${OUT:=bench/results}"
: "${NOEDGE:=1}" # 0 skips the no-edge ceiling
: "${REDIS:=$(command -v redis-server >/dev/null && echo 1 || echo 0)}"
mkdir -p "$OUT"
TMP="$(mktemp -d -t sipedge-bench.XXXXXX)"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)"; exit 1; }
go build -o "$TMP/sipedge" ./cmd/sipedge
: "${UAS_PORT:=35080}" "${EDGE_PORT:=35060}" "${HTTP_PORT:=38080}" # overridable: several ladders on one machine
AUTH_ID=MABENCH000000000001 AUTH_TOKEN=bench-token-000000000001
HZ=$(getconf CLK_TCK)
SCEN="$PWD/scripts/sipp/uac.xml"

start_uas() {
	sipp -sn uas -i 127.0.0.1 -p $UAS_PORT -bg >/dev/null 2>&1 &
	sleep 0.5
	UAS_PID=$(ss -lunpH "sport = :$UAS_PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
	PIDS+=("$UAS_PID")
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; } # peak RSS of the process so far

start_edge() { # start_edge N_ENTRIES [extra flags]
	local n=$1 data="$TMP/data-$1"
	shift
	rm -rf "$data"
	SIPEDGE_AUTH_ID=$AUTH_ID SIPEDGE_AUTH_TOKEN=$AUTH_TOKEN "$TMP/sipedge" --sip-listen 127.0.0.1:$EDGE_PORT \
		--http-listen 127.0.0.1:$HTTP_PORT --upstream sip:127.0.0.1:$UAS_PORT --data-dir "$data" \
		--log-level warn $EDGE_ARGS "$@" >"$TMP/edge-$n.log" 2>&1 &
	EDGE_PID=$!
	PIDS+=("$EDGE_PID")
	for _ in $(seq 100); do curl -fsS http://127.0.0.1:$HTTP_PORT/readyz >/dev/null 2>&1 && break; sleep 0.1; done
	python3 - "$n" >"$TMP/acls.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1]); lines = [f"10.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(n - 1)] + ["127.0.0.0/29"]
for i in range(0, len(lines), 500):
    print(json.dumps({"name": f"bench-{i // 500}", "ip_addresses": lines[i:i + 500]}))
PY
	local api="http://127.0.0.1:$HTTP_PORT/v1/Account/$AUTH_ID/Zentrunk" uuid
	while IFS= read -r body; do
		uuid=$(curl -fsS -u "$AUTH_ID:$AUTH_TOKEN" -H 'Content-Type: application/json' -d "$body" "$api/IPAccessControlList/" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["ipacl_uuid"])')
		curl -fsS -u "$AUTH_ID:$AUTH_TOKEN" -H 'Content-Type: application/json' \
			-d "{\"name\":\"t-$uuid\",\"ipacl_uuid\":\"$uuid\"}" "$api/Trunk/" >/dev/null
	done <"$TMP/acls.jsonl"
	sleep 0.5
}

step() { # step LABEL TARGET_PORT RATE PID|- -> one markdown row; returns 1 when the step failed
	local label=$1 port=$2 rate=$3 pid=$4 calls=$(($3 * DURATION)) c0=0 c1=0 rss="-"
	rm -f "$TMP"/uac*.csv "$TMP"/uac*_rtt.csv
	[ "$pid" != - ] && c0=$(cpu_ticks "$pid")
	(cd "$TMP" && timeout $((DURATION * 4 + 30)) sipp "127.0.0.1:$port" -sf "$SCEN" -i 127.0.0.2 -p $((EDGE_PORT + 1)) \
		-r "$rate" -m "$calls" -l $((rate * 4)) -d 0 -buff_size 4194304 -recv_timeout 5000 -timeout $((DURATION * 4 + 20)) \
		-trace_stat -stf "$TMP/uac.csv" -trace_rtt -rtt_freq 100 >/dev/null 2>&1) || true
	[ "$pid" != - ] && { c1=$(cpu_ticks "$pid"); rss=$(($(rss_kb "$pid") / 1024)); }
	python3 - "$TMP/uac.csv" "$label" "$rate" "$calls" $((c1 - c0)) "$HZ" "$rss" "$TMP" <<'PY'
import csv, glob, sys
f, label, rate, calls, ticks, hz, rss, tmp = sys.argv[1:]
rows = list(csv.reader(open(f), delimiter=';')); h, last = rows[0], rows[-1]
ok, bad = int(last[h.index('SuccessfulCall(C)')]), int(last[h.index('FailedCall(C)')])
rtts = []
for rf in glob.glob(tmp + '/*_rtt.csv'):
    for r in list(csv.reader(open(rf), delimiter=';'))[1:]:
        # Date_ms;response_time_ms;rtd_no — rtd 1 is INVITE sent → 200 received
        if len(r) >= 3 and r[2].strip() in ('1', 'rtd1'):
            try: rtts.append(float(r[1]))
            except ValueError: pass
rtts.sort()
p = lambda q: f"{rtts[int(q * (len(rtts) - 1))]:.1f}" if rtts else "-"
failpct = 100.0 * (int(calls) - ok) / int(calls)
cpu = f"{int(ticks) * 1e6 / int(hz) / max(ok, 1):.0f}" if label != "no-edge" else "-"
print(f"| {label} | {rate} | {ok}/{calls} | {failpct:.2f} | {p(0.5)} | {p(0.99)} | {cpu} | {rss} |")
with open(tmp + '/ladder.tsv', 'a') as t:
    t.write(f"{label}\t{rate}\t{failpct:.3f}\t{p(0.5)}\t{p(0.99)}\n".replace('-\t', 'NaN\t').replace('\t-\n', '\tNaN\n'))
sys.exit(0 if failpct < 1 else 1)
PY
}

rss_after() { # rss_after LABEL PID: the edge's peak RSS, and its RSS 10 s, 12 s and 40 s after its last step
	local a b p t
	p=$(($(hwm_kb "$2") / 1024))
	sleep 10
	t=$(($(rss_kb "$2") / 1024))
	sleep 2
	a=$(($(rss_kb "$2") / 1024))
	sleep 28
	b=$(($(rss_kb "$2") / 1024))
	echo "| $1 | $p | $t | $a | $b |" >>"$TMP/after.md"
}
: >"$TMP/after.md"

{
	echo "# SIP relay ladder — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, ${DURATION}s steps"
	echo
	echo "Command: \`RATES=\"$RATES\" DURATION=$DURATION EDGE_ARGS=\"$EDGE_ARGS\" make bench-sip\`"
	echo
	echo "| config | cps | ok/offered | failed % | INVITE→200 p50 ms | p99 ms | edge CPU µs/call | edge RSS MiB |"
	echo "|---|---|---|---|---|---|---|---|"
} >"$TMP/table.md"
start_uas
[ "$NOEDGE" = 1 ] && for r in $RATES; do step no-edge $UAS_PORT "$r" - >>"$TMP/table.md" || break; done
for n in $SIZES; do
	start_edge "$n"
	for r in $RATES; do step "edge-$n" $EDGE_PORT "$r" "$EDGE_PID" >>"$TMP/table.md" || break; done
	rss_after "edge-$n" "$EDGE_PID"
	stop_pid "$EDGE_PID"
done
if [ "$REDIS" = 1 ]; then
	RPORT=36379
	redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
	RPID=$!
	PIDS+=("$RPID")
	sleep 0.5
	n=${SIZES##* }
	start_edge "$n" --redis-url "redis://127.0.0.1:$RPORT/0"
	for r in $RATES; do step "edge-redis-$n" $EDGE_PORT "$r" "$EDGE_PID" >>"$TMP/table.md" || break; done
	rss_after "edge-redis-$n" "$EDGE_PID"
	stop_pid "$EDGE_PID"
fi
{
	echo
	echo "Edge RSS after the last step, once the load stopped (transactions linger 32 s by RFC, 5 s with \`--transaction-linger 5s\`):"
	echo
	echo "| config | peak MiB | +10 s MiB | +12 s MiB | +40 s MiB |"
	echo "|---|---|---|---|---|"
	cat "$TMP/after.md"
} >>"$TMP/table.md"
stamp=$(date -u +%Y%m%d-%H%M)
out="$OUT/sip-ladder-$stamp.md"
if command -v gnuplot >/dev/null; then
	# one data block per configuration, for gnuplot's "index"
	labels=$(cut -f1 "$TMP/ladder.tsv" | awk '!seen[$0]++')
	: >"$TMP/plot.dat"
	for l in $labels; do grep -P "^$l\t" "$TMP/ladder.tsv" | cut -f2-; printf '\n\n'; done >"$TMP/plot.dat"
	{
		echo "set terminal pngcairo size 1100,450 font ',10'"
		echo "set output '$OUT/sip-ladder-$stamp.png'"
		echo "set multiplot layout 1,2 title 'sipedge SIP relay ladder ($stamp, ${DURATION}s steps)'"
		echo "set xlabel 'offered calls/s'; set ylabel 'failed calls %'; set grid; set key top left"
		printf "plot "
		i=0; for l in $labels; do printf "%s'%s' index %d using 1:2 with linespoints title '%s'" "$([ $i -gt 0 ] && echo ', ')" "$TMP/plot.dat" $i "$l"; i=$((i + 1)); done; echo
		echo "set ylabel 'INVITE→200 ms (p50 solid, p99 dashed)'"
		printf "plot "
		i=0; for l in $labels; do printf "%s'%s' index %d using 1:3 with linespoints lc %d title '%s p50', '%s' index %d using 1:4 with linespoints dt 2 lc %d notitle" "$([ $i -gt 0 ] && echo ', ')" "$TMP/plot.dat" $i $((i + 1)) "$l" "$TMP/plot.dat" $i $((i + 1)); i=$((i + 1)); done; echo
		echo "unset multiplot"
	} >"$TMP/plot.gp"
	gnuplot "$TMP/plot.gp" && cp "$OUT/sip-ladder-$stamp.png" "$OUT/latest.png" &&
		printf '\n![ladder](sip-ladder-%s.png)\n' "$stamp" >>"$TMP/table.md"
fi
cp "$TMP/table.md" "$out"
cp "$TMP/table.md" "$OUT/latest.md"
cat "$out"
