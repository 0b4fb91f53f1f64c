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
import sys

import harness
from harness import Host, Skip, plexus, read_jsonl, run_all, wait_for

TOKEN = "adm-t0ken-4f9c2e"

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 3s
  admin: { listen: "@ADMIN@", token: "%s" }
""" % TOKEN

# No token in the configuration: the host makes data_dir/admin.token.
FILE_BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 3s
  admin: { listen: "@ADMIN@"@ADMIN_MORE@ }
plugins:
  src: { plugin: testsource, config: { count: 2 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", fail: reject } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
"""

PROTECTED = [("GET", "/metrics"), ("GET", "/admin/status"), ("GET", "/admin/dlq"),
             ("GET", "/admin/dlq/1"), ("POST", "/admin/dlq/replay"),
             ("POST", "/admin/dlq/purge"), ("POST", "/admin/reload")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(body, admin="127.0.0.1:0"):
    return (BASE + body).replace("@ADMIN@", admin)


def file_config(admin="127.0.0.1:0", more=""):
    return FILE_BASE.replace("@ADMIN@", admin).replace("@ADMIN_MORE@", more)


def unauthorized(port, token, reason):
    """plexus_admin_unauthorized_total{reason}."""
    return sample(scrape_with(port, token)[1], "plexus_admin_unauthorized_total", reason=reason)


def scrape_with(port, token):
    st, _, text = call(port, "GET", "/metrics", token=token)
    assert st == 200, (st, text)
    return text, check_exposition(text)


def netns_available():
    """A network namespace can be made here (root and iproute2): the test that needs one must
    then run, not skip."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


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


def test_token_required_except_healthz_and_readyz():
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
        st, _, body = call(port, "GET", "/readyz", token="nope")
        assert st == 200 and json.loads(body)["ready"] is True, (st, body)
        endpoints = [("GET", "/metrics"), ("GET", "/admin/status"),
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
            ("testsink", "sink", "running", "1.2", 3), out
        assert out["file"].endswith("testsink.so") and out["generation"] >= 1
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", out["loaded_at"])
        assert st["pipelines"] == [{"name": "main", "from": "src", "types": ["test.*"],
                                    "to": [{"sink": "out", "action": "put"}], "attempts": 10}]
        assert st["spool"]["writable"] is True and st["spool"]["dead_letters"] == 0
        # one host on SQLite: the member list is this host, the lease always held
        cl = st["cluster"]
        assert cl["store"] == "sqlite" and cl["leased"] is True and cl["alive"] == 1, cl
        assert re.match(r"^[A-Za-z0-9_.-]+-[0-9a-f]{8}$", cl["host_id"]), cl
        assert re.match(r"^[0-9a-f]{16}$", cl["config_hash"]), cl
        assert [(m["host_id"], m["self"], m["config_hash"]) for m in cl["members"]] == \
            [(cl["host_id"], True, cl["config_hash"])], cl
        assert st["events"]["received"] == 4
        # The sink wrote its lines before the spool recorded them done: poll, don't race it.
        wait_for(lambda: (lambda sp: sp["pending_total"] == 0 and sp["commits"] >= 1)(
                     get_json(port, "/admin/status")["spool"]), what="nothing pending")
        wait_for(lambda: get_json(port, "/admin/status")["dispatcher"]["delivered"] == 4,
                 what="dispatcher figures")

        r = plexus("status", "-c", h.config)
        assert r.returncode == 0, r.stderr
        assert "ready" in r.stdout.splitlines()[0]
        assert re.search(r"^out\s+testsink\s+1\.0\.0\s+sink\s+\d+\s+running", r.stdout, re.M), \
            r.stdout
        assert re.search(r"^main\s+src\s+test\.\*\s+out:put$", r.stdout, re.M), r.stdout
        assert "dead letters 0" in r.stdout and "received 4" in r.stdout
        assert f"store       sqlite, host {cl['host_id']}\n" in r.stdout, r.stdout
        r = plexus("status", "-c", h.config, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["pid"] == h.proc.pid
        # --admin overrides the address; a wrong token is reported, exit status 1.
        r = plexus("status", "-c", h.config, "--admin", f"http://127.0.0.1:{port}/")
        assert r.returncode == 0, r.stderr
        h2cfg = h.config + ".badtoken.yaml"
        with open(h.config) as f, open(h2cfg, "w") as g:
            g.write(f.read().replace(TOKEN, "wr0ng-t0ken-1"))
        r = plexus("status", "-c", h2cfg)
        assert r.returncode == 1 and "401" in r.stderr, (r.stdout, r.stderr)
        assert "wr0ng" not in r.stderr
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


def test_dead_letter_ids_match_the_log_and_never_repeat():
    # The id in the log's "dead letter id=N" is the one the admin API and `plexus dlq` show, and
    # a new dead letter never gets an id seen before: not after a replay of the highest, not
    # after a restart.
    port = free_port()
    cfg = config("""
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", fail: reject,
                                     down_file: "@TMP@/down" } }
