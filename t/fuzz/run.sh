#!/usr/bin/env bash
# One libFuzzer run of a harness of t/fuzz/, as `make fuzz` and t/40-fuzz.t
# do it:
#
#     t/fuzz/run.sh FUZZ_DIR NAME SECONDS [CORPUS_DIR]
#
# FUZZ_DIR holds the binaries (make fuzz-build); the run starts from
# CORPUS_DIR (default FUZZ_DIR/corpus-NAME), where the seeds of
# t/fuzz/corpus/NAME are copied first and where new inputs go, never into
# the repository.  A crash, a sanitizer report or a failed check of the
# harness leaves its input in FUZZ_DIR/artifacts-NAME/ and makes the script
# print the report and exit 1.  The last line printed sums the run up:
#     fuzz NAME: N runs in S s (E/s), coverage C, features F, corpus K, ok

set -uo pipefail

dir=$1
name=$2
seconds=$3
corpus=${4:-$dir/corpus-$name}

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$dir/$name
seeds=$top/t/fuzz/corpus/$name
dict=$top/t/fuzz/$name.dict
artifacts=$dir/artifacts-$name
log=$dir/$name.log

if [ ! -x "$bin" ]; then
    echo "fuzz $name: no $bin (make fuzz-build)" >&2
    exit 2
fi

mkdir -p "$corpus" "$artifacts"
cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true

args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10
      -rss_limit_mb=2048 -artifact_prefix="$artifacts/")
[ -f "$dict" ] && args+=(-dict="$dict")

before=$(ls "$artifacts" | wc -l)

UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-} \
ASAN_OPTIONS=abort_on_error=0:${ASAN_OPTIONS:-} \
    "$bin" "${args[@]}" "$corpus" > "$log" 2>&1
rc=$?

after=$(ls "$artifacts" | wc -l)

stat() {
    sed -n "s/^stat::$1: *//p" "$log" | tail -1
}

runs=$(stat number_of_executed_units)
speed=$(stat average_exec_per_sec)
last=$(grep -E '^#[0-9]+' "$log" | tail -1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<< "$last")

if [ "$rc" -ne 0 ] || [ "$after" -ne "$before" ]; then
    echo "fuzz $name: FAILED (exit $rc), the report:"
    sed -n '/^==[0-9]*==ERROR\|runtime error\|^FUZZ: \|^==[0-9]*== ERROR/,$p' \
        "$log" | grep -av '^#[0-9]' | head -60
    ls -t "$artifacts" | head -3 | sed "s|^|    input: $artifacts/|"
    echo "fuzz $name: CRASH after ${runs:-0} runs, coverage ${cov:-?}," \
         "features ${ft:-?}, corpus ${corp:-?} (log: $log)"
    exit 1
fi

echo "fuzz $name: ${runs:-0} runs in $seconds s (${speed:-0}/s)," \
     "coverage ${cov:-?}, features ${ft:-?}, corpus ${corp:-?}, ok"
