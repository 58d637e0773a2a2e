# bench/lib.sh: helpers shared by the bench scripts; sourced, not run. Each caller defines
# `log`, `die`, `ROOT` (the workspace) and `WORK` (its scratch directory) first.

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
