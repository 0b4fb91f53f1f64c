"""The admin API end to end: token checks, /healthz, /readyz, /metrics (checked by a strict
Prometheus text-format parser, and by Prometheus' own promtool), /admin/status, dead letters
listed, shown, replayed and purged on a running host, reload, and the CLI on top of it
(`plexus status`, `plexus reload`, `plexus dlq`)."""
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess

from harness import Host, plexus, read_jsonl, run_all, wait_for

TOKEN = "adm-t0ken-4f9c2e"

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 3s
  admin: { listen: "@ADMIN@", token: "%s" }
""" % TOKEN


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(body, admin="127.0.0.1:0"):
    return (BASE + body).replace("@ADMIN@", admin)


def call(port, method, path, token=TOKEN, body=None, headers=None):
    """One request; returns (status, headers dict (lowercase names), body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    text = r.read().decode()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hdrs, text


def get_json(port, path, want=200, **kw):
    st, _, text = call(port, "GET", path, **kw)
    assert st == want, (path, st, text)
    return json.loads(text)


def post_json(port, path, body, want=200):
    st, _, text = call(port, "POST", path, body=body)
    assert st == want, (path, st, text)
    return json.loads(text)


# --- a strict Prometheus text-format (0.0.4) checker --------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
FLOAT = r"[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
SAMPLE = re.compile(r"^(%s)(\{.*\})? (%s)(?: (-?\d+))?$" % (NAME, FLOAT))
HELP = re.compile(r"^# HELP (%s)(?: (.*))?$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)


def parse_labels(text, where):
    """'{a="x",b="y\\"z"}' -> dict; raises on anything the format does not allow."""
    assert text[0] == "{" and text[-1] == "}", where
    s, i, out = text[1:-1], 0, {}
    while i < len(s):
        m = re.match(LABEL, s[i:])
        assert m, f"bad label name at {s[i:]!r}: {where}"
        name = m.group(0)
        assert not name.startswith("__"), where
        i += len(name)
        assert s[i:i + 2] == '="', f"expected =\" after {name}: {where}"
        i += 2
        val = []
        while True:
            assert i < len(s), f"unterminated value: {where}"
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                assert nxt in ("\\", '"', "n"), f"bad escape \\{nxt}: {where}"
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                assert c != "\n", where
                val.append(c)
                i += 1
        assert name not in out, f"duplicate label {name}: {where}"
        out[name] = "".join(val)
        if i < len(s):
            assert s[i] == ",", f"expected , at {s[i:]!r}: {where}"
            i += 1
    return out


def parse_value(v):
    return {"+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}.get(v, None) or float(v)


def check_exposition(text):
    """Parses the whole exposition strictly. Returns {family: {"type", "help", "samples":
    [(name, labels dict, value)]}}."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families, order, seen_series, closed = {}, [], set(), set()
    current = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}: {line!r}"
        assert line, f"empty line {n}"
        if line.startswith("#"):
            m = HELP.match(line) or TYPE.match(line)
            if not m:
                assert not line.startswith("# HELP") and not line.startswith("# TYPE"), where
                continue
            fam = m.group(1)
            f = families.setdefault(fam, {"type": None, "help": None, "samples": []})
            assert fam not in closed, f"{fam} declared again after other families: {where}"
            if line.startswith("# HELP"):
                assert f["help"] is None, f"second HELP: {where}"
                help_text = m.group(2) or ""
                assert not re.search(r"\\[^\\n]", help_text.replace("\\\\", "")), where
                f["help"] = help_text
            else:
                assert f["type"] is None, f"second TYPE: {where}"
                assert not f["samples"], f"TYPE after samples: {where}"
                f["type"] = m.group(2)
            if current and current != fam:
                closed.add(current)
            current = fam
            if fam not in order:
                order.append(fam)
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample: {where}"
        name, labels_text, value = m.group(1), m.group(2), m.group(3)
        labels = parse_labels(labels_text, where) if labels_text else {}
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and families.get(base, {}).get("type") == "histogram":
                fam = base
        assert fam in families and families[fam]["type"], f"sample before its TYPE: {where}"
        assert fam == current, f"{fam} samples are not contiguous: {where}"
        f = families[fam]
        if f["type"] == "histogram":
            assert name != fam, f"bare sample in a histogram: {where}"
            assert (name == fam + "_bucket") == ("le" in labels), where
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen_series, f"duplicate series: {where}"
        seen_series.add(key)
        v = parse_value(value)
        if f["type"] == "counter" or name.endswith("_count") or name.endswith("_bucket"):
            assert v >= 0, f"negative counter: {where}"
        f["samples"].append((name, labels, v))
    for fam, f in families.items():
        assert f["type"], f"{fam} has no TYPE"
        if f["type"] != "histogram":
            continue
        groups = {}
        for name, labels, v in f["samples"]:
            rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
            g = groups[rest]
            if name.endswith("_bucket"):
                g["buckets"].append((parse_value(labels["le"]), v))
            elif name.endswith("_sum"):
                g["sum"] = v
            else:
                g["count"] = v
        for rest, g in groups.items():
            les = [le for le, _ in g["buckets"]]
            assert les == sorted(les) and len(set(les)) == len(les), (fam, rest, les)
            assert les and les[-1] == math.inf, f"{fam}{rest}: no +Inf bucket"
            counts = [c for _, c in g["buckets"]]
            assert all(a <= b for a, b in zip(counts, counts[1:])), f"{fam}{rest}: not cumulative"
            assert g["count"] is not None and g["sum"] is not None, f"{fam}{rest}: no _sum/_count"
            assert counts[-1] == g["count"], f"{fam}{rest}: +Inf {counts[-1]} != count {g['count']}"
    return families


def sample(fams, name, **labels):
    """Value of one series, or None."""
    fam = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and fams.get(name[:-len(suffix)], {}).get("type") == "histogram":
            fam = name[:-len(suffix)]
    for n, l, v in fams.get(fam, {}).get("samples", []):
        if n == name and l == labels:
            return v
    return None


def scrape(port):
    st, hdrs, text = call(port, "GET", "/metrics")
    assert st == 200, (st, text)
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4"), hdrs
    return text, check_exposition(text)


def promtool_check(text):
    """promtool (Debian package prometheus, installed by scripts/deps.sh test) must accept it."""
    tool = shutil.which("promtool")
    assert tool, "promtool is not installed: scripts/deps.sh test installs it"
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    # Lint findings (naming, units, HELP) fail it too, as parse errors do.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


# --- tests ----------------------------------------------------------------------------------------

def test_checker_rejects_bad_expositions():
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 3\nh_count 2\n")
    check_exposition(good)
    bad = [
        good.replace("a_total{x=\"1\"} 2", "a_total{x=\"1\"} -2"),         # counter < 0
        good.replace("# TYPE a_total counter\n", ""),                        # no TYPE
        good.replace("h_count 2", "h_count 3"),                              # +Inf != count
        good.replace("h_bucket{le=\"1\"} 1", "h_bucket{le=\"1\"} 5"),        # not cumulative
        good.replace("{x=\"1\"}", "{x=\"a\\q\"}"),                           # bad escape
        good.replace("{x=\"1\"}", "{1x=\"1\"}"),                             # bad label name
        good.replace("{x=\"1\"}", "{x=\"1\",x=\"2\"}"),                      # duplicate label
        good + "a_total{x=\"1\"} 2\n",                                       # not contiguous
        good[:-1],                                                           # no final newline
        good.replace("h_bucket{le=\"+Inf\"} 2\n", ""),                       # no +Inf
    ]
    for text in bad:
        try:
            check_exposition(text)
        except AssertionError:
            continue
        raise AssertionError("checker accepted:\n" + text)
    promtool_check(good)
    try:
        promtool_check(good.replace("a_total{x=\"1\"} 2", "a_total{x=\"1} 2"))
    except AssertionError:
        return
    raise AssertionError("promtool accepted an unterminated label value")


def test_token_required_except_healthz():
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { count: 0 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.admin_port()
        st, _, body = call(port, "GET", "/healthz", token=None)
        assert (st, body) == (200, "ok\n")
        endpoints = [("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/admin/status"),
                     ("GET", "/admin/dlq"), ("GET", "/admin/dlq/1"),
                     ("POST", "/admin/dlq/replay"), ("POST", "/admin/dlq/purge"),
                     ("POST", "/admin/reload")]
        wrong = [None, "", "nope", TOKEN[:-1], TOKEN + "x", TOKEN.upper()]
        for method, path in endpoints:
            for tok in wrong:
                st, hdrs, body = call(port, method, path, token=tok,
                                      body={"all": True} if method == "POST" else None)
                assert st == 401, (method, path, tok, st, body)
                assert hdrs.get("www-authenticate", "").startswith("Bearer"), hdrs
                assert "error" in json.loads(body)
            st, _, _ = call(port, method, path, token=None,
                            headers={"Authorization": "Basic " + TOKEN})
            assert st == 401
        st, _, _ = call(port, "GET", "/metrics")
        assert st == 200
        st, _, _ = call(port, "GET", "/healthz")
        assert st == 200
        # The refusals are counted per route and status.
        _, fams = scrape(port)
        assert sample(fams, "plexus_http_requests_total", listener="admin", route="/metrics",
                      status="401") == len(wrong) + 1
        assert h.stop() == 0


def test_readyz_then_503_while_stopping():
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { count: 1 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", stall: true } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.admin_port()
        ready = get_json(port, "/readyz")
        assert ready == {"ready": True, "reasons": []}, ready
        wait_for(lambda: read_jsonl(h.path("out.jsonl")), what="the stalled delivery")
        # The sink never completes, so the stop waits drain_timeout: the host is not ready
        # meanwhile, and says why.
        h.proc.send_signal(signal.SIGTERM)
        seen = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            call(port, "GET", "/readyz")), what="503 while stopping")
        body = json.loads(seen[2])
        assert body["ready"] is False
        assert "host is stopping" in body["reasons"], body
        assert any(r.startswith("instance src is ") for r in body["reasons"]), body
        # It stops by itself once the drain times out.
        rc = h.proc.wait(60)
        h.logf.close()
        h.proc = None
        h.check_sanitizers()
        assert rc == 0, h.log()[-2000:]


def test_metrics_strict_format_and_counters_move():
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
  other: { plugin: testsink, config: { file: "@TMP@/other.jsonl" } }
pipelines:
  - { name: p, from: src, to: [ { sink: out }, { sink: other } ], when: { type: "test.*" } }
""")
    with Host(cfg) as h:
        open(h.path("in.jsonl"), "w").close()
        h.start()
        port = h.admin_port()
        text, fams = scrape(port)
        promtool_check(text)
        for fam, typ in [("plexus_events_received_total", "counter"),
                         ("plexus_events_unrouted_total", "counter"),
                         ("plexus_events_duplicate_total", "counter"),
                         ("plexus_events_refused_total", "counter"),
                         ("plexus_deliveries_total", "counter"),
                         ("plexus_delivery_latency_seconds", "histogram"),
                         ("plexus_pending_deliveries", "gauge"),
                         ("plexus_dead_letters", "gauge"),
                         ("plexus_spool_commits_total", "counter"),
                         ("plexus_spool_writable", "gauge"),
                         ("plexus_plugin_generation", "gauge"),
                         ("plexus_plugin_up", "gauge"),
                         ("plexus_reloads_total", "counter"),
                         ("plexus_http_requests_total", "counter"),
                         ("plexus_http_open_connections", "gauge")]:
            assert fams.get(fam, {}).get("type") == typ, (fam, fams.get(fam))
        assert sample(fams, "plexus_events_received_total", source="src") in (None, 0)
        assert sample(fams, "plexus_plugin_up", instance="out") == 1
        assert sample(fams, "plexus_plugin_generation", instance="out", plugin="testsink",
                      version="1.0.0") >= 1
        assert sample(fams, "plexus_spool_writable") == 1
        assert sample(fams, "plexus_pending_deliveries", sink="out") == 0
        assert sample(fams, "plexus_reloads_total", result="failed") == 0

        with open(h.path("in.jsonl"), "a") as f:
            for i in range(7):
                f.write(json.dumps({"n": i, "text": "quote \" and \\ and \u00e9"}) + "\n")
            f.write(json.dumps({"type": "other.kind", "n": 99}) + "\n")
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) == 7 and
                 len(read_jsonl(h.path("other.jsonl"))) == 7, what="deliveries")

        def moved():
            fams2 = scrape(port)[1]
            done = sample(fams2, "plexus_deliveries_total", pipeline="p", sink="out",
                          outcome="done")
            return fams2 if done == 7 else None
        text = None
        fams = wait_for(moved, what="deliveries_total to count 7")
        text, fams = scrape(port)
        promtool_check(text)
        assert sample(fams, "plexus_events_received_total", source="src") == 8
        assert sample(fams, "plexus_deliveries_total", pipeline="p", sink="other",
                      outcome="done") == 7
        assert sample(fams, "plexus_events_unrouted_total") == 1
        assert sample(fams, "plexus_delivery_latency_seconds_count", sink="out") == 7
        assert sample(fams, "plexus_delivery_latency_seconds_bucket", sink="out", le="+Inf") == 7
        assert sample(fams, "plexus_delivery_latency_seconds_sum", sink="out") >= 0
        assert sample(fams, "plexus_spool_commits_total") >= 1
        # 7 puts, then 14 deliveries done: each either deleted by a commit or elided
        assert sample(fams, "plexus_spool_rows_committed_total") >= 7
        assert (sample(fams, "plexus_spool_rows_committed_total") +
                sample(fams, "plexus_spool_deliveries_elided_total")) >= 21
        assert sample(fams, "plexus_pending_deliveries", sink="other") == 0
        assert sample(fams, "plexus_http_requests_total", listener="admin", route="/metrics",
                      status="200") >= 2
        assert sample(fams, "plexus_http_open_connections", listener="admin") >= 1
        assert h.stop() == 0


