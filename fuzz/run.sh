#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and runs each:
# first every committed input once (fuzz/corpus/<target>/ and the crash inputs kept in
# fuzz/regressions/<target>/), then fuzzing for SECONDS (default 20) from that corpus, new inputs
# going to a scratch directory. Ends with one line "N passed, N failed" (one case per target).
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Env: CC (default clang-14 or clang), PX_FUZZ_BUILD (default build-fuzz), PX_FUZZ_JOBS.
# A crash leaves its input in $PX_FUZZ_BUILD/artifacts/<target>/: fix the bug, then copy the
# input into fuzz/regressions/<target>/ so it is replayed from then on.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
shift || true
out=${PX_FUZZ_BUILD:-build-fuzz}
case $out in
    /*) ;;
    *) out=./$out ;;
esac
cc=${CC:-}
if [ -z "$cc" ]; then
    cc=$(command -v clang-14 || command -v clang || true)
fi
if [ -z "$cc" ]; then
    echo "fuzz: clang not found (apt-get install clang-14 libclang-rt-14-dev)"
    echo "0 passed, 1 failed"
    exit 1
fi
mkdir -p "$out/obj" "$out/artifacts" "$out/logs"

pkgs="libuv jansson yaml-0.1 libcurl sqlite3 libzstd libcrypto libpq"
common_flags="-g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
 -Wall -Wextra -Wno-unused-parameter -Ihost/base -Ihost/core -Ihost/http -Ihost/store -Ihost/runtime \
 -Iutil -Isdk/include -Ifuzz $(pkg-config --cflags $pkgs)"
cflags="$common_flags -fsanitize=fuzzer,address,undefined"
# The host the plugin targets run in (fuzzhost.c: the real runtime) is a static library built
# once, with the sanitizers but without coverage feedback, so that the fuzzer steers by the
# plugin's code and a target's "cov" counts what it counted with earlier hosts.
version=$(sed -n "s/^ *version : '\(.*\)',$/\1/p" meson.build | head -1)
hostflags="$common_flags -fsanitize=address,undefined"
hostdefs=("-DPX_VERSION=\"$version\"")
hostlib=$out/libpxhost.a
libs="$(pkg-config --libs $pkgs) -lhttp_parser -lpthread -ldl -lm"
util=""
for f in util/*.c; do util="$util $f"; done
base="host/base/log.c host/base/err.c host/base/fsutil.c host/base/admin_token.c$util"

# target name -> sources, extra flags
declare -A srcs flags runflags
add() { srcs[$1]=$2; flags[$1]=${3:-}; runflags[$1]=${4:-}; }
add fuzz_config "fuzz/targets/fuzz_config.c host/core/config.c $base"
add fuzz_mapping "fuzz/targets/fuzz_mapping.c host/core/mapping.c $base"
add fuzz_http "fuzz/targets/fuzz_http.c host/http/http_server.c $base"
add fuzz_json_check "fuzz/targets/fuzz_json_check.c host/core/json_check.c $base"
if [ -f plugins/ezzing/envelope.c ]; then
    add fuzz_ezzing_envelope "fuzz/targets/fuzz_ezzing_envelope.c plugins/ezzing/envelope.c$util" \
        "-Iplugins/ezzing"
fi
if [ -f plugins/notification/message.c ]; then
    add fuzz_eventbridge "fuzz/targets/fuzz_eventbridge.c plugins/notification/message.c$util" \
        "-Iplugins/notification"
fi
if [ -f plugins/common/sqs_answer.c ]; then
    add fuzz_sqs_answer "fuzz/targets/fuzz_sqs_answer.c plugins/common/sigv4.c plugins/common/sqs_answer.c$util" \
        "-Iplugins/common"
fi
common=""
for f in plugins/common/*.c; do common="$common $f"; done
for p in webhook ezzing ploomes amocrm notification; do
    [ -f "plugins/$p/meson.build" ] || continue
    psrc=""
    for f in $(grep -o "'[A-Za-z0-9_]*\.c'" "plugins/$p/meson.build" | tr -d "'"); do
        psrc="$psrc plugins/$p/$f"
    done
    extra="-DFUZZ_$(echo "$p" | tr a-z A-Z) -Iplugins/common -Iplugins/$p"
    if [ "$p" = notification ]; then
        extra="$extra $(pkg-config --cflags --libs librabbitmq)"
    fi
    # A runtime keeps allocations from one input to the next (its loop, the client's
    # connections), which would make libFuzzer scan for leaks after every input: leaks are
    # found by LeakSanitizer when the process exits instead.
    add "fuzz_plugin_$p" "fuzz/targets/fuzz_plugin.c fuzz/fuzzhost.c $common$psrc $hostlib" \
        "$extra" "-detect_leaks=0"
done

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(printf '%s\n' "${!srcs[@]}" | sort)
fi

passed=0
failed=0
build_one() {
    local t=$1 bin="$out/$t"
    local newest
    newest=$(ls -t ${srcs[$t]} fuzz/fuzzhost.h fuzz/run.sh host/*/*.h util/*.h plugins/*/*.h 2>/dev/null | head -1)
    if [ -x "$bin" ] && [ "$bin" -nt "$newest" ]; then
        return 0
    fi
    # shellcheck disable=SC2086
    "$cc" $cflags ${flags[$t]} ${srcs[$t]} $libs -o "$bin" 2>"$out/logs/$t.build"
}

