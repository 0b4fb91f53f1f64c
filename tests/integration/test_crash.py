"""A plugin that crashes the process loses nothing: a supervisor loop (as systemd's
Restart=on-failure would) restarts the host after each crash; every acknowledged event is still
delivered, the delivery that keeps crashing the host is dead-lettered after host.max_crashes
crashes with a reason naming the crash, and the host then runs normally."""
import json
import os
import resource
import signal
import time

from harness import Host, plexus, read_acks, read_jsonl, run_all, scaled, wait_for

# The crashes are deliberate: no core files from them.
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

CFG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 2s
  admin: { listen: null }
%(host_extra)s
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl", ack_file: "@TMP@/acks",
                                       dedupe: true } }
  crashy: { plugin: crashsink, max_inflight: 4, config: { file: "@TMP@/crashy.jsonl",
                                                          mode: %(mode)s } }
  good: { plugin: testsink, config: { file: "@TMP@/good.jsonl" } }
pipelines:
  - { name: to-crashy, from: src, to: { sink: crashy } }
  - { name: to-good, from: src, to: { sink: good } }
"""

N = 40
CRASH_AT = 15


def write_input(h):
    with open(h.path("in.jsonl"), "w") as f:
        for i in range(N):
            line = {"n": i}
            if i == CRASH_AT:
                line["crash"] = True
            f.write(json.dumps(line) + "\n")


def ok_seqs(path):
    return {x["seq"] for x in read_jsonl(path) if x["outcome"] in ("ok", "recorded")}


def supervise(h, done, want_signal, max_runs=8, timeout=60):
    """Runs the host, restarting it whenever it dies, until done() holds while it runs. Returns
    the exit statuses of the runs that died."""
    deaths = []
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        h.start(wait=False)
        while time.monotonic() < deadline:
            rc = h.proc.poll()
            if rc is not None:
                h.logf.close()
                h.proc = None
                h.check_sanitizers()
                deaths.append(rc)
                assert rc == -want_signal, f"host died with {rc}:\n{h.log()[-3000:]}"
                assert len(deaths) < max_runs, "crash loop: the host never got past the delivery"
                break
            if done() and "\"started" in h.log().split("previous run died")[-1]:
                return deaths
            time.sleep(0.05)
    raise AssertionError("timed out supervising the host:\n" + h.log()[-3000:])


def run_case(mode, sig, max_crashes):
    host_extra = f"  max_crashes: {max_crashes}" if max_crashes else ""
    want_crashes = max_crashes or 3
    cfg = CFG % {"mode": mode, "host_extra": host_extra}
    with Host(cfg) as h:
        write_input(h)

        def done():
            return len(ok_seqs(h.path("good.jsonl"))) == N and \
                len(ok_seqs(h.path("crashy.jsonl"))) == N - 1

        deaths = supervise(h, done, sig)
        assert len(deaths) == want_crashes, deaths
        # the host runs normally now: a new event goes through both sinks
        with open(h.path("in.jsonl"), "a") as f:
            f.write(json.dumps({"n": N}) + "\n")
        wait_for(lambda: N in ok_seqs(h.path("crashy.jsonl")) and
                 N in ok_seqs(h.path("good.jsonl")), what="a delivery after the crashes")
        assert h.stop() == 0
        log = h.log()

    acked = {s for s, st in read_acks(h.path("acks")).items() if st == 0}
    assert acked == set(range(N + 1)), sorted(set(range(N + 1)) - acked)
    assert ok_seqs(h.path("good.jsonl")) == acked
    assert ok_seqs(h.path("crashy.jsonl")) == acked - {CRASH_AT}
    crashing = [x for x in read_jsonl(h.path("crashy.jsonl")) if x["outcome"] == "crashing"]
    assert {x["seq"] for x in crashing} == {CRASH_AT}, crashing
    assert len(crashing) == want_crashes, crashing
    assert len({x["pid"] for x in crashing}) == want_crashes, "one crash per run"
    # attempts grow with each crash: the crash counted as an attempt
    assert [x["attempt"] for x in crashing] == list(range(1, want_crashes + 1)), crashing

    signame = {signal.SIGABRT: "SIGABRT", signal.SIGSEGV: "SIGSEGV"}[sig]
    # each restart says which plugin and delivery was running
    died = [line for line in log.splitlines() if "previous run died" in line]
    assert len(died) == want_crashes, died
    for line in died:
        assert f"signal={signame}" in line and "call=deliver instance=crashy delivery=" in line, \
            line
    assert "delivery dead-lettered after crashes=%d" % want_crashes in log
    # the handler's own line, written as the process died
    assert f"fatal signal {signame} in plugin call=deliver instance=crashy" in log
    assert not os.path.exists(h.path("var", "crash.marker")), "marker not removed"

    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    dead = json.loads(r.stdout)
    assert len(dead) == 1, dead
    assert dead[0]["sink"] == "crashy"
    assert dead[0]["reason"] == (f"crashed the host {want_crashes} times; last: crash: "
                                 f"{signame} in deliver of instance crashy"), dead[0]
    r = plexus("dlq", "show", str(dead[0]["id"]), "-c", h.config)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["payload"]["seq"] == CRASH_AT and shown["payload"]["crash"] is True
    assert [x["error"] for x in shown["history"]] == \
        [f"crash: {signame} in deliver of instance crashy"] * want_crashes, shown["history"]


def test_abort_dead_lettered_after_default_three_crashes():
    run_case("abort", signal.SIGABRT, None)


def test_segv_dead_lettered_after_configured_crashes():
    run_case("segv", signal.SIGSEGV, 2)


if __name__ == "__main__":
    run_all(globals())
