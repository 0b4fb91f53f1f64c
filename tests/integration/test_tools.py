"""The operators' tools end to end with the real binary: `plexus route` (a dry run of one event
through a configuration's router and mappings, no plugin loaded), `plexus test` (pipeline tests,
every example's among them) and `plexus tap` with GET /admin/tap (the events and delivery outcomes
of a running host, filtered, bounded, masked), and POST /admin/route."""
import glob
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import Host, plexus, run_all, wait_for

SOURCE = harness.SOURCE
EXAMPLES = os.path.join(SOURCE, "etc", "examples")
TOKEN = "tap-t0ken-8d1e3a"


def example(name):
    return os.path.join(EXAMPLES, name)


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


LEAD = {"data": {"id": 42, "name": "Ann", "surname": "Lee", "email": "ann@example.com"}}


def route(*args, payload=None, cwd=None):
    """plexus route with the payload written to a file (or args as given)."""
    tmp = cwd or tempfile.mkdtemp(prefix="px-route-")
    extra = []
    if payload is not None:
        extra = [write(tmp, "event.json", json.dumps(payload))]
    return subprocess.run([harness.PLEXUS, "route", *args, *extra], capture_output=True,
                          text=True, cwd=tmp, timeout=harness.scaled(60))


# --- plexus route ------------------------------------------------------------------------------

def test_route_prints_targets_and_mapped_with():
    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.lead_has_been_registered", payload=LEAD)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "leads-to-crm -> crm (create_lead)" in out, out
    assert '"name": "Ann Lee"' in out and '"ezzing_id": 42' in out, out
    assert "archive -> archive" in out, out
    assert 'opportunities-to-crm         no: type "ezzing.lead_has_been_registered" is not one' \
        in out, out
    assert out.rstrip().endswith("routed to 2 targets"), out

    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.lead_has_been_registered", "--id", "ev-1", "--time", "1700000000000",
              "--json", payload=LEAD)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["routed"] is True and doc["errors"] == 0
    assert doc["event"] == {"source": "ezzing", "type": "ezzing.lead_has_been_registered",
                            "id": "ev-1", "time": 1700000000000}
    crm = doc["targets"][0]
    assert crm["pipeline"] == "leads-to-crm" and crm["sink"] == "crm"
    assert crm["action"] == "create_lead"
    assert crm["with"] == {"name": "Ann Lee",
                           "contact": {"email": "ann@example.com", "phone": None},
                           "address": {"street": None, "zipcode": None, "city": None},
                           "ezzing_id": 42}, crm
    assert [p["name"] for p in doc["pipelines"] if p["matched"]] == ["leads-to-crm", "archive"]


def test_route_mapping_error_names_the_field_and_exits_1():
    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.user_created", "--json", payload={"data": {"name": "Nia"}})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    bad = [t for t in doc["targets"] if "error" in t]
    assert bad == [{"pipeline": "new-users-notified", "sink": "notify", "action": "user_created",
                    "error": "with.email: missing /data/email", "field": "with.email",
                    "pointer": "/data/email"}], bad
    assert doc["errors"] == 1
    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.user_created", payload={"data": {"name": "Nia"}})
    assert r.returncode == 1
    assert "MAPPING ERROR with.email: missing /data/email" in r.stdout, r.stdout
    assert "1 of 2 targets failed to map" in r.stdout, r.stdout


def test_route_no_route_exits_1_with_reasons():
    r = route("-c", example("ezzing.yaml"), "--source", "notify", "--type", "x.y", payload={})
    assert r.returncode == 1, r.stdout
    assert 'archive                      no: from: "ezzing", the event comes from "notify"' \
        in r.stdout, r.stdout
    assert "no route: no pipeline takes this event" in r.stdout
    r = route("-c", example("ploomes.yaml"), "--source", "ploomes", "--type",
              "ploomes.Deals.Win", "--json", payload={"New": {"Id": 1}})
    doc = json.loads(r.stdout)
    cond = [p for p in doc["pipelines"] if p["name"] == "won-deal-tags-contact"][0]
    assert cond == {"name": "won-deal-tags-contact", "matched": False,
                    "reason": "when.match /New/ContactId exists true: missing"}, cond


