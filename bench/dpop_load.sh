#!/usr/bin/env bash
# bench/dpop_load.sh: load-test the keygate sidecar's /verify with DPoP (RFC 9449) on, on
# loopback, and print a markdown table.
#
# Starts a release `keygate serve` with the development issuer and a second provider,
# bench/dpop, that trusts the same issuer with `dpop = "allowed"`. Every request names the
# tenant with `X-Keygate-Tenant: bench` and describes `GET http://shop.test/api/orders` with
# X-Forwarded-Proto/Host/Uri/Method, as a forward-auth proxy would. Scenarios, one wrk run of
# DURATION seconds each (-t THREADS -c CONNECTIONS, keep-alive):
#   bearer         one unbound token as `Authorization: Bearer`: a cached JWT verify (baseline)
#   dpop (memory)  one token bound to a key (cnf.jkt) as `Authorization: DPoP`, and a proof
#                  of its own for every request (signature check, ath, htu, iat window, and
#                  one insert in the in-memory replay store)
#   dpop (redis)   the same after a restart with [cluster] backend = "redis" on REDIS_URL: the
#                  replay store is Redis, one SET NX PX per proof
#
# A proof is accepted once and only within 60 s of its iat, so the proofs (bench/dpop_proofs.py)
# are made right before each DPoP run, as many as the bearer run's rate x DURATION x 1.3
# (capped at MAX_PROOFS), and bench/dpop.lua never sends one twice. Any non-200 fails the run,
# naming the reasons; a thread that runs out of proofs says so (`exhausted`).
#
# Everything listens on 127.0.0.1 and everything started here is stopped on exit; the Redis
# keys under this run's random prefix are deleted (with redis-cli, when there is one).
#
# Environment: DURATION (seconds per wrk run, default 5, at most 30), CONNECTIONS (default
# 64), THREADS (default 2), MAX_PROOFS (default 400000), REDIS_URL (default
# redis://127.0.0.1:6379; loopback only; an existing Redis, not started here).

set -euo pipefail

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
MAX_PROOFS=${MAX_PROOFS:-400000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

for v in DURATION CONNECTIONS THREADS MAX_PROOFS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} < 1)); then
        echo "dpop_load.sh: $v must be a positive integer" >&2
        exit 2
    fi
done
if ((DURATION > 30 || MAX_PROOFS > 1000000 || THREADS > 64 || CONNECTIONS > 10000)); then
    echo "dpop_load.sh: DURATION is capped at 30 s (proofs live 60 s), MAX_PROOFS at 1000000" >&2
    exit 2
