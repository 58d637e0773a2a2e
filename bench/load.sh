#!/usr/bin/env bash
# bench/load.sh: load-test the keygate sidecar's /verify on loopback and print a markdown
# table for BENCHMARKS.md.
#
# Starts a release `keygate serve` with the development issuer (the stub issuer), mints token
# pools through it, drives GET /verify with wrk (keep-alive, -t 2 -c 64), and measures a
# static `return 200;` in nginx as this machine's HTTP floor. Scenarios:
#   nginx floor     static 200, same headers
#   (a) distinct    a new token per request (up to DISTINCT tokens, cycling)
#   (b) pool 1k     1,000 valid tokens reused: the token cache's best case
#   (c) mixed       the pool interleaved with garbage and unknown-kid tokens (50/50);
#                   JWKS fetches must stay within the unknown-kid budget (burst 2 + 1/15 s)
#   (d) rotation    (b) with POST /rotate halfway, then a second wrk on post-rotation tokens
#
# Everything listens on 127.0.0.1 and everything started here is stopped on exit.
#
# Environment: DURATION (seconds per wrk run, default 10), DISTINCT (default 20000),
# CONNECTIONS (default 64), THREADS (default 2), POLICY_ROUTES (default 0: no [policy]; N adds
# a policy of N routes, N-1 that never match and a last one, `/**`, that checks the token's
# provider and a claim, so every request is authorized by route; compare two runs).

set -euo pipefail

DURATION=${DURATION:-10}
DISTINCT=${DISTINCT:-20000}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
POLICY_ROUTES=${POLICY_ROUTES:-0}
POOL=1000

if ! [[ $POLICY_ROUTES =~ ^[0-9]+$ ]] || ((POLICY_ROUTES > 1000)); then
    echo "load.sh: POLICY_ROUTES must be an integer from 0 to 1000" >&2
    exit 2
fi
for v in DURATION DISTINCT CONNECTIONS THREADS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} < 1)); then
        echo "load.sh: $v must be a positive integer" >&2
        exit 2
    fi
done
if ((DURATION > 300 || DISTINCT > 200000)); then
    echo "load.sh: DURATION is capped at 300 s and DISTINCT at 200000" >&2
    exit 2
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LUA=$BENCH_DIR/verify.lua
TOKENS_PY=$BENCH_DIR/tokens.py
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-bench.XXXXXX")

PIDS=()
KEYGATE_PID=
NGINX_PID=

cleanup() {
    local status=$?
    signal TERM "${PIDS[@]}"
    signal QUIT "$NGINX_PID"
    signal TERM "$KEYGATE_PID"
    # Bounded: give each process 5 s to drain, then kill it.
    reap "${PIDS[@]}" "$NGINX_PID" "$KEYGATE_PID"
    if ((status != 0)); then
        show_tail "$WORK/keygate.log" 20 "the keygate log"
    fi
    rm -rf "$WORK"
    exit "$status"
}