def test_status_endpoint_and_cli():
    port = free_port()
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { count: 4 } }
  out: { plugin: testsink, max_inflight: 3, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: main, from: src, to: { sink: out, action: put }, when: { type: ["test.*"] } }
""", admin=f"127.0.0.1:{port}")
    with Host(cfg) as h:
        h.start()
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) == 4, what="deliveries")
        st = get_json(port, "/admin/status")
        for key in ("version", "abi", "pid", "started_at", "uptime_seconds", "instances",
                    "pipelines", "spool", "dispatcher", "events", "ready"):
            assert key in st, key
        assert st["pid"] == h.proc.pid
        assert st["data_dir"] == os.path.realpath(h.path("var"))
        insts = {i["name"]: i for i in st["instances"]}
        assert set(insts) == {"src", "out"}
        out = insts["out"]
        for key in ("name", "plugin", "file", "version", "abi", "generation", "state",
                    "loaded_at", "last_error"):
            assert key in out, key
        assert (out["plugin"], out["kind"], out["state"], out["abi"], out["max_inflight"]) == \
            ("testsink", "sink", "running", "1.1", 3), out
        assert out["file"].endswith("testsink.so") and out["generation"] >= 1
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", out["loaded_at"])
        assert st["pipelines"] == [{"name": "main", "from": "src", "types": ["test.*"],
                                    "to": [{"sink": "out", "action": "put"}], "attempts": 10}]
        assert st["spool"]["writable"] is True and st["spool"]["dead_letters"] == 0
        assert st["spool"]["pending_total"] == 0 and st["spool"]["commits"] >= 1
        assert st["events"]["received"] == 4
        wait_for(lambda: get_json(port, "/admin/status")["dispatcher"]["delivered"] == 4,
                 what="dispatcher figures")

        r = plexus("status", "-c", h.config)
        assert r.returncode == 0, r.stderr
        assert "ready" in r.stdout.splitlines()[0]
        assert re.search(r"^out\s+testsink\s+1\.0\.0\s+sink\s+\d+\s+running", r.stdout, re.M), \
            r.stdout
        assert re.search(r"^main\s+src\s+test\.\*\s+out:put$", r.stdout, re.M), r.stdout
        assert "dead letters 0" in r.stdout and "received 4" in r.stdout
        r = plexus("status", "-c", h.config, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["pid"] == h.proc.pid
        # --admin overrides the address; a wrong token is reported, exit status 1.
        r = plexus("status", "-c", h.config, "--admin", f"http://127.0.0.1:{port}/")
        assert r.returncode == 0, r.stderr
        h2cfg = h.config + ".badtoken.yaml"
        with open(h.config) as f, open(h2cfg, "w") as g:
            g.write(f.read().replace(TOKEN, "wrong"))
        r = plexus("status", "-c", h2cfg)
        assert r.returncode == 1 and "401" in r.stderr, (r.stdout, r.stderr)
        assert "wrong" not in r.stderr
        assert h.stop() == 0
    r = plexus("status", "-c", h.config)
    assert r.returncode == 1 and "nothing listens" in r.stderr, r.stderr
    r = plexus("status", "--help")
    assert r.returncode == 0 and "usage: plexus status" in r.stdout


def test_dead_letters_through_the_api_on_a_running_host():
    port = free_port()
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", fail: reject,
                                     down_file: "@TMP@/down" } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""", admin=f"127.0.0.1:{port}")

    def emit(*seqs):
        with open(h.path("in.jsonl"), "a") as f:
            for s in seqs:
                f.write(json.dumps({"k": s}) + "\n")

    def dead():
        return get_json(port, "/admin/dlq")["dead_letters"]

    def cli(*args):
        r = plexus("dlq", *args, "-c", h.config)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    with Host(cfg) as h:
        open(h.path("in.jsonl"), "w").close()
        open(h.path("down"), "w").close()
        h.start()
        emit(0, 1, 2)
        wait_for(lambda: len(dead()) == 3, what="3 dead letters")
        letters = dead()
        assert {x["reason"] for x in letters} == {"rejected: told to reject"}, letters
        assert letters[0]["id"] > letters[-1]["id"], "newest first"
        assert len(get_json(port, "/admin/dlq?limit=2")["dead_letters"]) == 2
        assert get_json(port, "/admin/dlq?sink=nope")["dead_letters"] == []
        assert len(get_json(port, "/admin/dlq?sink=out&since=1")["dead_letters"]) == 3
        assert get_json(port, "/admin/dlq?since=99999999999999")["dead_letters"] == []
        get_json(port, "/admin/dlq?limit=x", want=400)
        one = get_json(port, f"/admin/dlq/{letters[-1]['id']}")
        assert one["sink"] == "out" and one["payload"]["k"] == 0 and len(one["history"]) == 1
        get_json(port, "/admin/dlq/999999", want=404)
        get_json(port, "/admin/dlq/abc", want=404)
        fams = scrape(port)[1]
        assert sample(fams, "plexus_dead_letters") == 3
        assert sample(fams, "plexus_deliveries_total", pipeline="p", sink="out",
                      outcome="rejected") == 3

        # `plexus dlq` talks to the running host: its requests show in the admin counters.
        listed = json.loads(cli("list", "--json"))
        assert [x["id"] for x in listed] == [x["id"] for x in letters]
        assert "rejected: told to reject" in cli("list")
        assert json.loads(cli("show", str(letters[0]["id"])))["id"] == letters[0]["id"]
        fams = scrape(port)[1]
        assert sample(fams, "plexus_http_requests_total", listener="admin", route="/admin/dlq",
                      status="200") >= 2
        r = plexus("dlq", "show", "999999", "-c", h.config)
        assert r.returncode == 1 and "no dead letter 999999" in r.stderr, r.stderr

        # Bad selections are refused and change nothing.
        for body in ({}, {"ids": []}, {"ids": ["x"]}, {"ids": [1], "all": True}, "not json",
                     {"all": True, "sink": 5}):
            st, _, text = call(port, "POST", "/admin/dlq/replay", body=body)
            assert st == 400, (body, st, text)
            st, _, text = call(port, "POST", "/admin/dlq/purge", body=body)
            assert st == 400, (body, st, text)
        assert len(dead()) == 3

        # The sink recovers: a replay is delivered at once by the running host.
        os.unlink(h.path("down"))
        assert "replayed 1 dead letter" in cli("replay", str(letters[-1]["id"]))
        wait_for(lambda: len([x for x in read_jsonl(h.path("out.jsonl"))
                              if x["outcome"] == "ok"]) == 1, what="the replayed delivery")
        res = post_json(port, "/admin/dlq/replay", {"all": True, "sink": "out"})
        assert res == {"replayed": 2, "sinks": ["out"]}, res
        wait_for(lambda: len([x for x in read_jsonl(h.path("out.jsonl"))
                              if x["outcome"] == "ok"]) == 3, what="all replayed deliveries")
        assert dead() == []

        # Purge: by id through the API, the rest through the CLI.
        open(h.path("down"), "w").close()
        emit(3, 4)
        wait_for(lambda: len(dead()) == 2, what="2 new dead letters")
        first = dead()[0]["id"]
        assert post_json(port, "/admin/dlq/purge", {"ids": [first]}) == {"purged": 1}
        assert post_json(port, "/admin/dlq/purge", {"ids": [first]}) == {"purged": 0}
        assert "purged 1 dead letter" in cli("purge", "--all")
        assert "no dead letters" in cli("list")
        emit(5)
        wait_for(lambda: len(dead()) == 1, what="1 new dead letter")
        assert h.stop() == 0
    # With the host stopped, `plexus dlq` works on the data directory.
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    assert [x["sink"] for x in json.loads(r.stdout)] == ["out"]


