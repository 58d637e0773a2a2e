#!/usr/bin/env bash
# bench/soak.sh [MINUTES]: a soak of a three-replica keygate cluster on a private Redis, with
# mixed traffic, key rotations, revocations and Redis restarts; checks that no valid token is
# refused, that no acknowledged revocation is lost, and that memory stays flat.
#
# Starts a private redis-server on a free loopback port and three release `keygate serve`
# replicas on the Redis bus. Replica 0 runs the development issuer; replicas 1 and 2 trust it
# as an ordinary provider (its JWKS URL over loopback http). Then, for MINUTES (default 10),
# in segments of 30 s:
#   - a fresh pool of tokens is minted (POST /mint), and wrk drives GET /verify on every
#     replica with it (bench/verify.lua);
#   - halfway through each segment the issuer rotates its key (POST /rotate); the pool's key
#     stays published, the next pool is signed by the new one;
#   - every 5 s a token of the pool is revoked through a random replica's admin API;
#   - every 2 min Redis is killed (SIGKILL) and started again, empty, on the same port, 3 s
#     later;
#   - every 10 s the RSS of each keygate process is sampled.
# At the end it prints requests, non-2xx answers split into expected (401 revoked: the pool's
# revoked tokens) and unexpected (anything else; none is expected during a Redis outage
# either), revocations by answer and whether every acknowledged one is held by every replica,
# RSS per replica at start, after warm-up (60 s) and at the end, and the JWKS fetches the
# issuer served. Exit status 1 if anything unexpected happened or any replica's RSS grew more
# than 20 % after warm-up.
#
# Bounded in time, loopback only; everything started here is stopped on exit.
#
# Environment: CONNECTIONS per replica (default 4), POOL tokens per segment (default 256).

set -euo pipefail

MINUTES=${1:-10}
CONNECTIONS=${CONNECTIONS:-4}
POOL=${POOL:-256}
SEGMENT=30
ROTATE_AT=15
REVOKE_EVERY=5
REDIS_RESTART_EVERY=120
REDIS_DOWN=3
RSS_EVERY=10
WARMUP=60
MAX_GROWTH_PCT=20

for v in MINUTES CONNECTIONS POOL; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} < 1)); then
        echo "soak.sh: $v must be a positive integer" >&2
        exit 2
    fi
done
if ((MINUTES > 120 || CONNECTIONS > 64 || POOL > 5000)); then
    echo "soak.sh: MINUTES is capped at 120, CONNECTIONS at 64, POOL at 5000" >&2
    exit 2
fi
if ((MINUTES * 60 <= WARMUP)); then
    echo "soak.sh: run at least 2 minutes (the first $WARMUP s are warm-up)" >&2
    exit 2
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LUA=$BENCH_DIR/verify.lua
PY="python3 $BENCH_DIR/soak.py"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-soak.XXXXXX")

REDIS_PID=
KEYGATE_PIDS=()
WRK_PIDS=()

cleanup() {
    local status=$?
    signal TERM "${WRK_PIDS[@]}" "${KEYGATE_PIDS[@]}"
    # Bounded: 5 s to drain, then SIGKILL.
    reap "${WRK_PIDS[@]}" "${KEYGATE_PIDS[@]}"
    if [[ -n $REDIS_PID ]]; then
        { kill -KILL "$REDIS_PID" && wait "$REDIS_PID"; } 2>/dev/null || true
    fi
    if ((status != 0)); then
        for i in 0 1 2; do
            show_tail "$WORK/keygate-$i.log" 15 "replica $i's log"
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}

log() { printf '== [%4ds] %s\n' "$SECONDS" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap_cleanup

# --- tools and build ------------------------------------------------------------------------

apt_install_missing wrk redis-server
require python3 curl

build_keygate

# --- redis ------------------------------------------------------------------------------------

mapfile -t PORTS < <($PY ports 8)
REDIS_PORT=${PORTS[0]}
ISSUER=http://127.0.0.1:${PORTS[1]}
VERIFY=("127.0.0.1:${PORTS[2]}" "127.0.0.1:${PORTS[3]}" "127.0.0.1:${PORTS[4]}")
ADMIN=("127.0.0.1:${PORTS[5]}" "127.0.0.1:${PORTS[6]}" "127.0.0.1:${PORTS[7]}")
mkdir -p "$WORK/redis"

start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --protected-mode yes --dir "$WORK/redis" \
        >>"$WORK/redis/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
        $PY ping "$REDIS_PORT" && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "redis-server did not answer on port $REDIS_PORT: $(tail -n 5 "$WORK/redis/redis.log")"
}

