#!/usr/bin/env python3
"""Put throughput of the store backends compared: SQLite (durability normal and fsync) and
PostgreSQL (a throw-away local cluster, fsync on), the same N puts of the Ezzing example payload
with a dedupe key each, PER_TURN puts per loop turn (bench/store_put.c). Prints one line per
backend: puts/s, commits, operations per commit, commits/s, the slowest commit.
Usage: bench/store.py   (env: PX_BUILD_DIR=build, N=50000, PER_TURN=64)"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pg import Postgres  # noqa: E402

BUILD = os.environ.get("PX_BUILD_DIR", "build")
N = os.environ.get("N", "50000")
PER_TURN = os.environ.get("PER_TURN", "64")
PAYLOAD = os.path.join(ROOT, "bench", "payloads", "opportunity_created.json")


def build(tmp):
    subprocess.run([os.path.join(ROOT, "scripts", "build.sh"), BUILD], check=True, cwd=ROOT)
    libs = subprocess.run(["pkg-config", "--libs", "libuv", "jansson", "yaml-0.1", "libcurl",
                           "sqlite3", "libpq", "libzstd", "libcrypto"], capture_output=True, text=True,
                          check=True).stdout.split()
    exe = os.path.join(tmp, "store_put")
    b = os.path.join(ROOT, BUILD)
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra",
                    "-Isdk/include", "-Ihost/base", "-Ihost/core", "-Ihost/store", "-Iutil",
                    "bench/store_put.c", f"{b}/host/libpxcore.a", f"{b}/host/libpxbase.a",
                    f"{b}/util/libpxutil.a", *libs, "-lhttp_parser", "-lpthread", "-ldl", "-lm",
                    "-o", exe], check=True, cwd=ROOT)
    return exe


def run(exe, backend, target, fsync=False):
    r = subprocess.run([exe, backend, target, PAYLOAD, N, PER_TURN] + (["fsync"] if fsync else []),
                       capture_output=True, text=True)
    line = [x for x in r.stdout.splitlines() if "puts_per_s" in x]
    if r.returncode != 0 or not line:
        sys.exit(f"store_put {backend} failed:\n{r.stdout}{r.stderr[-2000:]}")
    return line[0]


def main():
    with tempfile.TemporaryDirectory(prefix="px-bench-store-") as tmp:
        exe = build(tmp)
        print(run(exe, "sqlite", os.path.join(tmp, "var-normal")))
        print(run(exe, "sqlite", os.path.join(tmp, "var-fsync"), fsync=True).replace(
            "sqlite", "sqlite-fsync", 1))
        with Postgres(fsync=True) as pg:
            print(run(exe, "postgres", pg.url))


if __name__ == "__main__":
    main()
