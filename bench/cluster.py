#!/usr/bin/env python3
"""Several hosts on PostgreSQL against one host on SQLite, in one run on this machine.

Two paths, each with wrk (2 threads, 64 connections per host) POSTing the Ezzing example to the
webhook source:
  ingest   webhook -> file sink: the answer waits for the store's commit; the sink is fast, so
           most deliveries are done before their rows need writing;
  written  webhook -> a sink that never answers: every event and delivery is written and stays.
Setups: one host on SQLite, one host on PostgreSQL, two hosts on PostgreSQL (one wrk per host,
rates added). PostgreSQL is a throw-away local cluster (fsync on). For each: events/s, p99, the
store's commits/s and rows per commit (from /admin/status), and the PostgreSQL/SQLite ratio
(target: one host on PostgreSQL >= 0.5 x one host on SQLite for ingest).
Usage: bench/cluster.sh   (env: PX_BUILD_DIR=build, DURATION=8s)"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pg import Postgres, free_port  # noqa: E402

BUILD = os.path.join(ROOT, os.environ.get("PX_BUILD_DIR", "build"))
DURATION = os.environ.get("DURATION", "8s")
PLEXUS = os.path.join(BUILD, "host", "plexus")
TOKEN = "bench-admin-token-1"
BODY = os.path.join(ROOT, "bench", "payloads", "opportunity_created.json")

CONFIG = """version: 1
host:
  data_dir: {tmp}/var
  plugin_path: [{build}/plugins, {build}/tests/plugins]
  log: {{ level: warn }}
  http: {{ listen: "127.0.0.1:{http}" }}
  admin: {{ listen: "127.0.0.1:{admin}", token: {token} }}
{store}
plugins:
  webhook: {{ plugin: webhook, config: {{ path: /events }} }}
  out: {sink}
pipelines:
  - {{ name: p, from: webhook, to: {{ sink: out }} }}
"""

SINKS = {
    "ingest": "{ plugin: file, config: { path: %s/events.jsonl, fsync: interval, "
              "fsync_interval: 1s } }",
    "written": "{ plugin: testsink, max_inflight: 1, config: { file: %s/out.jsonl, stall: true } }",
}


class Host:
    def __init__(self, path, store, n):
        self.tmp = tempfile.mkdtemp(prefix=f"px-bench-cluster-{n}-")
        self.http, self.admin = free_port(), free_port()
        with open(os.path.join(self.tmp, "plexus.yaml"), "w") as f:
            f.write(CONFIG.format(tmp=self.tmp, build=BUILD, http=self.http, admin=self.admin,
                                  token=TOKEN, store=store, sink=SINKS[path] % self.tmp))
        self.log = open(os.path.join(self.tmp, "plexus.log"), "wb")
        self.proc = subprocess.Popen([PLEXUS, "run", "-c", os.path.join(self.tmp, "plexus.yaml"),
                                      "--log-format", "json"], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.status()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("host did not start: see " + self.tmp)
                time.sleep(0.1)

    def status(self):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}/admin/status",
                                     headers={"Authorization": "Bearer " + TOKEN})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        subprocess.run(["rm", "-rf", self.tmp])


def wrk(port):
    return subprocess.Popen(["wrk", "-t2", "-c64", "-d" + DURATION, "-s",
                             os.path.join(ROOT, "bench", "post.lua"),
                             f"http://127.0.0.1:{port}/events"],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, BENCH_BODY=BODY))


def field(line, name):
    return int(re.search(rf"\b{name}=(\d+)", line).group(1))


def measure(path, store, nhosts):
    hosts = []
    try:
        for i in range(nhosts):
            hosts.append(Host(path, store, i))
        before = [h.status()["spool"] for h in hosts]
        runs = [wrk(h.http) for h in hosts]
        lines = [[x for x in r.communicate()[0].splitlines() if x.startswith("BENCH ")][0]
                 for r in runs]
        after = [h.status()["spool"] for h in hosts]
    finally:
        for h in hosts:
            h.stop()
    secs = max(field(x, "duration_us") for x in lines) / 1e6
    ok = sum(field(x, "ok") for x in lines)
    commits = sum(a["commits"] - b["commits"] for a, b in zip(after, before))
    rows = sum(a["rows_committed"] - b["rows_committed"] for a, b in zip(after, before))
    return {"eps": ok / secs, "p99_ms": max(field(x, "p99_us") for x in lines) / 1000,
            "other": sum(field(x, "other") for x in lines), "commits_s": commits / secs,
            "rows_commit": rows / commits if commits else 0.0}


def main():
    subprocess.run([os.path.join(ROOT, "scripts", "build.sh"), BUILD], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    with Postgres(fsync=True) as pg:
        pgstore = f'  store: {{ type: postgres, url: "{pg.url}", lease: 15s }}'
        setups = [("1 host, SQLite", "", 1), ("1 host, PostgreSQL", pgstore, 1),
                  ("2 hosts, PostgreSQL", pgstore, 2)]
        for path in ("ingest", "written"):
            print(f"== {path}: webhook -> "
                  f"{'file sink' if path == 'ingest' else 'a sink that never answers'}, "
                  f"wrk -t2 -c64 -d{DURATION} per host")
            base = None
            for label, store, n in setups:
                r = measure(path, store, n)
                base = base or r["eps"]
                print(f"{label:22s} {r['eps']:8.0f} events/s  p99 {r['p99_ms']:7.2f} ms  "
                      f"{r['commits_s']:7.1f} commits/s  {r['rows_commit']:7.1f} rows/commit  "
                      f"(non-2xx {r['other']})  {r['eps'] / base:.2f} x SQLite")
    print("target: 1 host on PostgreSQL >= 0.5 x 1 host on SQLite (ingest)")


if __name__ == "__main__":
    main()