def test_route_usage_and_config_errors():
    tmp = tempfile.mkdtemp(prefix="px-route-")
    r = route("-c", example("ezzing.yaml"), "--source", "ezzin", payload={}, cwd=tmp)
    assert r.returncode == 2 and 'did you mean "ezzing"?' in r.stderr, r.stderr
    r = route("-c", example("ezzing.yaml"), cwd=tmp)
    assert r.returncode == 2 and "route needs an EVENT.json" in r.stderr, r.stderr
    bad = write(tmp, "bad.json", "{\"a\": ")
    r = route("-c", example("ezzing.yaml"), bad, cwd=tmp)
    assert r.returncode == 2 and bad + ":1:" in r.stderr, r.stderr
    cfg = write(tmp, "bad.yaml", "version: 1\npipelines:\n  - name: p\n    from: nobody\n"
                "    to: { sink: nowhere }\n")
    r = route("-c", cfg, payload={}, cwd=tmp)
    assert r.returncode == 78 and r.stderr.startswith(cfg + ":4:"), r.stderr


def test_route_loads_no_plugin():
    """Plugins that do not exist on a plugin path that does not exist: routing needs neither."""
    tmp = tempfile.mkdtemp(prefix="px-route-")
    cfg = write(tmp, "p.yaml", f"""version: 1
host: {{ data_dir: {tmp}/var, plugin_path: [{tmp}/no-such-dir] }}
plugins:
  in: {{ plugin: not-a-plugin }}
  out: {{ plugin: not-a-plugin-either }}
pipelines:
  - name: p
    from: in
    to: {{ sink: out, with: {{ v: "{{{{/v}}}}" }} }}
""")
    r = route("-c", cfg, "--source", "in", "--json", payload={"v": [1, 2]}, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["targets"][0]["with"] == {"v": [1, 2]}
    assert not os.path.exists(os.path.join(tmp, "var")), "a dry run made the data directory"
    r = plexus("check", "-c", cfg)
    assert r.returncode == 78, "check should have refused the missing plugins"


# --- plexus test -------------------------------------------------------------------------------

def test_every_example_has_passing_tests():
    configs = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
    assert configs
    for cfg in configs:
        tests = os.path.join(EXAMPLES, "tests", os.path.basename(cfg))
        assert os.path.exists(tests), f"{cfg} has no pipeline tests ({tests})"
        tmp = tempfile.mkdtemp(prefix="px-test-")
        r = subprocess.run([harness.PLEXUS, "test", "-c", cfg, tests], capture_output=True,
                           text=True, cwd=tmp, timeout=harness.scaled(60))
        assert r.returncode == 0, f"{cfg}:\n{r.stdout}{r.stderr}"
        last = r.stdout.strip().splitlines()[-1]
        passed = int(last.split()[0])
        assert last == f"{passed} passed, 0 failed" and passed >= 2, r.stdout
        assert "FAIL" not in r.stdout


def test_failing_expectation_shows_the_difference():
    tmp = tempfile.mkdtemp(prefix="px-test-")
    tests = write(tmp, "t.yaml", """tests:
  - name: right
    event: { source: ezzing, type: ezzing.user_created, payload: { data: { email: a@b.c, name: A } } }
    expect: { pipelines: [new-users-notified, archive] }
  - name: wrong email
    event: { source: ezzing, type: ezzing.user_created, payload: { data: { email: a@b.c, name: A } } }
    expect:
      targets:
        - { sink: archive }
        - pipeline: new-users-notified
          with_includes: { email: x@b.c }
  - name: wrong error field
    event: { source: ezzing, type: ezzing.user_created, payload: { data: { name: A } } }
    expect:
      targets:
        - { sink: archive }
        - { sink: notify, error: /data/name }
  - name: not routed at all
    event: { source: ezzing, type: ezzing.nothing }
    expect:
      targets: [{ sink: crm }]
""")
    r = plexus("test", "-c", example("ezzing.yaml"), tests)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ok   right ({tests}:2:5)", lines
    assert lines[1] == f"FAIL wrong email ({tests}:5:5)", lines
    assert lines[2:5] == [
        "     target new-users-notified -> notify: with does not include the expected value at "
        "/email",
        '       expected: "x@b.c"',
        '       got:      "a@b.c"'], lines
    assert f"FAIL wrong error field ({tests}:12:5)" in lines
    assert "     target new-users-notified -> notify: mapping error" in lines
    assert "       got:      with.email: missing /data/email" in lines
    assert "     expected target * -> crm (line 21) was not routed; routed: archive -> archive" in lines, lines
    assert "     unexpected target archive -> archive (not in expect.targets)" in lines
    assert lines[-1] == "1 passed, 3 failed", lines


def test_tests_section_in_the_config():
    """tests: in the configuration: `plexus test` runs them, check and run accept the file."""
    tmp = tempfile.mkdtemp(prefix="px-test-")
    cfg = write(tmp, "c.yaml", f"""version: 1
host:
  data_dir: {tmp}/var
  plugin_path: [{harness.TEST_PLUGINS}]
  admin: {{ listen: null }}
plugins:
  src: {{ plugin: testsource, config: {{ count: 1 }} }}
  out: {{ plugin: testsink, config: {{ file: {tmp}/out.jsonl }} }}
pipelines:
  - {{ name: p, from: src, to: {{ sink: out, with: {{ n: "{{{{/seq}}}}" }} }} }}
tests:
  - name: seq is mapped
    event: {{ source: src, payload: {{ seq: 5 }} }}
    expect: {{ targets: [{{ sink: out, with: {{ n: 5 }} }}] }}
  - name: seq is needed
    event: {{ source: src }}
    expect: {{ targets: [{{ sink: out, error: /seq }}] }}
""")
    r = plexus("test", "-c", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "2 passed, 0 failed", r.stdout
    r = plexus("check", "-c", cfg)
    assert r.returncode == 0, r.stderr
    with Host(open(cfg).read(), tmp=tempfile.mkdtemp(prefix="px-it-")) as h:
        h.start()
        wait_for(lambda: harness.read_jsonl(os.path.join(tmp, "out.jsonl")), what="delivery")
        assert h.stop() == 0


def test_malformed_test_file_names_file_line_column():
    tmp = tempfile.mkdtemp(prefix="px-test-")
    tests = write(tmp, "t.yaml", "tests:\n  - name: x\n    event: { source: ezzing }\n"
                  "    expect: { targets: [{ sink: crm, with_include: {} }] }\n")
    r = plexus("test", "-c", example("ezzing.yaml"), tests)
    assert r.returncode == 78, r.stdout + r.stderr
    assert r.stderr.strip() == (f'{tests}:4:38: unknown key "with_include" in a target of '
                                'expect.targets, did you mean "with_includes"?'), r.stderr
    tests = write(tmp, "t2.yaml", "tests:\n  - name: x\n    event: [\n")
    r = plexus("test", "-c", example("ezzing.yaml"), tests)
    assert r.returncode == 78 and r.stderr.startswith(tests + ":"), r.stderr
    r = plexus("test", "-c", example("ezzing.yaml"))
    assert r.returncode == 1 and "no tests" in r.stderr, r.stderr


# --- plexus tap and the admin API ---------------------------------------------------------------

SECRET = "s3cr3t-tap-value"

TAP_CONFIG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 3s
  admin: { listen: "127.0.0.1:0", token: "%s" }
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl", batch: 1000 } }
  other: { plugin: testsource, config: { input_file: "@TMP@/other.jsonl" } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", secret_token: "%s" } }
  flaky: { plugin: testsink, config: { file: "@TMP@/flaky.jsonl", fail: retry, fail_first: 1,
                                       retry_after: 50ms } }
  refuse: { plugin: testsink, config: { file: "@TMP@/refuse.jsonl", fail: reject } }
pipelines:
  - { name: main, from: "*", when: { type: "test.*" }, to: { sink: out, with: { n: "{{/n?}}" } } }
  - name: side
    from: src
    when: { type: "side.*" }
    to:
      - { sink: flaky }
      - { sink: refuse }
      - { sink: out, with: { need: "{{/missing}}" } }
""" % (TOKEN, SECRET)


def tap_host():
    return Host(TAP_CONFIG, name="tap")


def emit(h, *payloads, file="in.jsonl"):
    with open(h.path(file), "a") as f:
        for p in payloads:
            f.write(json.dumps(p) + "\n")


class Tap:
    """GET /admin/tap on a raw socket: the test controls how fast (and whether) it reads."""

    def __init__(self, h, query="", token=TOKEN, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(harness.scaled(20))
        self.sock.connect(("127.0.0.1", h.admin_port()))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(f"GET /admin/tap{query} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v for k, v in (x.split(": ", 1) for x in lines[1:] if x)}
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.data = b""
        self.ended = False

    def _fill(self):
        got = self.sock.recv(65536)
        if not got:
            raise EOFError("connection closed")
        self.buf += got

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def _chunk(self):
        size = int(self._until(b"\r\n"), 16)
        while len(self.buf) < size + 2:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size + 2:]
        if size == 0:
            self.ended = True
        return data

    def body(self):
        """The whole (non-streamed) body of a refusal."""
        n = int(self.headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        return json.loads(self.buf[:n])

    def record(self):
        """The next JSON line; None at the end of the stream."""
        while b"\n" not in self.data:
            if self.ended:
                return None
            self.data += self._chunk()
        line, self.data = self.data.split(b"\n", 1)
        return json.loads(line)

    def until(self, pred, what="record"):
        seen = []
        while True:
            r = self.record()
            assert r is not None, f"stream ended before {what}: {seen}"
            seen.append(r)
            if pred(r):
                return r, seen

    def close(self):
        self.sock.close()


def test_tap_shows_events_and_every_outcome():
    with tap_host() as h:
        h.start()
        t = Tap(h)
        try:
            assert t.status == 200 and t.chunked, t.headers
            assert t.headers["content-type"] == "application/x-ndjson"
            hello = t.record()
            assert hello["kind"] == "tap" and hello["limit"] == 0, hello
            emit(h, {"type": "test.one", "n": 1}, {"type": "side.x"})
            ev, _ = t.until(lambda r: r["kind"] == "event" and r["type"] == "test.one")
            assert ev["source"] == "src" and ev["pipelines"] == ["main"] and ev["sinks"] == ["out"]
            assert ev["id"] and isinstance(ev["at"], int)
            want = {("main", "out", "ok"), ("side", "out", "dead"), ("side", "flaky", "retry"),
                    ("side", "flaky", "ok"), ("side", "refuse", "dead")}
            got = {}
            while not want <= set(got):
                r = t.record()
                assert r is not None
                if r["kind"] == "delivery":
                    got[(r["pipeline"], r["sink"], r["outcome"])] = r
                elif r["kind"] == "event":
                    assert r["type"] == "side.x" and r["pipelines"] == ["side"], r
                    assert r["sinks"] == ["flaky", "refuse", "out"], r
            assert got[("main", "out", "ok")]["event_id"] == ev["id"]
            assert got[("main", "out", "ok")]["attempt"] == 1
            retry = got[("side", "flaky", "retry")]
            assert retry["reason"] == "told to retry" and retry["retry_in_ms"] == 50, retry
            assert got[("side", "flaky", "ok")]["attempt"] == 2
            assert got[("side", "refuse", "dead")]["reason"] == "rejected: told to reject"
            mapping = got[("side", "out", "dead")]
            assert mapping["reason"] == "mapping: with.need: missing /missing", mapping
            assert mapping["attempt"] == 0
        finally:
            t.close()
        assert h.stop() == 0


def test_tap_filters():
    with tap_host() as h:
        h.start()
        by_pipe, by_sink, by_src = Tap(h, "?pipeline=side"), Tap(h, "?sink=refuse"), \
            Tap(h, "?source=other")
        try:
            for t in (by_pipe, by_sink, by_src):
                assert t.record()["kind"] == "tap"
            emit(h, {"type": "test.a"}, {"type": "side.b"})
            emit(h, {"type": "test.c"}, file="other.jsonl")
            emit(h, {"type": "side.end"})
            # each reads until the last event it should see, and must not have seen others
            r, seen = by_pipe.until(lambda r: r.get("type") == "side.end" and r["kind"] == "event")
            assert {x["type"] for x in seen if x["kind"] == "event"} == {"side.b", "side.end"}
            assert all(x["pipeline"] == "side" for x in seen if x["kind"] == "delivery"), seen
            r, seen = by_sink.until(lambda r: r["kind"] == "delivery" and
                                    r["type"] == "side.end")
            assert all(x["sink"] == "refuse" for x in seen if x["kind"] == "delivery"), seen
            assert {x["type"] for x in seen if x["kind"] == "event"} <= {"side.b", "side.end"}
            r, seen = by_src.until(lambda r: r["kind"] == "delivery")
            assert [x["type"] for x in seen] == ["test.c", "test.c"], seen
            assert seen[0]["source"] == "other" and r["outcome"] == "ok"
        finally:
            for t in (by_pipe, by_sink, by_src):
                t.close()
        bad = Tap(h, "?pipeline=sid")
        assert bad.status == 400 and "no such pipeline" in bad.body()["error"]
        bad.close()
        assert h.stop() == 0


def test_tap_limit_ends_the_stream_and_the_cli():
    with tap_host() as h:
        h.start()
        t = Tap(h, "?limit=3")
        try:
            assert t.record()["kind"] == "tap"
            cli = subprocess.Popen([harness.PLEXUS, "tap", "-c", h.config, "--admin",
                                    f"127.0.0.1:{h.admin_port()}", "--limit", "2", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(lambda: "tap opened" in h.log().split("tap opened", 1)[1], timeout=20,
                         what="the CLI's tap")
                emit(h, *({"type": "test.x", "n": i} for i in range(10)))
                out, err = cli.communicate(timeout=harness.scaled(30))
            finally:
                if cli.poll() is None:
                    cli.kill()
                    cli.wait()
            assert cli.returncode == 0, (out, err)
            lines = [json.loads(x) for x in out.splitlines()]
            assert [x["kind"] for x in lines] == ["tap", "event", "delivery", "end"], lines
            assert lines[-1]["reason"] == "limit" and lines[-1]["records"] == 2
            recs = [t.record() for _ in range(4)]
            assert [r["kind"] for r in recs[:3]] == ["event", "delivery", "event"], recs
            assert recs[3] == {"kind": "end", "reason": "limit", "records": 3, "dropped": 0}
            assert t.record() is None and t.ended
        finally:
            t.close()
        admin = f"127.0.0.1:{h.admin_port()}"
        r = plexus("tap", "-c", h.config, "--admin", admin, "--limit", "some")
        assert r.returncode == 2 and "--limit" in r.stderr, r.stderr
        r = plexus("tap", "-c", h.config, "--admin", admin, "--pipeline", "nope")
        assert r.returncode == 1 and "pipeline: no such pipeline" in r.stderr, r.stderr
        assert h.stop() == 0
        r = plexus("tap", "-c", h.config, "--admin", admin)
        assert r.returncode == 1 and "nothing listens" in r.stderr, r.stderr


def test_tap_slow_reader_drops_and_never_slows_ingest():
    """A reader that does not read: the host accepts and delivers every event, the tap drops
    what does not fit and says how many when the reader catches up."""
    n = 4000
    with tap_host() as h:
        h.start()
        t = Tap(h, "?sink=out", rcvbuf=4096)
        try:
            assert t.status == 200
            pad = "x" * 200
            emit(h, *({"type": "test.load", "n": i, "pad": pad} for i in range(n)))
            wait_for(lambda: len(harness.read_jsonl(h.path("out.jsonl"))) >= n, timeout=120,
                     what=f"{n} deliveries with a tap nobody reads")
            # now read: what was kept, then (after one more event) the drop count
            emit(h, {"type": "test.after"})
            r, seen = t.until(lambda r: r.get("type") == "test.after" and r["kind"] == "event",
                              what="the event after the load")
            drops = [x for x in seen if x["kind"] == "dropped"]
            assert drops and drops[-1]["total"] > 0, [x["kind"] for x in seen][-5:]
            kept = [x for x in seen if x["kind"] in ("event", "delivery")]
            assert 0 < len(kept) < 2 * n, len(kept)
            assert drops[-1]["total"] + len(kept) >= 2 * n, (drops[-1], len(kept))
            print(f"  kept {len(kept)}, dropped {drops[-1]['total']} of {2 * n} records",
                  flush=True)
        finally:
            t.close()
        wait_for(lambda: "tap closed" in h.log(), what="the tap closed after its reader left")
        assert "dropped=0" not in h.log().split("tap closed", 1)[1].split("\n", 1)[0]
        assert h.stop() == 0


def test_tap_needs_the_token_and_is_limited():
    with tap_host() as h:
        h.start()
        for token, status in ((None, 401), ("wrong-token-123", 401)):
            t = Tap(h, token=token)
            assert t.status == status, (token, t.status)
            t.close()
        t = Tap(h, "?token=" + TOKEN, token=None)
        assert t.status == 400
        t.close()
        taps = [Tap(h) for _ in range(4)]
        try:
            for t in taps:
                assert t.status == 200 and t.record()["kind"] == "tap"
            extra = Tap(h)
            assert extra.status == 429, extra.status
            assert "4 taps are open" in extra.body()["error"]
            extra.close()
            taps.pop().close()
            wait_for(lambda: h.log().count("tap closed") == 1, what="a tap closed")
            again = Tap(h)
            assert again.status == 200
            taps.append(again)
        finally:
            for t in taps:
                t.close()
        assert h.stop() == 0


def test_tap_masks_secrets_and_ends_when_the_host_stops():
    with tap_host() as h:
        h.start()
        t = Tap(h)
        try:
            assert t.record()["kind"] == "tap"
            emit(h, {"type": "test." + SECRET})
            ev, _ = t.until(lambda r: r["kind"] == "event")
            assert SECRET not in json.dumps(ev) and ev["type"] == "test.***", ev
            assert h.stop() == 0
            r, _ = t.until(lambda r: r["kind"] == "end", what="the end record")
            assert r["reason"] == "host stopping", r
            assert t.record() is None
        finally:
            t.close()


def test_admin_route_dry_run():
    with tap_host() as h:
        h.start()
        import urllib.error
        import urllib.request
        body = json.dumps({"source": "src", "type": "side.x", "payload": {"missing": 5}}).encode()
        with urllib.request.urlopen(h.admin_request("POST", "/admin/route", token=TOKEN,
                                                    body=body)) as resp:
            doc = json.loads(resp.read())
        assert doc["routed"] is True and doc["errors"] == 0
        assert [(x["sink"], x["with"]) for x in doc["targets"]] == \
            [("flaky", {}), ("refuse", {}), ("out", {"need": 5})], doc
        assert {p["name"]: p["matched"] for p in doc["pipelines"]} == {"main": False, "side": True}
        for req, status in ((h.admin_request("POST", "/admin/route", token="bad-token-123",
                                             body=body), 401),
                            (h.admin_request("POST", "/admin/route", token=TOKEN,
                                             body=b"{\"source\": \"nope\"}"), 400),
                            (h.admin_request("POST", "/admin/route", token=TOKEN,
                                             body=b"[1]"), 400)):
            try:
                urllib.request.urlopen(req)
                raise AssertionError("accepted")
            except urllib.error.HTTPError as e:
                assert e.code == status, (e.code, e.read())
        # nothing was delivered by the dry run
        assert harness.read_jsonl(h.path("flaky.jsonl")) == []
        assert harness.read_jsonl(h.path("out.jsonl")) == []
        assert h.stop() == 0


if __name__ == "__main__":
    run_all(globals())