def test_cli_never_acts_on_another_hosts_data_dir():
    port = free_port()
    body = """
plugins:
  src: { plugin: testsource, config: { count: 2 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", fail: reject } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
"""
    with Host(config(body, admin=f"127.0.0.1:{port}")) as h:
        h.start()
        wait_for(lambda: len(get_json(port, "/admin/dlq")["dead_letters"]) == 2,
                 what="dead letters")
        st, _, text = call(port, "GET", "/admin/dlq",
                           headers={"X-Plexus-Data-Dir": "/somewhere/else"})
        assert st == 421 and json.loads(text)["data_dir"] == os.path.realpath(h.path("var"))
        # Without the token the answer does not tell where the data lives.
        st, _, text = call(port, "GET", "/healthz", token=None,
                           headers={"X-Plexus-Data-Dir": "/somewhere/else"})
        assert st == 421 and "data_dir" not in json.loads(text), text
        # Same admin address, another data_dir: the CLI must not touch this host's letters.
        other = Host(config(body.replace("@TMP@/out", "@TMP@/o2"),
                            admin=f"127.0.0.1:{port}").replace("@TMP@/var", "@TMP@/var2"),
                     name="other", tmp=h.tmp)
        r = plexus("dlq", "purge", "--all", "-c", other.config)
        assert r.returncode == 0 and "purged 0 dead letters" in r.stdout, (r.stdout, r.stderr)
        assert len(get_json(port, "/admin/dlq")["dead_letters"]) == 2
        r = plexus("status", "-c", other.config)
        assert r.returncode == 1 and "serves data_dir" in r.stderr, r.stderr
        r = plexus("status", "-c", other.config, env={"PLEXUS_ADMIN": f"127.0.0.1:{port}"})
        assert r.returncode == 1 and "serves data_dir" in r.stderr, r.stderr
        # Naming the host explicitly asks it, whatever it serves.
        r = plexus("status", "-c", other.config, "--admin", f"127.0.0.1:{port}")
        assert r.returncode == 0 and os.path.realpath(h.path("var")) in r.stdout, r.stderr
        assert h.stop() == 0