pipelines:
  - { name: p, from: src, to: { sink: out } }
""", admin=f"127.0.0.1:{port}")

    def emit(*seqs, name="in.jsonl"):
        with open(h.path(name), "a") as f:
            for s in seqs:
                f.write(json.dumps({"k": s}) + "\n")

    def api_ids():
        return sorted(x["id"] for x in get_json(port, "/admin/dlq")["dead_letters"])

    def cli_ids():
        r = plexus("dlq", "list", "-c", h.config)
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()[1:]  # under the header
        return sorted(int(line.split()[0]) for line in rows)

    def logged_ids():
        return [int(m) for m in re.findall(r"dead letter id=(\d+)", h.log())]

    with Host(cfg) as h:
        open(h.path("in.jsonl"), "w").close()
        h.start()
        # Delivered first, so that delivery ids and dead letter counts part ways.
        emit(0, 1, 2)
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) == 3, what="3 deliveries")
        open(h.path("down"), "w").close()
        emit(3, 4)
        wait_for(lambda: len(api_ids()) == 2, what="2 dead letters")
        wait_for(lambda: len(logged_ids()) == 2, what="2 dead letters logged")
        assert api_ids() == sorted(logged_ids()), (api_ids(), logged_ids())
        assert cli_ids() == api_ids()
        seen = set(api_ids())

        # Replay the highest: rejected again, it comes back under a new, higher id.
        top = max(seen)
        assert post_json(port, "/admin/dlq/replay", {"ids": [top]})["replayed"] == 1
        wait_for(lambda: len(logged_ids()) == 3, what="the replayed delivery dead again")
        again = logged_ids()[-1]
        wait_for(lambda: again in api_ids(), what="the new dead letter listed")
        assert again > max(seen) and top not in api_ids(), (again, seen, api_ids())
        seen.add(again)
        emit(5)
        wait_for(lambda: len(logged_ids()) == 4, what="another dead letter")
        fresh = logged_ids()[-1]
        assert fresh > max(seen), (fresh, seen)
        wait_for(lambda: fresh in api_ids(), what="the new dead letter listed")
        seen.add(fresh)
        assert cli_ids() == api_ids() == sorted(seen - {top})

        # Purge the highest and restart: the next one is still above every id seen.
        assert post_json(port, "/admin/dlq/purge", {"ids": [fresh]}) == {"purged": 1}
        assert h.stop() == 0
        h.write_config(cfg.replace("in.jsonl", "in2.jsonl"))  # not the same lines again
        open(h.path("in2.jsonl"), "w").close()
        h.start()
        emit(6, name="in2.jsonl")
        wait_for(lambda: len(logged_ids()) == 5, what="a dead letter after the restart")
        last = logged_ids()[-1]
        assert last > max(seen), (last, seen)
        wait_for(lambda: last in api_ids(), what="the new dead letter listed")
        assert cli_ids() == api_ids() == sorted(seen - {top, fresh} | {last})
        assert h.stop() == 0
    # The data directory read directly (no host running) shows the same ids.
    assert cli_ids() == sorted(seen - {top, fresh} | {last})

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


def test_plugin_reason_in_run_reload_and_status():
    """A sink whose init fails names the reason it logged, not only "invalid argument": in the
    error of `run`, of `reload` (CLI and /admin/status) and in `plexus status`; a sink whose
    deliveries fail shows its last failure there too."""
    port = free_port()
    good = config("""
