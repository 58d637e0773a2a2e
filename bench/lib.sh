# bench/lib.sh: helpers shared by the bench scripts; sourced, not run. Each caller defines
# `log`, `cleanup` (its EXIT handler), `BENCH_DIR` (this folder), `ROOT` (the workspace) and
# `WORK` (its scratch directory) first.

# die MESSAGE...: prints the message after the script's name on stderr and exits 1.
die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# trap_cleanup: runs the caller's `cleanup` on exit, and turns INT and TERM into an exit
# (status 130 and 143) so that it runs then too.
trap_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# show_tail FILE LINES WHAT: prints the last LINES lines of FILE on stderr under a heading
# naming WHAT, if the file exists.
show_tail() {
    [[ -f $1 ]] || return 0
    echo "--- last lines of $3 ---" >&2
    tail -n "$2" "$1" >&2 || true
}

# apt_install PACKAGE...: installs the Debian packages given (the caller passes only the
# missing ones), with sudo when not root; bounded in time, logged to $WORK/apt.log.
apt_install() {
    (($# == 0)) && return 0
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root or sudo to install $*"
        sudo=(sudo -n)
    fi
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 600 "${sudo[@]}" apt-get install -y "$@" >"$WORK/apt.log" 2>&1; then
        timeout 600 "${sudo[@]}" apt-get update >>"$WORK/apt.log" 2>&1 || die "apt-get update failed"
        timeout 600 "${sudo[@]}" apt-get install -y "$@" >>"$WORK/apt.log" 2>&1 ||
            die "apt-get install $* failed"
    fi
}

# build_keygate: builds the release `keygate` binary and sets KEYGATE_BIN to its path.
build_keygate() {
    log "building keygate (release)"
    (cd "$ROOT" && cargo build --release --quiet -p keygate-server --bin keygate)
    KEYGATE_BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/keygate
    [[ -x $KEYGATE_BIN ]] || die "no binary at $KEYGATE_BIN"
}

# apt_install_missing COMMAND...: installs the Debian package of each command not on PATH
# (each package is named after its command).
apt_install_missing() {
    local missing=() cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    apt_install "${missing[@]}"
}

# require COMMAND...: dies unless every command is on PATH.
require() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || die "$cmd is required"
    done
}

# signal SIGNAL PID...: sends SIGNAL to each process given; empty ids and processes already
# gone are skipped.
signal() {
    local sig=$1 pid
    shift
    for pid in "$@"; do
        [[ -n $pid ]] || continue
        kill "-$sig" "$pid" 2>/dev/null || true
    done
}

# reap PID...: gives each process 5 s to exit (bounded), then SIGKILLs it. Signal them first.
reap() {
    local pid
    for pid in "$@"; do
        [[ -n $pid ]] || continue
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# new_admin_key: writes a fresh admin key secret to $WORK/admin.key (mode 600) and sets HASH
# to its hash, for the config's [[admin.keys]].
new_admin_key() {
    (umask 077 && python3 -c 'import secrets; print("kg_" + secrets.token_urlsafe(32))' >"$WORK/admin.key")
    HASH=$("$KEYGATE_BIN" admin hash-key <"$WORK/admin.key")
}

# admin_key_toml ID: the [[admin.keys]] entry of the key new_admin_key made, allowed to revoke
# tokens and read the status.
admin_key_toml() {
    cat <<EOT
[[admin.keys]]
id = "$1"
hash = "$HASH"
scopes = ["tokens:revoke", "status:read"]
EOT
}

# pick_ports N: N free loopback ports (N >= 3) into PORTS; the first three become VERIFY_ADDR,
# ADMIN_ADDR and the development issuer's ISSUER URL.
pick_ports() {
    mapfile -t PORTS < <(python3 "$BENCH_DIR/benchlib.py" ports "$1")
    VERIFY_ADDR=127.0.0.1:${PORTS[0]}
    ADMIN_ADDR=127.0.0.1:${PORTS[1]}
    ISSUER=http://127.0.0.1:${PORTS[2]}
}

# The clock ticks per second of /proc/<pid>/stat's times.
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID...: total utime+stime, in clock ticks, of the given processes.
cpu_ticks() {
    local total=0 pid stat
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # Fields after the command name, which is in parentheses: utime is the 12th, stime 13th.
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# field OUTFILE NAME: a key=value from the RESULT line.
field() { grep '^RESULT ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

fmt_ms() { python3 -c "print(f'{$1 / 1000:.2f} ms')"; }