def test_reload_endpoint_and_cli():
    port = free_port()
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { count: 0 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""", admin=f"127.0.0.1:{port}")
    with Host(cfg) as h:
        h.start()
        st, _, text = call(port, "POST", "/admin/reload?instance=nope")
        body = json.loads(text)
        assert st in (404, 409) and body["result"] == "failed" and body["error"], (st, body)
        r = plexus("reload", "-c", h.config, "nope")
        assert r.returncode == 1 and "failed" in r.stderr, (r.stdout, r.stderr)
        st, _, text = call(port, "POST", "/admin/reload")
        body = json.loads(text)
        assert (st == 200) == (body["result"] == "ok") and body["result"] in ("ok", "failed")
        r = plexus("reload", "-c", h.config)
        assert r.returncode == (0 if body["result"] == "ok" else 1), (r.stdout, r.stderr)
        st = get_json(port, "/admin/status")["reload"]
        assert st["ok"] + st["failed"] >= 3 and st["failed"] >= 2 and st["last_at"], st
        fams = scrape(port)[1]
        assert sample(fams, "plexus_reloads_total", result="failed") >= 2
        assert sample(fams, "plexus_reloads_total", result="ok") == st["ok"]
        r = plexus("status", "-c", h.config)
        assert re.search(r"^reloads\s+ok \d+, failed \d+, last \d{4}-", r.stdout, re.M), r.stdout
        st, _, _ = call(port, "GET", "/admin/reload")
        assert st == 405
        assert h.stop() == 0
    r = plexus("reload", "--help")
    assert r.returncode == 0 and "usage: plexus reload" in r.stdout


def test_admin_port_taken_or_disabled():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = config("""
plugins:
  src: { plugin: testsource, config: { count: 3 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""", admin=f"127.0.0.1:{port}")
        with Host(cfg) as h:
            h.start()
            # The host runs without its admin API and says so; events still flow.
            assert "admin listener failed" in h.log()
            wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) == 3, what="deliveries")
            assert h.stop() == 0
    with Host(config("plugins: {}\npipelines: []\n").replace(
            '{ listen: "127.0.0.1:0", token: "%s" }' % TOKEN, "{ listen: null }")) as h:
        h.start()
        assert "admin listening" not in h.log()
        r = plexus("dlq", "list", "-c", h.config)
        assert r.returncode == 0 and "no dead letters" in r.stdout, r.stderr
        r = plexus("status", "-c", h.config)
        assert r.returncode == 1 and "disabled" in r.stderr, r.stderr
        assert h.stop() == 0


if __name__ == "__main__":
    run_all(globals())
