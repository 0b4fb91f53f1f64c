#!/usr/bin/env bash
# notification throughput: N notifications (default 40000) published by the host to a private
# RabbitMQ node with publisher confirms (testsource -> mapping -> notification sink, through the
# spool; a delivery is done only when the broker confirms it), against the fastest plain
# rabbitmq-c publisher we have doing the same work on the same node in the same run.
#
# The reference: tests/tools/amqp_tool.c "publish", compiled here from this tree (so an old build
# is measured against the same reference), publishing what the sink publishes (the same body,
# persistent, mandatory, content type, app id, timestamp, a message id of the same length) to a
# durable queue with confirms and WINDOW unconfirmed at most (also the sink's max_inflight). It
# runs three ways each round, and the fastest median is the reference:
#   encoded: the burst the window allows is encoded with rabbitmq-c's encoders into one buffer
#            (plugins/notification/frames.c) and leaves in one send; every confirm already
#            received (single or multiple, in any order) is read before the next burst
#   batched: the same with amqp_basic_publish (three sends a message) under TCP_CORK
#   simple:  amqp_basic_publish while the window allows, then block for one frame
# It is the ceiling: one thread, no spool, no mapping, no hand-over between threads, the messages
# made in a snprintf; what remains is the broker's own work and the client library's.
#
# Timing: one watcher (amqp_tool watch) asks the queue's message count every INTERVAL ms on one
# connection, the same way for the reference and the host, from the first message seen to the Nth
# (the host's start-up is then not counted; its wall time from start is printed too). Medians of
# ROUNDS alternating runs: the broker's speed drifts on a small machine.
#
#   bench/notification.sh [BUILD_DIR]   (default: build; PX_BUILD_DIR works too)
# Environment: N messages, WINDOW (reference window and sink max_inflight, default 256), INFLIGHT
# (the sink's max_inflight alone), BATCH (events the test source emits per loop turn), ROUNDS,
# INTERVAL (watcher poll, ms).
set -euo pipefail
cd "$(dirname "$0")/.."
export PX_BUILD_DIR=${1:-${PX_BUILD_DIR:-build}}
export PX_SOURCE_DIR=.
export N=${N:-40000} WINDOW=${WINDOW:-256} BATCH=${BATCH:-200} ROUNDS=${ROUNDS:-5}
export INTERVAL=${INTERVAL:-5}
[ -x "$PX_BUILD_DIR/host/plexus" ] || { echo "no $PX_BUILD_DIR/host/plexus: build first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Iplugins/notification tests/tools/amqp_tool.c \
    plugins/notification/frames.c -o "$tmp/amqp_tool" \
    $(pkg-config --cflags --libs librabbitmq)
export AMQP_TOOL=$tmp/amqp_tool

python3 - <<'EOF'
import json, os, statistics, subprocess, sys, time
sys.path.insert(0, "tests/integration")
from harness import Host, wait_for
from rabbit import Rabbit

N, WINDOW, BATCH, ROUNDS, INTERVAL = (int(os.environ[k])
                                      for k in ("N", "WINDOW", "BATCH", "ROUNDS", "INTERVAL"))
INFLIGHT = int(os.environ.get("INFLIGHT") or WINDOW)
TOOL = os.environ["AMQP_TOOL"]


def tool(*args):
    return subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True,
                          check=True).stdout


def count(url, q):
    return int(tool("count", url, q))


class Watch:
    """amqp_tool watch on queue q: declared and polled before the publisher starts."""

    def __init__(self, url, q):
        self.p = subprocess.Popen([TOOL, "watch", url, q, str(N), str(INTERVAL), "600000"],
                                  stdout=subprocess.PIPE, text=True)
        assert json.loads(self.p.stdout.readline()).get("ready"), "watcher did not start"

    def rate(self):
        out = json.loads(self.p.stdout.readline())
        self.p.wait()
        assert out["done"] is not None, "not every message reached the queue"
        return N / (out["done"] - out["first"])

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def ref_run(r, q, mode):
    w = Watch(r.url, q)
    try:
        own = json.loads(tool("publish", r.url, q, N, WINDOW, mode))["rate"]
        rate = w.rate()
    finally:
        w.close()
    assert count(r.url, q) == N
    tool("delete", r.url, q)
    return rate, own


def host_run(r, q):
    cfg = f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  admin: {{ listen: "" }}
plugins:
  src: {{ plugin: testsource, config: {{ count: {N}, batch: {BATCH}, payload: {{ first: Ana }} }} }}
  nq: {{ plugin: notification, max_inflight: {INFLIGHT}, config: {{ url: "{r.url}", queue: {q} }} }}
pipelines:
  - name: invite
    from: src
    to:
      sink: nq
      with:
        name: USER_INVITEUSER
        to: "user{{{{/seq}}}}@example.com"
        to_name: "{{{{/first}}}}"
        macros: {{ FNAME: "{{{{/first}}}}", SEQ: "{{{{/seq}}}}" }}
"""
    w = Watch(r.url, q)
    try:
        with Host(cfg) as h:
            t0 = time.time()
            h.start()
            rate = w.rate()
            wall = N / (time.time() - t0)
            h.stop()
    finally:
        w.close()
    assert count(r.url, q) == N
    tool("delete", r.url, q)
    return rate, wall


MODES = ("encoded", "batched", "simple")
rates = {m: [] for m in MODES + ("host",)}
walls = []
with Rabbit() as r:
    for i in range(ROUNDS):
        line = []
        for mode in MODES:
            rate, own = ref_run(r, f"bench_ref_{mode}{i}", mode)
            rates[mode].append(rate)
            line.append(f"{mode} {rate:.0f} (own clock {own:.0f})")
        rate, wall = host_run(r, f"bench_host{i}")
        rates["host"].append(rate)
        walls.append(wall)
        best = max(rates[m][-1] for m in MODES)
        print(f"round {i + 1}: reference " + ", ".join(line) +
              f"; host {rate:.0f} (from its start {wall:.0f}) msg/s; ratio {rate / best:.2f}",
              flush=True)
med = {k: statistics.median(v) for k, v in rates.items()}
mode = max(MODES, key=lambda m: med[m])
ref, host = med[mode], med["host"]
print(f"reference: plain rabbitmq-c in one thread, the sink's messages with confirms, window "
      f"{WINDOW}; medians " + ", ".join(f"{m} {med[m]:.0f}" for m in MODES) +
      f" msg/s; the reference is the fastest ({mode}): nothing but the broker and the client "
      f"library at work, so it is the ceiling for the same window")
print(f"host (testsource -> spool -> mapping -> notification sink, confirms, max_inflight "
      f"{INFLIGHT}): median {host:.0f} msg/s (from the host's start, start-up included: median "
      f"{statistics.median(walls):.0f} msg/s)")
ratio = host / ref
print(f"ratio: {ratio:.2f} (target >= 0.9) {'ok' if ratio >= 0.9 else 'BELOW TARGET'}  "
      f"({N} messages, {ROUNDS} rounds, watcher every {INTERVAL} ms)")
EOF