fi
if ! [[ $REDIS_URL =~ ^redis://(127\.0\.0\.1|localhost)(:([0-9]+))?(/[0-9]+)?$ ]]; then
    echo "dpop_load.sh: REDIS_URL must be redis://127.0.0.1[:port][/db] (loopback only)" >&2
    exit 2
fi
REDIS_PORT=${BASH_REMATCH[3]:-6379}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LUA=$BENCH_DIR/dpop.lua
PROOFS_PY=$BENCH_DIR/dpop_proofs.py
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-dpop-bench.XXXXXX")
TENANT=bench
# How far a proof's iat may be from keygate's clock (set in the config below).
IAT_WINDOW=60

KEYGATE_PID=
WRK_PID=
REDIS_PREFIX=

cleanup() {
    local status=$?
    signal TERM "$WRK_PID" "$KEYGATE_PID"
    # Bounded: give each process 5 s to drain, then kill it.
    reap "$WRK_PID" "$KEYGATE_PID"
    if [[ -n $REDIS_PREFIX ]] && command -v redis-cli >/dev/null; then
        # This run's keys only: the prefix is random. Replay entries expire by themselves.
        timeout 20 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern "{$REDIS_PREFIX}:*" 2>/dev/null |
            timeout 20 xargs -r -n 500 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" unlink >/dev/null 2>&1 || true
    fi
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

apt_install_missing wrk
require python3 curl
if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
    log "installing PyJWT and cryptography (pip)"
    timeout 300 python3 -m pip install --quiet PyJWT cryptography >"$WORK/pip.log" 2>&1 ||
        die "pip install PyJWT cryptography failed: $(tail -n 5 "$WORK/pip.log")"
fi

build_keygate

pick_ports 3
ISSUER_LISTEN=${ISSUER#http://}

# --- 2. keygate -------------------------------------------------------------------------------

# write_config [redis]: the config, with the replay store in Redis when asked.
write_config() {
    cat <<EOF
[server]
listen = "$VERIFY_ADDR"
admin_listen = "$ADMIN_ADDR"
shutdown_grace = "2s"
token_cache = 2048

[dev_issuer]
listen = "$ISSUER_LISTEN"

[[providers]]
tenant = "$TENANT"
name = "dpop"
issuer = "$ISSUER"
jwks_uri = "$ISSUER/jwks.json"
audiences = ["keygate-dev"]
algorithms = ["ES256"]
allow_insecure_http = true
dpop = "allowed"
dpop_iat_window = "${IAT_WINDOW}s"
EOF
    if [[ ${1:-} == redis ]]; then
        cat <<EOF

[cluster]
backend = "redis"
redis_url = "$REDIS_URL"
prefix = "$REDIS_PREFIX"

[[cluster.keys]]
id = "k1"
secret = "$CLUSTER_SECRET"
EOF
    fi
}

# start_keygate [redis]: starts keygate serve and waits until /readyz says it is ready.
start_keygate() {
    write_config "$@" >"$WORK/keygate.toml"
    log "starting keygate serve on $VERIFY_ADDR (admin $ADMIN_ADDR, issuer $ISSUER${1:+, replay store: $1})"
    KEYGATE_LOG=warn,keygate_server::cli::serve=info "$KEYGATE_BIN" serve --config "$WORK/keygate.toml" \
        >"$WORK/keygate.out" 2>"$WORK/keygate.log" &
    KEYGATE_PID=$!
    for _ in $(seq 150); do
        curl -sf --max-time 1 "http://$ADMIN_ADDR/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$KEYGATE_PID" 2>/dev/null || die "keygate exited early"
        sleep 0.1
    done
    die "keygate not ready within 15 s"
}

stop_keygate() {
    signal TERM "$KEYGATE_PID"
    reap "$KEYGATE_PID"
    wait "$KEYGATE_PID" 2>/dev/null || true
    KEYGATE_PID=
}

# mint_tokens: a fresh key and tokens (the dev issuer makes a new signing key at each start).
mint_tokens() {
    rm -f "$WORK"/{key.pem,bound.txt,bearer.txt}
    timeout 30 python3 "$PROOFS_PY" setup "$ISSUER" "$WORK"
}

# probe SCHEME TOKENFILE [PROOF]: the status and X-Auth-Reason of one GET /verify.
probe() {
    local args=(-s -o /dev/null -D "$WORK/probe.headers" -w '%{http_code}' --max-time 5
        -H "Authorization: $1 $(cat "$2")" -H "X-Keygate-Tenant: $TENANT"
        -H "X-Forwarded-Proto: http" -H "X-Forwarded-Host: shop.test"
        -H "X-Forwarded-Uri: /api/orders" -H "X-Forwarded-Method: GET")
    if [[ -n ${3:-} ]]; then
        args+=(-H "DPoP: $3")
    fi
    local code
    code=$(curl "${args[@]}" "http://$VERIFY_ADDR/verify") || true
    echo "$code:$(tr -d '\r' <"$WORK/probe.headers" | sed -n 's/^[Xx]-[Aa]uth-[Rr]eason: *//p')"
}

# sanity LABEL: the bearer token passes, a proven bound token passes once, its replay is refused
# as dpop_replayed, and the bound token without a proof is refused.
#
# One proof goes first, whatever its answer (200, or 401 dpop_replayed): a replay store that
# may have forgotten proofs (a fresh process's memory, counted from the second of its first
# proof) refuses as possibly replayed any proof issued before that, and every proof checked
# from here on, made afterwards, is then younger than it.
sanity() {
    local got proof
    got=$(probe Bearer "$WORK/bearer.txt")
    [[ $got == 200:* ]] || die "$1: the bearer token got $got from /verify"
    timeout 30 python3 "$PROOFS_PY" proofs "$WORK" 1 "$WORK/probe.txt" 2>/dev/null
    got=$(probe DPoP "$WORK/bound.txt" "$(cat "$WORK/probe.txt")")
    [[ $got == 200:* || $got == 401:dpop_replayed ]] || die "$1: the first proof got $got"
    timeout 30 python3 "$PROOFS_PY" proofs "$WORK" 1 "$WORK/probe.txt" 2>/dev/null
    proof=$(cat "$WORK/probe.txt")
    got=$(probe DPoP "$WORK/bound.txt" "$proof")
    [[ $got == 200:* ]] || die "$1: a bound token with a fresh proof got $got"
    got=$(probe DPoP "$WORK/bound.txt" "$proof")
    [[ $got == 401:dpop_replayed ]] || die "$1: a replayed proof got $got, not 401:dpop_replayed"
    got=$(probe DPoP "$WORK/bound.txt")
    [[ $got == 401:* ]] || die "$1: a bound token without a proof got $got"
    log "$1: bearer 200, proof 200, replay 401 dpop_replayed, no proof ${got/:/ }"
}

# --- helpers ----------------------------------------------------------------------------------



ROWS=()
NOTES=()
FAILURES=()

# measure NAME LABEL LUA_ARGS...: one wrk run against keygate, its row in the table; sets OUT.
measure() {
    local name=$1 label=$2
    shift 2
    OUT=$WORK/$name.out
    local t0 t1 c0 c1 cpu non200 sockerr exhausted
    log "$label: ${DURATION}s"
    c0=$(cpu_ticks "$KEYGATE_PID")
    t0=$(date +%s%N)
    timeout $((DURATION + 60)) wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 5s \
        --latency -s "$LUA" "http://$VERIFY_ADDR/verify" -- "$@" >"$OUT" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed: $(tail -n 5 "$OUT")"
    WRK_PID=
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$KEYGATE_PID")
    grep -q '^RESULT ' "$OUT" || die "wrk printed no RESULT line: $(tail -n 5 "$OUT")"
    cpu=$(python3 -c "print(f'{100 * ($c1 - $c0) / $CLK_TCK / (($t1 - $t0) / 1e9):.0f}%')")
    non200=$(field "$OUT" non200)
    sockerr=$(field "$OUT" sockerr)
    exhausted=$(field "$OUT" exhausted)
    ROWS+=("| $label | $(field "$OUT" rps) | $(fmt_ms "$(field "$OUT" p50_us)") | $(fmt_ms "$(field "$OUT" p99_us)") | $cpu | $non200 |")
    NOTES+=("$label: $(field "$OUT" requests) requests; non-200 by status:reason: $(field "$OUT" codes); socket errors: $sockerr")
    if ((non200 > 0 || sockerr > 0)); then
        FAILURES+=("$label: $non200 non-200 ($(field "$OUT" codes)), $sockerr socket errors")
    fi
    if ((exhausted > 0)); then
        FAILURES+=("$label: the proof budget was too small: $exhausted requests found no proof left (raise MAX_PROOFS or lower DURATION)")
    fi
}

# proofs_for LABEL: makes $PROOFS proofs into $WORK/proofs.txt, checking that the run ends
# inside their iat window.
proofs_for() {
    local t0 t1 gen
    log "$1: making $PROOFS proofs"
    rm -f "$WORK/proofs.txt"
    t0=$(date +%s)
    timeout 120 python3 "$PROOFS_PY" proofs "$WORK" "$PROOFS" "$WORK/proofs.txt"
    t1=$(date +%s)
    gen=$((t1 - t0))
    # The oldest proof is used first and the youngest last; the last proofs used are at most
    # gen + DURATION old. Keep a 10 s margin.
    if ((gen + DURATION + 10 > IAT_WINDOW)); then
        die "$1: making the proofs took ${gen}s: with DURATION=${DURATION}s the run would outlast their ${IAT_WINDOW}s window (lower DURATION or MAX_PROOFS)"
    fi
}

# --- 3. memory replay store: bearer baseline, then DPoP ----------------------------------------

start_keygate
mint_tokens
sanity "memory"

measure bearer "bearer (cached JWT)" bearer "$WORK/bearer.txt" "$TENANT"
BEARER_RPS=$(field "$OUT" rps)
PROOFS=$(python3 -c "import math; print(max(1000, min($MAX_PROOFS, math.ceil($BEARER_RPS * $DURATION * 1.3))))")
CAPPED=$(python3 -c "print(', capped at MAX_PROOFS' if $BEARER_RPS * $DURATION * 1.3 > $MAX_PROOFS else '')")
NOTES+=("proof budget per DPoP run: $PROOFS (bearer rate $BEARER_RPS/s x ${DURATION}s x 1.3$CAPPED)")

proofs_for "dpop (memory)"
measure dpop-memory "dpop (memory replay store)" dpop "$WORK/bound.txt" "$TENANT" "$WORK/proofs.txt" "$THREADS"
stop_keygate

# --- 4. Redis replay store ------------------------------------------------------------------

# Reachable before keygate is pointed at it: a PING over bash's /dev/tcp, bounded.
pong=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT && printf 'PING\r\n' >&3 && head -c 5 <&3" 2>/dev/null || true)
[[ $pong == +PONG ]] || die "no Redis answering PING on 127.0.0.1:$REDIS_PORT (REDIS_URL=$REDIS_URL)"
REDIS_PREFIX=kgdpop$(python3 -c 'import secrets; print(secrets.token_hex(4))')
CLUSTER_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

start_keygate redis
mint_tokens
sanity "redis"
proofs_for "dpop (redis)"
measure dpop-redis "dpop (Redis replay store)" dpop "$WORK/bound.txt" "$TENANT" "$WORK/proofs.txt" "$THREADS"
if command -v redis-cli >/dev/null; then
    # One entry per proof that reached the store, until they expire: wrk counts no answer
    # that was still on its way when it stopped, so up to one per connection more.
    ENTRIES=$(timeout 30 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern "{$REDIS_PREFIX}:dpop:*" |
        wc -l || true)
    NOTES+=("dpop (Redis replay store): replay entries in Redis under this run's prefix: $ENTRIES (the run's 200s, plus 1 or 2 from the sanity check, plus up to $CONNECTIONS still in flight when wrk stopped)")
fi
stop_keygate

# --- 5. report ------------------------------------------------------------------------------

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??' && echo " (uncommitted changes)" || true)
CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
REDIS_VERSION=$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server 2>/dev/null |
    tr -d '\r' | sed -n 's/^redis_version://p' || true)

cat <<EOF

## keygate /verify with DPoP under load

Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}. Commit: $COMMIT$DIRTY. wrk -t $THREADS -c $CONNECTIONS, keep-alive, ${DURATION}s per run, on the same machine as the server (loopback). Redis ${REDIS_VERSION:-(version unknown)} on 127.0.0.1:$REDIS_PORT.

| scenario | req/s | p50 | p99 | keygate CPU % (one core = 100%) | non-200s |
|---|---:|---:|---:|---:|---:|
EOF
printf '%s\n' "${ROWS[@]}"
echo
printf -- '- %s\n' "${NOTES[@]}"

if ((${#FAILURES[@]} > 0)); then
    echo >&2
    printf 'dpop_load.sh: FAILED: %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
