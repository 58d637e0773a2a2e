#!/usr/bin/env bash
# Builds every fuzz target and runs each for N seconds (default 60) on the stable toolchain.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#   fuzz/run.sh --seeds      # rewrite the seed corpora (examples/make_corpus.rs)
#
# cargo-fuzz is installed from the registry when missing. It asks rustc for `-Z` flags
# (sanitizers), which stable accepts with RUSTC_BOOTSTRAP=1; set only for these commands.
# Environment: FUZZ_SANITIZER (address, the default, or none), FUZZ_CODEGEN_UNITS (unset: one
# codegen unit per crate, cargo-fuzz's default, a slower build for much faster runs), FUZZ_QUIET=1
# to keep libFuzzer's output in the logs only.
#
# Builds go to fuzz/target (kept out of git and away from the workspace's target dir). Each
# target fuzzes a working corpus in fuzz/target/corpus/<target>, seeded from the committed
# fuzz/corpus/<target> (never written to). Crash inputs land in fuzz/artifacts/<target>/.
# Exits 1 if any target found a crash (or a leak, or a timeout), 0 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ "${1:-}" = "--seeds" ]; then
    # The generator, built with the flags cargo-fuzz 0.13 uses for `--release --debug-assertions
    # --sanitizer address`, so that it reuses the fuzz build's dependencies (other flags work
    # too, after a full build of their own).
    triple=$(rustc -vV | sed -n 's/^host: //p')
    RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Zsanitizer=address \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1" \
        cargo build --release --target "$triple" --config 'profile.release.debug="line-tables-only"' \
        --example make_corpus
    "target/$triple/release/examples/make_corpus"
    echo "run.sh: seeds written to fuzz/corpus/"
    exit 0
fi

seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(token_verify jwks_parse cache_headers config_parse admin_bodies bus_entry)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The same flags for build and run, or `cargo fuzz run` rebuilds.
flags=(--release --debug-assertions --sanitizer "$sanitizer")
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
    flags+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi

echo "run.sh: $(rustc --version), $(cargo fuzz --version), sanitizer ${sanitizer}"
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "run.sh: build took $(($(date +%s) - start)) s"

mkdir -p target/logs
summary=()
failed=0
for t in "${targets[@]}"; do
    work="target/corpus/$t"
    mkdir -p "$work" "artifacts/$t"
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=25 -rss_limit_mb=4096)
    if [ -f "dicts/$t.dict" ]; then
        args+=(-dict="dicts/$t.dict")
    fi
    log="target/logs/$t.log"
    echo "run.sh: fuzzing $t for ${seconds} s (log: fuzz/$log)"
    status=0
    if [ "${FUZZ_QUIET:-0}" = 1 ]; then
        cargo fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- "${args[@]}" >"$log" 2>&1 || status=$?
    else
        cargo fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- "${args[@]}" 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    if [ -z "$execs" ]; then
        # No final stats (the run stopped on a crash): the last progress line's count.
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/^Test unit written to //' || true)
    if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
        failed=1
        summary+=("$(printf '%-14s %12s execs  CRASH: %s' "$t" "${execs:-?}" "${artifact:-exit $status, see fuzz/$log}")")
    else
        summary+=("$(printf '%-14s %12s execs  no crash' "$t" "${execs:-?}")")
    fi
done

echo
echo "run.sh: ${seconds} s per target, sanitizer ${sanitizer}, $(($(date +%s) - start)) s in all"
printf '%s\n' "${summary[@]}"
exit "$failed"
