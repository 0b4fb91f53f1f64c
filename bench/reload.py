"""Extra delivery latency caused by hot reloads: event age at the sink (sink time - emit time),
p50/p99, with a plugin binary swap every 200 ms vs none, in the same run on the same machine."""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from harness import Host, read_jsonl, wait_for, TEST_PLUGINS  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
RATE_PER_MS = 2  # 2 events per 1 ms tick: about 2,000 events/s
COUNT = int(SECONDS * 1000 * RATE_PER_MS)

CFG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TMP@/plugins, @TEST_PLUGINS@]
  admin: { listen: "127.0.0.1:0" }
plugins:
  src: { plugin: testsource, config: { count: %d, batch: %d } }
  out: { plugin: testsink, max_inflight: 64, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""" % (COUNT, RATE_PER_MS)


def install(h, build):
    tmp = h.path("plugins", ".tmp.so")
    with open(os.path.join(TEST_PLUGINS, build + ".so"), "rb") as f, open(tmp, "wb") as g:
        g.write(f.read())
    os.replace(tmp, h.path("plugins", "testsink.so"))


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def run(reloads):
    h = Host(CFG)
    os.makedirs(h.path("plugins"))
    install(h, "testsink")
    n = 0
    with h:
        h.start()
        stop = threading.Event()

        def reloader():
            nonlocal n
            builds = ["testsink_build_b", "testsink"]
            while not stop.wait(0.2):
                install(h, builds[n % 2])
                h.proc.send_signal(signal.SIGHUP)
                n += 1

        t = threading.Thread(target=reloader)
        if reloads:
            t.start()
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) >= COUNT, timeout=SECONDS * 6,
                 interval=0.2, what="all deliveries")
        stop.set()
        if reloads:
            t.join()
        h.stop()
    ages = [x["at_ms"] - x["event_ms"] for x in read_jsonl(h.path("out.jsonl"))
            if x["outcome"] == "ok"]
    return percentile(ages, 50), percentile(ages, 99), len(ages), n


base = run(False)
rel = run(True)
print(f"events per run: {COUNT} at ~{RATE_PER_MS * 1000}/s")
print(f"{'':24}{'p50 ms':>8}{'p99 ms':>8}{'reloads':>9}")
print(f"{'no reloads':24}{base[0]:>8}{base[1]:>8}{base[3]:>9}")
print(f"{'reload every 200 ms':24}{rel[0]:>8}{rel[1]:>8}{rel[3]:>9}")
print(f"p99 increase: {rel[1] - base[1]} ms (target < 50 ms)")
