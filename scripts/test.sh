#!/usr/bin/env bash
# Installs what is missing, builds (normal and ASan+UBSan), runs every test in both builds, and
# ends with one line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test || exit 1
scripts/build.sh build || exit 1
scripts/build.sh build-san -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debug || exit 1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for dir in build build-san; do
    echo "== tests in $dir"
    meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" || status=1
done
# libFuzzer targets (clang): every committed corpus and crash input, then a short run of each
echo "== fuzz targets"
mkdir -p build-fuzz
fuzz/run.sh "${PX_FUZZ_SECONDS:-12}" 2>&1 | tee build-fuzz/run.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python3 tests/summary.py build/meson-logs/testlog.json build-san/meson-logs/testlog.json \
    build-fuzz/run.log
exit $status