plugins:
  src: { plugin: testsource, config: { count: 1 } }
  out: { plugin: file, config: { path: "@TMP@/out.jsonl" } }
  flaky: { plugin: testsink, config: { file: "@TMP@/flaky.jsonl", fail: retry } }
pipelines:
  - { name: p, from: src, to: [{ sink: out }, { sink: flaky }],
      retry: { attempts: 1000, backoff: 50ms, max_backoff: 200ms, jitter: 0 } }
""", admin=f"127.0.0.1:{port}")
    bad = good.replace('path: "@TMP@/out.jsonl" }', 'path: "@TMP@/out.jsonl", fsync: sometimes }')
    reason = 'fsync must be never, always or interval, not "sometimes"'
    with Host(bad) as h:
        r = plexus("run", "-c", h.config, "--log-format", "json", timeout=120)
        assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
        last = json.loads(r.stderr.strip().splitlines()[-1])
        assert "instance out): init failed: " + reason + " (invalid argument)" \
            in last["msg"], last
    with Host(good) as h:
        h.start()
        wait_for(lambda: len(read_jsonl(h.path("flaky.jsonl"))) >= 2, what="flaky retried")

        def insts():
            return {i["name"]: i for i in get_json(port, "/admin/status")["instances"]}
        wait_for(lambda: insts()["flaky"]["last_error"] == "retry: told to retry",
                 what="the failing sink's last error in status")
        assert insts()["out"]["last_error"] is None and insts()["src"]["last_error"] is None
        r = plexus("status", "-c", h.config)
        assert re.search(r"^flaky\s.*\sretry: told to retry$", r.stdout, re.M), r.stdout

        h.write_config(bad.replace("@ADMIN@", f"127.0.0.1:{port}"))
        r = plexus("reload", "-c", h.config)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert reason in r.stderr and "(invalid argument)" in r.stderr, r.stderr
        out = insts()["out"]
        assert out["state"] == "running" and out["generation"] == 1, out
        assert reason in (out["last_error"] or ""), out
        r = plexus("status", "-c", h.config)
        row = next(line for line in r.stdout.splitlines() if line.startswith("out "))
        assert "init failed: " + reason in row, row
        assert h.stop() == 0


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


# --- authentication, as an attacker would try it --------------------------------------------

def test_no_token_is_refused_on_every_route_but_the_probes():
    with Host(file_config()) as h:
        h.start()
        port = h.admin_port()
        token = h.admin_token()
        assert re.fullmatch(r"[0-9a-f]{64}", token), "token file: 32 random bytes in hex"
        for method, path in [("GET", "/healthz"), ("GET", "/readyz")]:
            st, _, body = call(port, method, path, token=None)
            assert st == 200, (path, st, body)
        for method, path in PROTECTED:
            body = {"all": True} if method == "POST" else None
            st, hdrs, text = call(port, method, path, token=None, body=body)
            assert st == 401, (method, path, st, text)
            assert hdrs.get("www-authenticate", "").startswith("Bearer realm="), hdrs
            assert json.loads(text)["error"]
        # The file token opens them.
        assert call(port, "GET", "/admin/status", token=token)[0] == 200
        assert unauthorized(port, token, "missing") == len(PROTECTED)
        assert h.stop() == 0


def test_wrong_token_is_counted_and_never_logged():
    guesses = ["Gu3ss-0ne-" + "a" * 54, "wr0ng-t0ken-zz9", "x"]
    with Host(file_config()) as h:
        h.start()
        port = h.admin_port()
        token = h.admin_token()
        for g in guesses + [token[:-1], token + "0", token.upper()]:
            st, hdrs, text = call(port, "GET", "/admin/status", token=g)
            assert st == 401, (g, st)
            assert 'error="invalid_token"' in hdrs["www-authenticate"], hdrs
        st, _, _ = call(port, "POST", "/admin/dlq/purge", token=None, body={"all": True},
                        headers={"Authorization": "Basic " + token})
        assert st == 401
        assert unauthorized(port, token, "invalid") == len(guesses) + 4
        assert "request refused reason=invalid method=GET path=/admin/status" in h.log()
        assert h.stop() == 0
        log = h.log()
        for g in guesses[:2]:
            assert g not in log, "a presented token reached the log"
        assert token not in log, "the admin token reached the log"


def test_token_in_query_string_is_refused():
    with Host(file_config()) as h:
        h.start()
        port = h.admin_port()
        token = h.admin_token()
        for path in ["/admin/status?access_token=" + token, "/metrics?token=" + token,
                     "/admin/dlq?limit=1&access_token=" + token,
                     "/admin/reload?ACCESS_TOKEN=" + token]:
            method = "POST" if path.startswith("/admin/reload") else "GET"
            st, hdrs, text = call(port, method, path, token=None)
            assert st in (400, 401), (path, st, text)
            assert "www-authenticate" in hdrs
            # Even beside the right header: a URL with a token in it is never accepted.
            st, _, text = call(port, method, path, token=token)
            assert st in (400, 401), (path, st, text)
        assert unauthorized(port, token, "query") == 8
        assert h.stop() == 0
        assert token not in h.log()


def test_token_file_is_private_reused_and_enough_for_the_cli():
    port = free_port()
    with Host(file_config(admin=f"127.0.0.1:{port}")) as h:
        path = h.path("var", "admin.token")
        h.start()
        st = os.lstat(path)
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid(), oct(st.st_mode)
        assert "admin token created file=" in h.log()
        first = h.admin_token()
        wait_for(lambda: len(get_json(port, "/admin/dlq", token=first)["dead_letters"]) == 2,
                 what="dead letters")
        # One command each, with nothing but the config: the CLI reads the token file.
        r = plexus("status", "-c", h.config)
        assert r.returncode == 0 and "ready" in r.stdout, (r.stdout, r.stderr)
        r = plexus("dlq", "list", "--json", "-c", h.config)
        assert r.returncode == 0 and len(json.loads(r.stdout)) == 2, r.stderr
        r = plexus("reload", "-c", h.config)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert h.stop() == 0
        with open(path) as f:
            assert f.read().strip() == first
        h.start()
        assert h.admin_token() == first, "a restart keeps the token"
        assert h.log().count("admin token created") == 1
        assert plexus("status", "-c", h.config).returncode == 0
        assert h.stop() == 0
        # A token file others can read is refused, by the host and by the CLI.
        os.chmod(path, 0o644)
        h.start()
        assert "admin API not started" in h.log() and "chmod 600" in h.log(), h.log()[-2000:]
        assert h.stop() == 0
        os.chmod(path, 0o600)
        # A symbolic link planted in its place is not followed.
        os.unlink(path)
        os.symlink(h.path("planted"), path)
        h.start()
        assert "a symbolic link" in h.log(), h.log()[-2000:]
        assert not os.path.exists(h.path("planted"))
        assert h.stop() == 0
    r = plexus("status", "-c", h.config)
    assert r.returncode == 1


def test_metrics_public_only_when_configured():
    with Host(file_config()) as h:
        h.start()
        assert call(h.admin_port(), "GET", "/metrics", token=None)[0] == 401
        assert h.stop() == 0
        h.write_config(file_config(more=", metrics_public: true"))
        h.start()
        port = h.admin_port()
        st, _, text = call(port, "GET", "/metrics", token=None)
        assert st == 200 and "plexus_admin_unauthorized_total" in text, st
        assert call(port, "GET", "/admin/status", token=None)[0] == 401
        assert call(port, "GET", "/admin/dlq", token=None)[0] == 401
        assert h.stop() == 0


def test_auth_none_only_on_loopback_and_said_out_loud():
    with Host(file_config(admin="0.0.0.0:0", more=", auth: none")) as h:
        r = plexus("check", "-c", h.config)
        assert r.returncode == 78, (r.stdout, r.stderr)
        assert re.match(re.escape(h.config) + r":6:\d+: host.admin.auth: none is refused",
                        r.stderr), r.stderr
        h.start(wait=False)
        assert h.proc.wait(60) == 78
        h.proc = None
        h.logf.close()
        assert "host.admin.auth: none is refused" in h.log()
        for addr in ("[::]:0", "10.1.2.3:0", "[::ffff:10.0.0.1]:0"):
            h.write_config(file_config(admin=addr, more=", auth: none"))
            assert plexus("check", "-c", h.config).returncode == 78, addr
        # A token beside auth: none is a contradiction, not a choice.
        h.write_config(file_config(more=', auth: none, token: "abc"'))
        r = plexus("check", "-c", h.config)
        assert r.returncode == 78 and "host.admin.token" in r.stderr and "abc" not in r.stderr
        # On loopback it runs, with a warning in check and in the log.
        h.write_config(file_config(more=", auth: none"))
        r = plexus("check", "-c", h.config)
        assert r.returncode == 0 and ": ok" in r.stdout, r.stderr
        assert re.match(re.escape(h.config) + r":6:\d+: warning: host.admin.auth is none",
                        r.stderr), r.stderr
        h.start()
        assert "warning: host.admin.auth is none" in h.log()
        port = h.admin_port()
        assert call(port, "GET", "/admin/status", token=None)[0] == 200
        assert not os.path.exists(h.path("var", "admin.token"))
        assert plexus("status", "-c", h.config).returncode == 1  # port 0: nothing to call
        r = plexus("status", "-c", h.config, "--admin", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr
        assert h.stop() == 0
        # A token beyond loopback is allowed, with a warning about TLS.
        h.write_config(file_config(admin="0.0.0.0:0"))
        r = plexus("check", "-c", h.config)
        assert r.returncode == 0, r.stderr
        assert re.match(re.escape(h.config) + r":6:\d+: warning: host.admin.listen 0.0.0.0:0 "
                        r"is beyond loopback", r.stderr), r.stderr
        h.write_config(file_config(admin="[::1]:0"))
        r = plexus("check", "-c", h.config)
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_api_on_a_non_loopback_address_of_a_namespace():
    if not netns_available():
        raise Skip("no network namespace here (needs root and iproute2)")
    ns = "pxauth%d" % os.getpid()
    addr = "10.213.0.1"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        inside = ["ip", "netns", "exec", ns]
        subprocess.run(inside + ["ip", "link", "set", "lo", "up"], check=True)
        # An address outside 127/8 on the namespace's own device: not loopback to the host,
        # and nothing outside the namespace can reach it.
        subprocess.run(inside + ["ip", "addr", "add", addr + "/32", "dev", "lo"], check=True)
        with Host(file_config(admin=f"{addr}:8081")) as h:
            r = plexus("check", "-c", h.config)
            assert r.returncode == 0 and "is beyond loopback" in r.stderr, r.stderr
            h.start(prefix=inside)
            assert f"admin listening address={addr}:8081" in h.log()
            assert "warning: host.admin.listen" in h.log()
            probe = ("import http.client,sys\n"
                     "c=http.client.HTTPConnection(sys.argv[1],8081,timeout=10)\n"
                     "h={'Authorization':'Bearer '+sys.argv[3]} if len(sys.argv)>3 else {}\n"
                     "c.request('GET',sys.argv[2],headers=h)\n"
                     "print(c.getresponse().status)\n")

            def status(path, *token):
                r = subprocess.run(inside + [sys.executable, "-c", probe, addr, path, *token],
                                   capture_output=True, text=True, timeout=30)
                assert r.returncode == 0, r.stderr
                return int(r.stdout)

            assert status("/healthz") == 200
            for _, path in [p for p in PROTECTED if p[0] == "GET"]:
                assert status(path) == 401, path
                assert status(path, "wrong") == 401, path
            assert status("/admin/status", h.admin_token()) == 200
            # The CLI inside the namespace, with the token file alone.
            r = subprocess.run(inside + [harness.PLEXUS, "status", "-c", h.config],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert h.stop() == 0
            # Turning authentication off there is refused.
            h.write_config(file_config(admin=f"{addr}:8081", more=", auth: none"))
            h.start(wait=False, prefix=inside)
            assert h.proc.wait(60) == 78
            h.proc = None
            h.logf.close()
    finally:
        subprocess.run(["ip", "netns", "delete", ns])


def test_reload_applies_a_changed_token_and_never_opens_the_api():
    port = free_port()
    cfg = config("plugins: {}\npipelines: []\n", admin=f"127.0.0.1:{port}")
    with Host(cfg) as h:
        h.start()
        new = "n3w-t0ken-after-reload"
        h.write_config(cfg.replace(TOKEN, new))
        assert call(port, "POST", "/admin/reload")[0] == 200
        assert call(port, "GET", "/admin/status")[0] == 401, "the old token still works"
        assert call(port, "GET", "/admin/status", token=new)[0] == 200
        # Removing the token from the config falls back to the token file: never open.
        h.write_config(cfg.replace(', token: "%s"' % TOKEN, ""))
        h.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: call(port, "GET", "/admin/status", token=new)[0] == 401,
                 what="the reload dropping the config token")
        assert call(port, "GET", "/admin/status", token=None)[0] == 401
        with open(h.path("var", "admin.token")) as f:
            file_token = f.read().strip()
        assert call(port, "GET", "/admin/status", token=file_token)[0] == 200
        # Rotation: delete the file and reload; the old file token is refused.
        os.unlink(h.path("var", "admin.token"))
        st, _, text = call(port, "POST", "/admin/reload", token=file_token)
        assert st == 200, text
        with open(h.path("var", "admin.token")) as f:
            rotated = f.read().strip()
        assert rotated != file_token
        assert call(port, "GET", "/admin/status", token=file_token)[0] == 401
        assert call(port, "GET", "/admin/status", token=rotated)[0] == 200
        # Or edit it in place.
        with open(h.path("var", "admin.token"), "w") as f:
            f.write("edited-by-hand-0123\n")
        r = plexus("reload", "-c", h.config)  # the CLI sends the edited one: not in force yet
        assert r.returncode == 1 and "401" in r.stderr, (r.stdout, r.stderr)
        assert call(port, "POST", "/admin/reload", token=rotated)[0] == 200
        assert call(port, "GET", "/admin/status", token="edited-by-hand-0123")[0] == 200
        assert plexus("status", "-c", h.config).returncode == 0
        # A token file made unusable fails the reload, and the token in force stays.
        os.chmod(h.path("var", "admin.token"), 0o640)
        st, _, text = call(port, "POST", "/admin/reload", token="edited-by-hand-0123")
        assert st == 409 and "chmod 600" in json.loads(text)["error"], (st, text)
        assert call(port, "GET", "/admin/status", token="edited-by-hand-0123")[0] == 200
        assert h.stop() == 0


def test_reload_applies_a_changed_admin_listen():
    old_port, new_port = free_port(), free_port()
    cfg = config("plugins: {}\npipelines: []\n", admin=f"127.0.0.1:{old_port}")
    with Host(cfg) as h, socket.socket() as busy:
        h.start()
        # An address that cannot be bound fails the reload; the API stays where it was.
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        h.write_config(cfg.replace(str(old_port), str(busy.getsockname()[1])))
        st, _, text = call(old_port, "POST", "/admin/reload")
        assert st == 409 and "host.admin.listen" in json.loads(text)["error"], (st, text)
        assert call(old_port, "GET", "/admin/status")[0] == 200
        # A free one: the new listener answers, the old one is gone.
        h.write_config(cfg.replace(str(old_port), str(new_port)))
        # A request on the old listener, headers sent and body not yet, spans the reload.
        slow = socket.create_connection(("127.0.0.1", old_port), timeout=30)
        body = json.dumps({"ids": [12345]}).encode()
        slow.sendall(("POST /admin/dlq/purge HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n" % (TOKEN, len(body))).encode())
        slow.sendall(body[:3])
        st, hdrs, text = call(old_port, "POST", "/admin/reload")
        assert st == 200, text
        assert h.admin_port() == new_port
        assert call(new_port, "GET", "/admin/status")[0] == 200
        slow.sendall(body[3:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = slow.recv(4096)
            assert chunk, "the in-flight request was dropped: %r" % answer
            answer += chunk
        slow.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer

        def old_closed():
            try:
                call(old_port, "GET", "/healthz", token=None)
                return False
            except ConnectionError:
                return True

        wait_for(old_closed, what="the old admin listener to close")
        r = plexus("status", "-c", h.config)
        assert r.returncode == 0, r.stderr
        assert h.stop() == 0


if __name__ == "__main__":
    run_all(globals())