log() { printf '== %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap_cleanup

# --- 1. tools -------------------------------------------------------------------------------

if command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; then
    apt_install_missing wrk
else
    apt_install_missing wrk nginx
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
require python3 curl

# --- 2. keygate -------------------------------------------------------------------------------

build_keygate

pick_ports 4
NGINX_ADDR=127.0.0.1:${PORTS[3]}

# The token cache holds pool (b) with room to spare (16 shards) but only a tenth of the
# distinct tokens of (a), whose hit rate is reported so the reader can see it is small.
cat >"$WORK/keygate.toml" <<EOF
[server]
listen = "$VERIFY_ADDR"
admin_listen = "$ADMIN_ADDR"
shutdown_grace = "2s"
token_cache = 2048

[dev_issuer]
listen = "127.0.0.1:${PORTS[2]}"
EOF
if ((POLICY_ROUTES > 0)); then
    printf '[policy]\ndefault = "deny"\n' >>"$WORK/keygate.toml"
    for ((i = 0; i < POLICY_ROUTES - 1; i++)); do
        printf '[[policy.routes]]\nname = "r%d"\npaths = ["/svc%d/**"]\nmethods = ["GET"]\n' "$i" "$i" \
            >>"$WORK/keygate.toml"
    done
    printf '[[policy.routes]]\nname = "all"\npaths = ["/**"]\nproviders = ["dev/dev"]\nclaims = [{ claim = "sub", exists = true }]\n' \
        >>"$WORK/keygate.toml"
fi

log "starting keygate serve on $VERIFY_ADDR (admin $ADMIN_ADDR, issuer $ISSUER)"
KEYGATE_LOG=warn,keygate_server::cli::serve=info "$KEYGATE_BIN" serve --config "$WORK/keygate.toml" \
    >"$WORK/keygate.out" 2>"$WORK/keygate.log" &
KEYGATE_PID=$!
for _ in $(seq 100); do
    grep -q 'listening verify=' "$WORK/keygate.log" 2>/dev/null && break
    kill -0 "$KEYGATE_PID" 2>/dev/null || die "keygate exited early"
    sleep 0.1
done
grep -q 'listening verify=' "$WORK/keygate.log" || die "keygate did not report listening within 10 s"

# --- 3. token pools -------------------------------------------------------------------------

log "minting $DISTINCT distinct tokens and a pool of $POOL"
start=$(date +%s.%N)
timeout 300 python3 "$TOKENS_PY" mint "$ISSUER" "$DISTINCT" "$WORK/distinct.txt" distinct
timeout 60 python3 "$TOKENS_PY" mint "$ISSUER" "$POOL" "$WORK/pool.txt" pool
timeout 60 python3 "$TOKENS_PY" mix "$WORK/pool.txt" "$WORK/mixed.txt"
log "minted in $(python3 -c "import time; print(round(time.time() - $start, 1))") s"

check=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $(head -n 1 "$WORK/pool.txt")" "http://$VERIFY_ADDR/verify")
[[ $check == 200 ]] || die "a freshly minted token got $check from /verify"

# --- helpers ----------------------------------------------------------------------------------


# Sum of the metric samples whose line matches a regular expression.
metric_sum() {
    curl -s --max-time 5 "http://$ADMIN_ADDR/metrics" |
        awk -v re="$1" '$0 ~ re { s += $NF } END { printf "%d\n", s }'
}
jwks_fetches() {
    metric_sum '^keygate_jwks_fetches_total[{].*tenant="dev".*provider="dev".*result="(ok|error)"'
}
cache_hits() { metric_sum '^keygate_token_cache_hits_total'; }

# run_wrk OUTFILE HOST:PORT TOKENFILE [DURATION [CONNECTIONS]]: one wrk run, RESULT line in OUTFILE.
run_wrk() {
    local out=$1 addr=$2 tokens=$3 secs=${4:-$DURATION} conns=${5:-$CONNECTIONS}
    timeout $((secs + 30)) wrk -t "$THREADS" -c "$conns" -d "${secs}s" --timeout 5s --latency \
        -s "$LUA" "http://$addr/verify" -- "$tokens" /verify "$THREADS" >"$out" 2>&1 ||
        die "wrk failed: $(tail -n 5 "$out")"
    grep -q '^RESULT ' "$out" || die "wrk printed no RESULT line: $(tail -n 5 "$out")"
}


ROWS=()
NOTES=()
# row NAME OUTFILE CPU% NON200 FETCHES
row() {
    ROWS+=("| $1 | $(field "$2" rps) | $(fmt_ms "$(field "$2" p50_us)") | $(fmt_ms "$(field "$2" p99_us)") | $3 | $4 | $5 |")
}

# measure NAME ADDR TOKENS PIDS...: a wrk run with CPU use of PIDS; sets OUT and CPU.
measure() {
    local name=$1 addr=$2 tokens=$3
    shift 3
    OUT=$WORK/$name.out
    local t0 t1 c0 c1
    c0=$(cpu_ticks "$@")
    t0=$(date +%s%N)
    run_wrk "$OUT" "$addr" "$tokens"
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$@")
    CPU=$(python3 -c "print(f'{100 * ($c1 - $c0) / $CLK_TCK / (($t1 - $t0) / 1e9):.0f}%')")
}

# --- 5. nginx floor ---------------------------------------------------------------------------

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $(nproc);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen $NGINX_ADDR;
        location / { return 200; }
    }
}
EOF
log "starting nginx on $NGINX_ADDR"
"$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
    >"$WORK/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!
for _ in $(seq 50); do
    curl -s -o /dev/null --max-time 1 "http://$NGINX_ADDR/verify" && break
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$WORK/nginx/logs/error.log")"
    sleep 0.1
done
mapfile -t NGINX_PIDS < <(echo "$NGINX_PID"; pgrep -P "$NGINX_PID" || true)

log "nginx floor: ${DURATION}s"
measure nginx "$NGINX_ADDR" "$WORK/pool.txt" "${NGINX_PIDS[@]}"
row "nginx \`return 200\` (floor)" "$OUT" "$CPU (nginx)" "$(field "$OUT" non200)" "-"
NGINX_RPS=$(field "$OUT" rps)
kill -QUIT "$NGINX_PID" 2>/dev/null || true
wait "$NGINX_PID" 2>/dev/null || true
NGINX_PID=

# --- 4. keygate scenarios ---------------------------------------------------------------------

scenario() {
    local name=$1 label=$2 tokens=$3
    local f0 f1 h0 h1
    log "$label: ${DURATION}s"
    f0=$(jwks_fetches)
    h0=$(cache_hits)
    measure "$name" "$VERIFY_ADDR" "$tokens" "$KEYGATE_PID"
    f1=$(jwks_fetches)
    h1=$(cache_hits)
    FETCHES=$((f1 - f0))
    HITS=$((h1 - h0))
    row "$label" "$OUT" "$CPU" "$(field "$OUT" non200)" "$FETCHES"
    NOTES+=("$label: token cache hits $HITS of $(field "$OUT" requests) requests; non-200 by status:reason: $(field "$OUT" codes)")
}

