#!/usr/bin/env bash
# bench/memory.sh: resident memory of `keygate serve` with 10 providers, COUNT cached verified
# tokens and COUNT revocations (default 100,000 each), and the cost per entry.
#
# Starts a release `keygate serve` whose development issuer is trusted by 10 providers (one
# per tenant t0..t9, the dev issuer's own provider being t0), revokes COUNT random jtis through
# the admin API, mints COUNT tokens and verifies each once through /verify/<tenant> so the
# verified-token cache holds them, and reads VmRSS from /proc after each step. The state file
# lives on /dev/shm when there is one, so 100,000 synced appends do not time the disk.
# Loopback only; everything started here is stopped on exit.
#
# Environment: COUNT (default 100000, at most 200000).

set -euo pipefail

COUNT=${COUNT:-100000}
if ! [[ $COUNT =~ ^[0-9]+$ ]] || ((COUNT < 1 || COUNT > 200000)); then
    echo "memory.sh: COUNT must be 1 to 200000" >&2
    exit 2
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TOKENS_PY=$BENCH_DIR/tokens.py
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-memory.XXXXXX")
STATE_DIR=$WORK
if [[ -d /dev/shm && -w /dev/shm ]]; then
    STATE_DIR=$(mktemp -d /dev/shm/keygate-memory.XXXXXX)
fi
KEYGATE_PID=

cleanup() {
    local status=$?
    if [[ -n $KEYGATE_PID ]]; then
        kill -TERM "$KEYGATE_PID" 2>/dev/null || true
        reap "$KEYGATE_PID"
    fi
    if ((status != 0)); then
        show_tail "$WORK/keygate.log" 20 "the keygate log"
    fi
    rm -rf "$WORK"
    [[ $STATE_DIR == "$WORK" ]] || rm -rf "$STATE_DIR"
    exit "$status"
}

log() { printf '== %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
trap_cleanup
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$KEYGATE_PID/status"; }
status_field() {
    curl -sf -H "Authorization: Bearer $(cat "$WORK/admin.key")" "http://$ADMIN_ADDR/admin/v1/status" |
        python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"
}

require python3 curl

build_keygate

pick_ports 3

new_admin_key

{
    cat <<EOF
[server]
listen = "$VERIFY_ADDR"
admin_listen = "$ADMIN_ADDR"
shutdown_grace = "2s"
token_cache = $COUNT

[dev_issuer]
listen = "127.0.0.1:${PORTS[2]}"
tenant = "t0"
provider = "dev"

$(admin_key_toml bench)

[revocations]
max_token_lifetime = "1d"

[cluster]
backend = "local"
state_file = "$STATE_DIR/state.jsonl"
EOF
    for i in $(seq 1 9); do
        cat <<EOF

[[providers]]
tenant = "t$i"
name = "main"
issuer = "$ISSUER"
jwks_uri = "$ISSUER/jwks.json"
audiences = ["keygate-dev"]
allow_insecure_http = true
EOF
    done
} >"$WORK/keygate.toml"

log "starting keygate serve (10 providers, token cache $COUNT)"
KEYGATE_LOG=warn,keygate_server::cli::serve=info "$KEYGATE_BIN" serve --config "$WORK/keygate.toml" \
    >"$WORK/keygate.out" 2>"$WORK/keygate.log" &
KEYGATE_PID=$!
for _ in $(seq 100); do
    curl -sf "http://$ADMIN_ADDR/readyz" >/dev/null 2>&1 && break
    kill -0 "$KEYGATE_PID" 2>/dev/null || die "keygate exited early"
    sleep 0.1
done
curl -sf "http://$ADMIN_ADDR/readyz" >/dev/null || die "keygate not ready within 10 s"
TENANTS=$(seq -s, -f 't%g' 0 9)
# One verification per tenant first, so every provider holds its keys before the baseline.
timeout 60 python3 "$TOKENS_PY" mint "$ISSUER" 10 "$WORK/warm.txt" warm
timeout 60 python3 "$TOKENS_PY" verify "http://$VERIFY_ADDR" "$WORK/warm.txt" "$TENANTS" >/dev/null
sleep 1
R0=$(rss_kib)

log "revoking $COUNT jtis"
REVOKED=$(timeout 900 python3 "$TOKENS_PY" revoke "http://$ADMIN_ADDR" "$WORK/admin.key" "$COUNT")
[[ $REVOKED == "{\"200\": $COUNT}" ]] || die "revocations answered $REVOKED"
sleep 1
R1=$(rss_kib)
N_REV=$(status_field revocations)

log "minting and verifying $COUNT tokens"
timeout 600 python3 "$TOKENS_PY" mint "$ISSUER" "$COUNT" "$WORK/tokens.txt" memory
VERIFIED=$(timeout 900 python3 "$TOKENS_PY" verify "http://$VERIFY_ADDR" "$WORK/tokens.txt" "$TENANTS")
[[ $VERIFIED == "{\"200\": $COUNT}" ]] || die "verifications answered $VERIFIED"
sleep 1
R2=$(rss_kib)
N_TOK=$(status_field cached_tokens)
curl -sf -H "Authorization: Bearer $(cat "$WORK/admin.key")" "http://$ADMIN_ADDR/admin/v1/status" >"$WORK/status.json"
python3 - "$WORK/status.json" >&2 <<'EOF2'
import json, sys
s = json.load(open(sys.argv[1]))
for p in s["providers"]:
    print("==", p["tenant"], p["provider"], p["state"], p.get("counters"), file=sys.stderr)
EOF2
TOKEN_BYTES=$(awk '{ n += length($0) } END { printf "%.0f", n / NR }' "$WORK/tokens.txt")

python3 - "$R0" "$R1" "$R2" "$N_REV" "$N_TOK" "$TOKEN_BYTES" <<'EOF'
import sys
r0, r1, r2, n_rev, n_tok, token_bytes = (int(x) for x in sys.argv[1:])
mib = lambda kib: f"{kib / 1024:.1f} MiB"
print("| state | RSS | held |")
print("|---|---|---|")
print(f"| started, 10 providers warm | {mib(r0)} | |")
print(f"| + revocations | {mib(r1)} | {n_rev} revocations |")
print(f"| + verified tokens cached | {mib(r2)} | {n_tok} tokens ({token_bytes} B each on average) |")
print()
print(f"per revocation: {(r1 - r0) * 1024 / max(n_rev, 1):.0f} B; "
      f"per cached token: {(r2 - r1) * 1024 / max(n_tok, 1):.0f} B; "
      f"total {mib(r2)} (goal: under 200 MiB)")
EOF
