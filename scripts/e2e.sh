#!/usr/bin/env bash
# scripts/e2e.sh — the built binary, driven as an operator and PBXs would: control API with
# curl, SIPp as PBX (127.0.0.2 listed, 127.0.0.9 unlisted) and as upstream. Loopback only;
# everything started is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP="$(mktemp -d -t sipedge-e2e.XXXXXX)"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "e2e FAIL: $*" >&2; [ -f "$TMP/edge.log" ] && tail -20 "$TMP/edge.log" >&2; exit 1; }

free_port() { # a free UDP+TCP port on loopback
	local p
	for _ in $(seq 50); do
		p=$((30000 + RANDOM % 20000))
		ss -Hlnut "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
	fail "no free port"
}

go build -o "$TMP/sipedge" ./cmd/sipedge
SIP=$(free_port); HTTP=$(free_port); UAS=$(free_port)
AUTH_ID=MAE2ETEST0000000001 AUTH_TOKEN=e2e-secret-token-000000001
API="http://127.0.0.1:$HTTP/v1/Account/$AUTH_ID/Zentrunk"

sipp -sn uas -i 127.0.0.1 -p "$UAS" -bg >/dev/null 2>&1 &
sleep 0.3
upid=$(ss -lunpH "sport = :$UAS" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
[ -n "$upid" ] && PIDS+=("$upid")

SIPEDGE_AUTH_ID=$AUTH_ID SIPEDGE_AUTH_TOKEN=$AUTH_TOKEN "$TMP/sipedge" \
	--sip-listen "127.0.0.1:$SIP" --http-listen "127.0.0.1:$HTTP" --upstream "sip:127.0.0.1:$UAS" \
	--data-dir "$TMP/data" --drain-timeout 10s >"$TMP/edge.log" 2>&1 &
EDGE=$!
PIDS+=("$EDGE")
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$HTTP/readyz" >/dev/null || fail "not ready"

post() { curl -fsS -u "$AUTH_ID:$AUTH_TOKEN" -H 'Content-Type: application/json' -X POST -d "$2" "$API/$1"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
acl=$(post IPAccessControlList/ '{"name":"pbx","ip_addresses":["127.0.0.2/32"]}' | field ipacl_uuid)
cred=$(post Credential/ '{"name":"c","username":"pbxuser","password":"S3cure-pass-123"}' | field credential_uuid)
post Trunk/ "{\"name\":\"t1\",\"trunk_direction\":\"outbound\",\"ipacl_uuid\":\"$acl\",\"credential_uuid\":\"$cred\"}" >/dev/null

calls() { # calls SRC N [sipp args] -> "ok failed"
	local src=$1 n=$2; shift 2
	rm -f "$TMP/uac.csv"
	timeout 60 sipp "127.0.0.1:$SIP" -sf "${SCEN:-scripts/sipp/uac.xml}" -i "$src" -m "$n" -r 50 -d 0 \
		-recv_timeout 3000 -timeout 40 -timeout_error -trace_stat -stf "$TMP/uac.csv" "$@" >/dev/null 2>&1 || true
	python3 - "$TMP/uac.csv" <<'PY'
import csv, sys
try:
    rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
    h, last = rows[0], rows[-1]
    print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')])
except Exception:
    print(0, -1)
PY
}
read -r ok _ < <(calls 127.0.0.2 100);                [ "$ok" = 100 ] || fail "listed UDP: $ok/100"
read -r ok _ < <(calls 127.0.0.2 20 -t t1);           [ "$ok" = 20 ] || fail "listed TCP: $ok/20"
read -r ok _ < <(calls 127.0.0.9 5);                  [ "$ok" = 0 ] || fail "unlisted got $ok calls through"
read -r ok _ < <(SCEN=scripts/sipp/uac-auth.xml calls 127.0.0.9 20 -au pbxuser -ap S3cure-pass-123 -auth_uri "service@127.0.0.1:$SIP")
[ "$ok" = 20 ] || fail "digest: $ok/20"
read -r ok _ < <(SCEN=scripts/sipp/uac-auth.xml calls 127.0.0.9 3 -au pbxuser -ap wrong-password -auth_uri "service@127.0.0.1:$SIP")
[ "$ok" = 0 ] || fail "wrong password got $ok calls through"

# The API → SIP promise: an address added through the API is allowed on the next INVITE;
# disabled, it is challenged again (the plain UAC scenario cannot answer a 407).
get() { curl -fsS -u "$AUTH_ID:$AUTH_TOKEN" "$API/$1"; }
post "IPAccessControlList/$acl/" '{"ip_addresses":["127.0.0.2/32","127.0.0.3"]}' >/dev/null
read -r ok _ < <(calls 127.0.0.3 5);                  [ "$ok" = 5 ] || fail "added address: $ok/5"
eid=$(get "IPAccessControlList/$acl/Entry/" | python3 -c 'import json,sys; print([e["id"] for e in json.load(sys.stdin)["objects"] if e["ip_address"]=="127.0.0.3"][0])')
post "IPAccessControlList/$acl/Entry/$eid/" '{"enabled":false}' >/dev/null
read -r ok _ < <(calls 127.0.0.3 3);                  [ "$ok" = 0 ] || fail "disabled entry still lets $ok calls through"

m=$(curl -fsS "http://127.0.0.1:$HTTP/metrics")
grep -q '^sipedge_sip_invites_total{.*verdict="allow_ip"' <<<"$m" || fail "metrics: no allow_ip INVITEs counted"
grep -q '^sipedge_sip_invites_total{.*verdict="allow_digest"' <<<"$m" || fail "metrics: no allow_digest INVITEs counted"
grep -q '^sipedge_sip_invites_total{.*verdict="auth_failed"' <<<"$m" || fail "metrics: no auth_failed INVITEs counted"
curl -fsS "http://127.0.0.1:$HTTP/readyz" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["status"]=="ready" and d["snapshot_version"]>0, d' ||
	fail "readyz does not report ready with the applied version"

# Logs: the security line is there and parseable by the fail2ban filter; no secret ever is.
grep -q '"event":"sip_denied"' "$TMP/edge.log" || fail "no sip_denied security line"
re=$(sed -n 's/^failregex = //p' deploy/fail2ban/sipedge.conf | sed 's/<HOST>/[0-9a-fA-F.:]+/; s/\\d/[0-9]/g')
grep -qE "$re" "$TMP/edge.log" || fail "fail2ban filter matches no line of the edge log"
for secret in S3cure-pass-123 wrong-password "$AUTH_TOKEN" 'response='; do
	grep -qF -- "$secret" "$TMP/edge.log" && fail "the log contains a secret: $secret"
done

# Graceful drain: a call in progress when SIGTERM arrives completes; a new INVITE gets 503;
# the process then exits 0 on its own.
rm -f "$TMP/drain.csv"
timeout 30 sipp "127.0.0.1:$SIP" -sf scripts/sipp/uac.xml -i 127.0.0.2 -p 35999 -m 1 -d 3000 \
	-recv_timeout 8000 -timeout 20 -timeout_error -trace_stat -stf "$TMP/drain.csv" >/dev/null 2>&1 &
inflight=$!
sleep 1
kill -TERM "$EDGE"
sleep 0.3
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP/readyz")
[ "$code" = 503 ] || fail "readyz during drain: HTTP $code, want 503"
read -r ok _ < <(calls 127.0.0.2 1);                  [ "$ok" = 0 ] || fail "a new call was accepted during drain"
wait "$inflight" || true
python3 - "$TMP/drain.csv" <<'PY' || fail "the call in progress did not complete during drain"
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
sys.exit(0 if last[h.index('SuccessfulCall(C)')] == '1' else 1)
PY
for _ in $(seq 100); do kill -0 "$EDGE" 2>/dev/null || break; sleep 0.1; done
kill -0 "$EDGE" 2>/dev/null && fail "still running 10 s after SIGTERM"
wait "$EDGE" || fail "exit status $? after SIGTERM"
echo "e2e ok: listed udp 100/100, tcp 20/20, unlisted 0/5, digest 20/20, wrong password 0/3, API add/disable → SIP, metrics, logs, drain"