# every host source but the command line's: what the runtime needs, built into $hostlib
build_hostlib() {
    local files=() f o objs=() newest
    for f in host/base/*.c host/core/*.c host/store/*.c host/http/*.c host/runtime/*.c util/*.c; do
        files+=("$f")
    done
    # shellcheck disable=SC2012
    newest=$(ls -t "${files[@]}" host/*/*.h util/*.h sdk/include/plexus/*.h fuzz/run.sh | head -1)
    if [ -f "$hostlib" ] && [ "$hostlib" -nt "$newest" ]; then
        return 0
    fi
    mkdir -p "$out/obj/host"
    for f in "${files[@]}"; do
        o=$out/obj/host/$(echo "$f" | tr / _).o
        objs+=("$o")
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
            wait -n
        done
        # shellcheck disable=SC2086
        "$cc" $hostflags "${hostdefs[@]}" -c "$f" -o "$o" 2>>"$out/logs/hostlib.build" &
    done
    wait
    rm -f "$hostlib"
    ar rcs "$hostlib" "${objs[@]}" 2>>"$out/logs/hostlib.build"
}

# build in parallel, then run one after another
jobs=${PX_FUZZ_JOBS:-$(nproc)}
for t in "${targets[@]}"; do
    case $t in
        fuzz_plugin_*)
            : >"$out/logs/hostlib.build"
            build_hostlib || true
            break
            ;;
    esac
done
declare -A built
for t in "${targets[@]}"; do
    [ -n "${srcs[$t]:-}" ] || continue
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n
    done
    (build_one "$t"; echo $? >"$out/logs/$t.rc") &
done
wait
for t in "${targets[@]}"; do
    [ -n "${srcs[$t]:-}" ] || continue
    built[$t]=$(cat "$out/logs/$t.rc" 2>/dev/null || echo 1)
done

for t in "${targets[@]}"; do
    if [ -z "${srcs[$t]:-}" ]; then
        echo "fuzz: unknown target $t"
        failed=$((failed + 1))
        continue
    fi
    if [ "${built[$t]}" != 0 ]; then
        echo "FAIL $t (build)"
        case $t in
            fuzz_plugin_*) sed -n 1,30p "$out/logs/hostlib.build" 2>/dev/null ;;
        esac
        sed -n 1,30p "$out/logs/$t.build"
        failed=$((failed + 1))
        continue
    fi
    corpus=fuzz/corpus/$t
    regress=fuzz/regressions/$t
    mkdir -p "$corpus" "$out/artifacts/$t"
    replay=("$corpus")
    [ -d "$regress" ] && replay+=("$regress")
    log="$out/logs/$t.log"
    # 1. every committed input once
    # shellcheck disable=SC2086
    if ! "$out/$t" ${runflags[$t]} -runs=0 -timeout=20 -rss_limit_mb=2048 \
            -artifact_prefix="$out/artifacts/$t/" "${replay[@]}" >"$log" 2>&1; then
        echo "FAIL $t (a committed input crashes; see $log)"
        grep -m 5 -E "ERROR|runtime error|Test unit written" "$log"
        failed=$((failed + 1))
        continue
    fi
    # 2. fuzz from the corpus; new inputs go to a scratch directory
    work=$(mktemp -d "$out/work-$t.XXXXXX")
    # shellcheck disable=SC2086
    if "$out/$t" ${runflags[$t]} -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
            -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 \
            "$work" "${replay[@]}" >>"$log" 2>&1; then
        execs=$(grep -m1 -o "stat::number_of_executed_units: *[0-9]*" "$log" | grep -o "[0-9]*$")
        cov=$(grep -o "cov: [0-9]*" "$log" | tail -1)
        echo "ok   $t (${seconds}s, ${execs:-?} runs, ${cov:-cov: ?})"
        passed=$((passed + 1))
    else
        echo "FAIL $t (see $log)"
        grep -m 5 -E "ERROR|runtime error|Test unit written|SUMMARY" "$log"
        failed=$((failed + 1))
    fi
    rm -rf "$work"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