log "starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence)"
start_redis

# --- replicas ---------------------------------------------------------------------------------

new_admin_key
CLUSTER_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

write_config() {
    local i=$1
    cat <<EOF
[server]
listen = "${VERIFY[$i]}"
admin_listen = "${ADMIN[$i]}"
shutdown_grace = "2s"
# Small enough that the first pool fills it during warm-up: a cache still filling up would
# look like a leak.
token_cache = $POOL
node_id = "soak-$i"

$(admin_key_toml soak)

[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"
prefix = "soak"

[[cluster.keys]]
id = "soak"
secret = "$CLUSTER_SECRET"
EOF
    if ((i == 0)); then
        cat <<EOF

[dev_issuer]
listen = "127.0.0.1:${PORTS[1]}"
EOF
    else
        cat <<EOF

[[providers]]
tenant = "dev"
name = "dev"
issuer = "$ISSUER"
jwks_uri = "$ISSUER/jwks.json"
audiences = ["keygate-dev"]
algorithms = ["ES256"]
allow_insecure_http = true
EOF
    fi
}

start_replica() {
    local i=$1
    write_config "$i" >"$WORK/keygate-$i.toml"
    KEYGATE_LOG=warn,keygate_server::cli::serve=info "$KEYGATE_BIN" serve \
        --config "$WORK/keygate-$i.toml" >"$WORK/keygate-$i.out" 2>"$WORK/keygate-$i.log" &
    KEYGATE_PIDS[i]=$!
    for _ in $(seq 150); do
        curl -sf --max-time 1 "http://${ADMIN[$i]}/readyz" >/dev/null 2>&1 && return 0
        kill -0 "${KEYGATE_PIDS[$i]}" 2>/dev/null || die "replica $i exited early"
        sleep 0.1
    done
    die "replica $i not ready within 15 s"
}

# The issuer's replica first: the others fetch their keys from it.
for i in 0 1 2; do
    log "starting replica $i (verify ${VERIFY[$i]}, admin ${ADMIN[$i]})"
    start_replica "$i"
done

# --- helpers ----------------------------------------------------------------------------------

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

sample_rss() {
    local line=$1
    for i in 0 1 2; do
        kill -0 "${KEYGATE_PIDS[$i]}" 2>/dev/null || die "replica $i died"
        line+=" $(rss_kib "${KEYGATE_PIDS[$i]}")"
    done
    echo "$line" >>"$WORK/rss.txt"
}

# Redis goes down here and comes back (empty) REDIS_DOWN seconds later, from the main loop,
# so traffic and admin calls go on meanwhile.
kill_redis() {
    log "redis: SIGKILL; back, empty, in ${REDIS_DOWN} s"
    # (Redirected as a group: bash reports a job killed by a signal on its own stderr.)
    { kill -KILL "$REDIS_PID" && wait "$REDIS_PID"; } 2>/dev/null || true
    REDIS_PID=
    REDIS_BACK_AT=$((SECONDS + REDIS_DOWN))
}

revive_redis() {
    start_redis
    REDIS_BACK_AT=
    REDIS_RESTARTS=$((REDIS_RESTARTS + 1))
}

revoke_one() {
    local pool=$1 n=$2 i token out
    i=$((RANDOM % 3))
    # The pool's first tokens are the ones revoked, one after another.
    token=$(sed -n "$((n + 1))p" "$pool")
    [[ -n $token ]] || return 0
    out=$($PY revoke "http://${ADMIN[$i]}" "$WORK/admin.key" "$token")
    echo "$out $i $SECONDS" >>"$WORK/revocations.txt"
}

# --- the soak ---------------------------------------------------------------------------------

END=$((SECONDS + MINUTES * 60))
START=$SECONDS
REDIS_RESTARTS=0
ROTATIONS=0
NEXT_REDIS=$((START + REDIS_RESTART_EVERY))
NEXT_RSS=$START
: >"$WORK/revocations.txt"
: >"$WORK/rss.txt"
REDIS_BACK_AT=
segment=0
log "soak: $MINUTES min, segments of ${SEGMENT}s, $CONNECTIONS connections per replica"
while ((SECONDS < END)); do
    segment=$((segment + 1))
    secs=$((END - SECONDS < SEGMENT ? END - SECONDS : SEGMENT))
    ((secs >= 2)) || break
    pool=$WORK/pool-$segment.txt
    timeout 60 $PY mint "$ISSUER" "$POOL" "$pool" "seg$segment" || die "minting failed"
    WRK_PIDS=()
    for i in 0 1 2; do
        timeout $((secs + 30)) wrk -t 1 -c "$CONNECTIONS" -d "${secs}s" --timeout 5s --latency \
            -s "$LUA" "http://${VERIFY[$i]}/verify" -- "$pool" /verify 1 \
            >"$WORK/wrk-$segment-$i.out" 2>&1 &
        WRK_PIDS+=($!)
    done
    seg_start=$SECONDS
    rotated=0
    revoked=0
    next_revoke=$((seg_start + 1))
    while ((SECONDS < seg_start + secs)); do
        now=$SECONDS
        if ((now >= NEXT_RSS)); then
            sample_rss "$((now - START))"
            NEXT_RSS=$((NEXT_RSS + RSS_EVERY))
        fi
        if ((!rotated && now >= seg_start + ROTATE_AT)); then
            curl -sf --max-time 5 -X POST "$ISSUER/rotate" >/dev/null || die "POST /rotate failed"
            ROTATIONS=$((ROTATIONS + 1))
            rotated=1
        fi
        if ((now >= next_revoke)); then
            revoke_one "$pool" "$revoked"
            revoked=$((revoked + 1))
            next_revoke=$((next_revoke + REVOKE_EVERY))
        fi
        if [[ -z $REDIS_BACK_AT ]] && ((now >= NEXT_REDIS && now + REDIS_DOWN + 2 < seg_start + secs)); then
            kill_redis
            NEXT_REDIS=$((NEXT_REDIS + REDIS_RESTART_EVERY))
        fi
        if [[ -n $REDIS_BACK_AT ]] && ((now >= REDIS_BACK_AT)); then
            revive_redis
        fi
        sleep 0.2
    done
    [[ -z $REDIS_BACK_AT ]] || revive_redis
    for pid in "${WRK_PIDS[@]}"; do
        wait "$pid" || die "wrk failed: $(tail -n 5 "$WORK"/wrk-"$segment"-*.out)"
    done
    WRK_PIDS=()
    log "segment $segment: $(grep -h '^RESULT' "$WORK"/wrk-"$segment"-*.out | awk '{ print $2, $6, $8 }' | tr '\n' ' ')"
done
sample_rss "$((SECONDS - START))"

# --- report -----------------------------------------------------------------------------------

log "soak over; checking that every acknowledged revocation is held by every replica"
# Give replicas that were reconnecting after the last Redis restart time to catch up.
sleep 5
awk '$1 == "200" { print $2 }' "$WORK/revocations.txt" >"$WORK/acknowledged.txt"
mapfile -t MISSING < <($PY missing "$WORK/admin.key" "$WORK/acknowledged.txt" \
    "http://${ADMIN[0]}" "http://${ADMIN[1]}" "http://${ADMIN[2]}")

FETCH_RE='^keygate_jwks_fetches_total[{].*tenant="dev".*provider="dev"'
FETCHES_OK=0
FETCHES_ERR=0
ADOPTED=0
RESYNCS=0
for i in 0 1 2; do
    FETCHES_OK=$((FETCHES_OK + $($PY metric "http://${ADMIN[$i]}" "$FETCH_RE.*result=\"ok\"")))
    FETCHES_ERR=$((FETCHES_ERR + $($PY metric "http://${ADMIN[$i]}" "$FETCH_RE.*result=\"error\"")))
    ADOPTED=$((ADOPTED + $($PY metric "http://${ADMIN[$i]}" '^keygate_jwks_adopted_total')))
    RESYNCS=$((RESYNCS + $($PY metric "http://${ADMIN[$i]}" '^keygate_bus_resyncs_total')))
done

python3 - "$WORK" "$WARMUP" "$MAX_GROWTH_PCT" "$MINUTES" "$REDIS_RESTARTS" "$ROTATIONS" \
    "$FETCHES_OK" "$FETCHES_ERR" "$ADOPTED" "$RESYNCS" "${MISSING[@]}" <<'EOF'
import glob, os, sys

work, warmup, max_growth, minutes, restarts, rotations = sys.argv[1:7]
fetches_ok, fetches_err, adopted, resyncs = (int(x) for x in sys.argv[7:11])
missing = [int(x) for x in sys.argv[11:]]
warmup, max_growth = int(warmup), float(max_growth)

requests = 0
sockerr = 0
worst_p99 = 0
codes = {}
for path in sorted(glob.glob(os.path.join(work, "wrk-*.out"))):
    line = next((l for l in open(path) if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"soak: no RESULT line in {path}")
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    requests += int(fields["requests"])
    sockerr += int(fields["sockerr"])
    worst_p99 = max(worst_p99, int(fields["p99_us"]))
    if fields["codes"] != "none":
        for kv in fields["codes"].split(","):
            code, n = kv.rsplit("=", 1)
            codes[code] = codes.get(code, 0) + int(n)
expected = codes.get("401:revoked", 0)
unexpected = {c: n for c, n in codes.items() if c != "401:revoked"}

revocations = {}
for line in open(os.path.join(work, "revocations.txt")):
    status = line.split()[0]
    revocations[status] = revocations.get(status, 0) + 1
odd_revocations = {s: n for s, n in revocations.items() if s not in ("200", "503")}

samples = [list(map(int, l.split())) for l in open(os.path.join(work, "rss.txt")) if l.strip()]
start = samples[0]
warm = next((s for s in samples if s[0] >= warmup), samples[-1])
end = samples[-1]
# Halfway between warm-up and the end: growth that goes on in both halves is a leak, growth
# that stops is the allocator settling.
half = next((s for s in samples if s[0] >= (warm[0] + end[0]) / 2), end)

failures = []
print()
print(f"## keygate soak: {minutes} min, 3 replicas, Redis restarted {restarts}x, {rotations} rotations")
print()
print(f"- /verify requests: {requests} (worst p99 of a 30 s segment on one replica: {worst_p99 / 1000:.1f} ms)")
print(f"- non-2xx expected (401 revoked, the pools' revoked tokens): {expected}")
print(f"- non-2xx unexpected: {sum(unexpected.values())} {unexpected or ''}; socket errors: {sockerr}")
print(f"- revocations: {revocations} (200 = in Redis; 503 bus_unavailable while Redis was down)")
print(f"- acknowledged revocations missing per replica after the run: {missing}")
print(f"- JWKS fetches served by the issuer (sum over replicas): {fetches_ok} ok, {fetches_err} failed; key sets adopted from peers: {adopted}; bus resyncs: {resyncs}")
print()
print("| replica | RSS at start | after warm-up | halfway | at end | growth after warm-up |")
print("|---|---:|---:|---:|---:|---:|")
mib = lambda kib: f"{kib / 1024:.1f} MiB"
for i in range(3):
    growth = 100.0 * (end[i + 1] - warm[i + 1]) / max(warm[i + 1], 1)
    print(f"| {i} | {mib(start[i + 1])} | {mib(warm[i + 1])} (at {warm[0]} s) | {mib(half[i + 1])} (at {half[0]} s) | {mib(end[i + 1])} (at {end[0]} s) | {growth:+.1f} % |")
    if growth > max_growth:
        failures.append(f"replica {i} RSS grew {growth:.1f} % after warm-up")
print()
if unexpected or sockerr:
    failures.append(f"unexpected non-2xx {unexpected}, socket errors {sockerr}")
if odd_revocations:
    failures.append(f"revocations answered {odd_revocations}")
if any(missing):
    failures.append(f"acknowledged revocations missing on replicas: {missing}")
if failures:
    print("FAILED: " + "; ".join(failures))
    sys.exit(1)
print("OK: no unexpected answer, no acknowledged revocation lost, memory flat after warm-up")
EOF
