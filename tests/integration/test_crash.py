"""A plugin that crashes the process loses nothing: a supervisor loop (as systemd's
Restart=on-failure would) restarts the host after each crash; every acknowledged event is still
delivered, the delivery that keeps crashing the host is dead-lettered after host.max_crashes
crashes with a reason naming the crash, and the host then runs normally. That holds for a crash
in deliver and for one in a callback the delivery set up (HTTP response, timer, post). A sink
that completes a delivery twice does not bring the host down."""
import http.client
import http.server
import json
import os
import resource
import signal
import threading
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
  crashy: { plugin: crashsink, max_inflight: %(inflight)d,
            config: { file: "@TMP@/crashy.jsonl", mode: %(mode)s%(sink_extra)s } }
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


class Receiver:
    """A loopback HTTP server that answers 200 to every POST and keeps the bodies."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/in" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def run_case(mode, sig, max_crashes, call="deliver", inflight=4):
    host_extra = f"  max_crashes: {max_crashes}" if max_crashes else ""
    want_crashes = max_crashes or 3
    receiver = Receiver() if mode == "http" else None
    try:
        sink_extra = f", url: \"{receiver.url}\"" if receiver else ""
        cfg = CFG % {"mode": mode, "host_extra": host_extra, "inflight": inflight,
                     "sink_extra": sink_extra}
        check_case(cfg, sig, want_crashes, call)
        if receiver:
            # the poison event reached the receiver once per run that crashed on its answer
            got = [b["n"] for b in receiver.bodies]
            assert got == [CRASH_AT] * want_crashes, got
    finally:
        if receiver:
            receiver.close()


def check_case(cfg, sig, want_crashes, call):
    with Host(cfg) as h:
        write_input(h)

        def done():
            # a crash in a callback may come after the deliveries behind it succeeded: done only
            # once the crashing one is settled too
            return len(ok_seqs(h.path("good.jsonl"))) == N and \
                len(ok_seqs(h.path("crashy.jsonl"))) == N - 1 and \
                "delivery dead-lettered after crashes" in h.log()

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
        assert f"signal={signame}" in line and f"call={call} instance=crashy delivery=" in line, \
            line
    assert "delivery dead-lettered after crashes=%d" % want_crashes in log
    # the handler's own line, written as the process died
    assert f"fatal signal {signame} in plugin call={call} instance=crashy delivery=" in log
    assert not os.path.exists(h.path("var", "crash.marker")), "marker not removed"

    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    dead = json.loads(r.stdout)
    assert len(dead) == 1, dead
    assert dead[0]["sink"] == "crashy"
    assert dead[0]["reason"] == (f"crashed the host {want_crashes} times; last: crash: "
                                 f"{signame} in {call} of instance crashy"), dead[0]
    r = plexus("dlq", "show", str(dead[0]["id"]), "-c", h.config)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["payload"]["seq"] == CRASH_AT and shown["payload"]["crash"] is True
    assert [x["error"] for x in shown["history"]] == \
        [f"crash: {signame} in {call} of instance crashy"] * want_crashes, shown["history"]


def test_abort_dead_lettered_after_default_three_crashes():
    run_case("abort", signal.SIGABRT, None)


def test_segv_dead_lettered_after_configured_crashes():
    run_case("segv", signal.SIGSEGV, 2)


def test_crash_in_http_response_dead_lettered():
    # the callback runs for the delivery whose deliver() made the request, with others in flight
    run_case("http", signal.SIGSEGV, 2, call="http_response")


def test_crash_in_timer_dead_lettered():
    run_case("timer", signal.SIGSEGV, None, call="timer")


def test_crash_in_posted_callback_dead_lettered():
    run_case("post", signal.SIGSEGV, 2, call="post")


def test_crash_in_post_from_worker_thread_charged_to_only_delivery():
    # posted from a thread, nothing ties the callback to a delivery but that the sink had only
    # one in flight
    run_case("thread_post", signal.SIGSEGV, 2, call="post", inflight=1)


TOKEN = "crash-test-admin-token-0123456789"

TWICE_CFG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 2s
  admin: { listen: "127.0.0.1:0", token: "%s" }
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl", ack_file: "@TMP@/acks" } }
  crashy: { plugin: crashsink, max_inflight: 4, config: { file: "@TMP@/crashy.jsonl" } }
pipelines:
  - { name: to-crashy, from: src, to: { sink: crashy } }
""" % TOKEN


def admin_status(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/admin/status", headers={"Authorization": "Bearer " + TOKEN})
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200, (r.status, body)
        return json.loads(body)
    finally:
        conn.close()


def test_second_complete_refused():
    n, twice = 20, {3, 4, 11}
    with Host(TWICE_CFG) as h:
        with open(h.path("in.jsonl"), "w") as f:
            for i in range(n):
                f.write(json.dumps({"n": i, "complete_twice": i in twice}) + "\n")
        h.start()
        wait_for(lambda: len(ok_seqs(h.path("crashy.jsonl"))) == n, what="every delivery")
        port = h.admin_port()
        disp = wait_for(lambda: (lambda s: s if s["delivered"] == n else None)(
            admin_status(port)["dispatcher"]), what="the dispatcher's count")
        # each delivery counted once, as delivered: the second answer (a reject) changed nothing
        assert (disp["delivered"], disp["rejected"], disp["dead"], disp["retried"]) == \
            (n, 0, 0, 0), disp
        assert h.proc.poll() is None, "host died:\n" + h.log()[-3000:]
        assert h.stop() == 0
        log = h.log()
    seqs = [x["seq"] for x in read_jsonl(h.path("crashy.jsonl"))]
    assert sorted(seqs) == list(range(n)), seqs
    refused = [json.loads(line) for line in log.splitlines() if "complete refused" in line]
    assert len(refused) == len(twice), log[-3000:]
    for rec in refused:
        assert rec["level"] == "error" and "instance=crashy" in rec["msg"], rec
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


if __name__ == "__main__":
    run_all(globals())