# (b) runs first, on an empty token cache: the cache evicts "whichever entry the table yields
# first", so after (a) it stays full of (a)'s tokens and (b) would measure that instead.
scenario pool "(b) pool of $POOL, reused" "$WORK/pool.txt"
POOL_RPS=$(field "$OUT" rps)
scenario distinct "(a) $DISTINCT distinct tokens" "$WORK/distinct.txt"

# --- 7. rotation under load (before (c): its unknown-kid flood spends the refetch budget
# a new kid needs, and the new kid would then be refused until the bucket refills) -----------------------------------------------------------------------

log "(d) rotation: ${DURATION}s on the pool, POST /rotate at $((DURATION / 2))s, then a second wrk on new tokens"
f0=$(jwks_fetches)
c0=$(cpu_ticks "$KEYGATE_PID")
t0=$(date +%s%N)
run_wrk "$WORK/rot-old.out" "$VERIFY_ADDR" "$WORK/pool.txt" &
PIDS+=($!)
sleep $((DURATION / 2))
curl -s --fail --max-time 5 -X POST "$ISSUER/rotate" >"$WORK/rotate.json" || die "POST /rotate failed"
timeout 60 python3 "$TOKENS_PY" mint "$ISSUER" "$POOL" "$WORK/pool2.txt" rotated
REST=$((DURATION - DURATION / 2))
# Half the connections on the new pool, so both pools share the load after the rotation.
run_wrk "$WORK/rot-new.out" "$VERIFY_ADDR" "$WORK/pool2.txt" "$((REST > 1 ? REST : 1))" "$((CONNECTIONS / 2 > 0 ? CONNECTIONS / 2 : 1))"
wait "${PIDS[-1]}" || die "the first wrk of the rotation run failed"
unset 'PIDS[-1]'
t1=$(date +%s%N)
c1=$(cpu_ticks "$KEYGATE_PID")
f1=$(jwks_fetches)
CPU=$(python3 -c "print(f'{100 * ($c1 - $c0) / $CLK_TCK / (($t1 - $t0) / 1e9):.0f}%')")
ROT_FETCHES=$((f1 - f0))
row "(d) rotation: pre-rotation pool" "$WORK/rot-old.out" "$CPU (whole run)" "$(field "$WORK/rot-old.out" non200)" "$ROT_FETCHES (whole run)"
row "(d) rotation: post-rotation pool" "$WORK/rot-new.out" "" "$(field "$WORK/rot-new.out" non200)" ""
ROT_NON200=$(($(field "$WORK/rot-old.out" non200) + $(field "$WORK/rot-new.out" non200)))
NOTES+=("(d): new kid $(python3 -c 'import json,sys; print(json.load(sys.stdin)["kid"])' <"$WORK/rotate.json"); non-200s for valid tokens across the rotation: $ROT_NON200 (goal 0); by status:reason: old pool $(field "$WORK/rot-old.out" codes), new pool $(field "$WORK/rot-new.out" codes)")

# --- 6. mixed: valid, garbage and unknown kids --------------------------------------------------

scenario mixed "(c) pool + 50% garbage/unknown kid" "$WORK/mixed.txt"
BUDGET=$((2 + DURATION / 15 + 1))
UNEXPECTED=$(field "$OUT" codes | tr ',' '\n' |
    awk -F= '$1 != "401:unknown_kid" && $1 != "401:malformed" && $1 != "none" { s += $2 } END { printf "%d\n", s }')
NOTES+=("(c): JWKS fetches $FETCHES (budget: burst 2 + 1 per 15 s over ${DURATION}s = at most $BUDGET): $( ((FETCHES <= BUDGET)) && echo within budget || echo OVER BUDGET); non-200s other than 401 unknown_kid/malformed (i.e. valid tokens refused): $UNEXPECTED")

# --- 8. report ------------------------------------------------------------------------------

RATIO=$(python3 -c "print(f'{$POOL_RPS / $NGINX_RPS:.2f}')")
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??' && echo " (uncommitted changes)" || true)
CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)

cat <<EOF

## keygate /verify under load

Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}. Commit: $COMMIT$DIRTY. Policy routes: $POLICY_ROUTES. wrk -t $THREADS -c $CONNECTIONS, keep-alive, ${DURATION}s per run, on the same machine as the server (loopback).

| scenario | req/s | p50 | p99 | CPU % (one core = 100%) | non-200s | JWKS fetches |
|---|---:|---:|---:|---:|---:|---:|
EOF
printf '%s\n' "${ROWS[@]}"
echo
echo "keygate (b) throughput / nginx floor: $RATIO"
echo
printf -- '- %s\n' "${NOTES[@]}"
