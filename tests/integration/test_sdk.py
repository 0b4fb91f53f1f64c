"""The plugin SDK as shipped: `meson install` into a temporary staging directory, the example plugin
built out of tree against that install only (meson and make), its scenarios run through the test
kit, the example running in the installed host against a local HTTP server, `plexus plugin new`
skeletons that compile and load unedited, the test kit catching broken plugins, ABI compatibility
(a simulated host one minor ahead, a 2.x plugin) and the header compiling as C99, C11 and
C++11."""
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import harness
from harness import Host, run_all, wait_for, BUILD, SOURCE, TEST_PLUGINS

TMP = tempfile.mkdtemp(prefix="px-sdk-")
DEST = os.path.join(TMP, "dest")


def sh(args, cwd=None, env=None, check=True, timeout=180):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(args, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def build_options():
    r = sh(["meson", "introspect", BUILD, "--buildoptions"])
    return {o["name"]: o["value"] for o in json.loads(r.stdout)}


OPTS = build_options()
PREFIX = OPTS["prefix"]
LIBDIR = OPTS["libdir"] if os.path.isabs(OPTS["libdir"]) else os.path.join(PREFIX, OPTS["libdir"])
STAGE = DEST + PREFIX                      # where the install landed
BIN = os.path.join(STAGE, "bin", "plexus")
INCLUDE = os.path.join(STAGE, "include")
PLUGIN_DIR = DEST + os.path.join(LIBDIR, "plexus", "plugins")
PC_DIR = DEST + os.path.join(LIBDIR, "pkgconfig")
# A staged install: pkg-config finds plexus-sdk.pc there and prefixes its paths with DEST.
SDK_ENV = {
    "PKG_CONFIG_PATH": PC_DIR,
    "PKG_CONFIG_SYSROOT_DIR": DEST,
    "PATH": os.path.join(STAGE, "bin") + os.pathsep + os.environ.get("PATH", ""),
}
EXAMPLE_BUILD = os.path.join(TMP, "example-meson", "build")
with open(os.path.join(SOURCE, "sdk", "include", "plexus", "sdk.h")) as _f:
    MINOR = int(re.search(r"#define PX_SDK_ABI_MINOR (\d+)", _f.read()).group(1))
NEXT = MINOR + 1


def install():
    sh(["meson", "install", "-C", BUILD, "--destdir", DEST, "--no-rebuild", "--quiet"],
       timeout=300)


install()


def kit(plugin, scenario, *args):
    """Runs `plexus plugin test` of the installed binary; returns (exit status, report)."""
    path = os.path.join(TMP, f"scenario-{time.time_ns()}.json")
    with open(path, "w") as f:
        json.dump(scenario, f)
    r = sh([BIN, "plugin", "test", plugin, "--scenario", path, "--compact", *args], check=False,
           env=SDK_ENV, timeout=120)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.returncode, report


def test_install_layout():
    with open(os.path.join(SOURCE, "sdk", "include", "plexus", "sdk.h")) as f:
        src = f.read()
    with open(os.path.join(INCLUDE, "plexus", "sdk.h")) as f:
        assert f.read() == src, "installed sdk.h differs from the source"
    assert os.access(BIN, os.X_OK)
    for p in ("file", "webhook"):
        assert os.path.exists(os.path.join(PLUGIN_DIR, p + ".so")), os.listdir(PLUGIN_DIR)
    r = sh(["pkg-config", "--modversion", "--print-requires", "plexus-sdk"], env=SDK_ENV)
    assert "jansson" in r.stdout, r.stdout
    r = sh(["pkg-config", "--cflags", "plexus-sdk"], env=SDK_ENV)
    assert "-I" + INCLUDE in r.stdout, r.stdout
    r = sh(["pkg-config", "--libs", "plexus-sdk"], env=SDK_ENV)
    assert "-ljansson" in r.stdout, r.stdout
    # The default plugin path follows the prefix: the binary's built-in path, the .pc's
    # plugindir and the place the bundled plugins were installed to are one directory.
    env = dict(SDK_ENV)
    del env["PKG_CONFIG_SYSROOT_DIR"]
    plugindir = sh(["pkg-config", "--variable=plugindir", "plexus-sdk"], env=env).stdout.strip()
    assert plugindir == os.path.join(LIBDIR, "plexus", "plugins"), plugindir
    assert DEST + plugindir == PLUGIN_DIR
    r = sh([BIN, "plugin", "--help"])
    assert f"built-in plugin path: {plugindir}\n" in r.stdout, r.stdout
    # The plugin guide and the header reference are installed, and `plugin test --help` names
    # the installed guide.
    docdir = os.path.join(PREFIX, OPTS["datadir"], "doc", "plexus")
    with open(DEST + os.path.join(docdir, "plugin-guide.md")) as f, \
            open(os.path.join(SOURCE, "docs", "plugin-guide.md")) as g:
        assert f.read() == g.read()
    with open(DEST + os.path.join(docdir, "sdk.h")) as f:
        assert f.read() == src
    r = sh([BIN, "plugin", "test", "--help"])
    assert os.path.join(docdir, "plugin-guide.md") in r.stdout, r.stdout
    abi = sh(["pkg-config", "--variable=abi_major", "plexus-sdk"], env=env).stdout.strip()
    assert abi == "1", abi
    # The example configuration is installed and valid with the installed plugins.
    example = os.path.join(STAGE, "share", "plexus", "plexus.yaml")
    assert os.path.exists(example)
    with open(example) as f:
        assert os.path.join(LIBDIR, "plexus", "plugins") in f.read()
    r = sh([BIN, "check", "-c", example], env={"PLEXUS_PLUGIN_PATH": PLUGIN_DIR}, cwd=TMP,
           check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def copy_example(name):
    dst = os.path.join(TMP, name)
    shutil.copytree(os.path.join(SOURCE, "sdk", "examples", "http-post-sink"), dst)
    return dst


def example_build():
    """Builds the example out of tree with meson (once); returns the compile output."""
    src = os.path.dirname(EXAMPLE_BUILD)
    if os.path.exists(EXAMPLE_BUILD):
        return ""
    copy_example("example-meson")
    sh(["meson", "setup", "build"], cwd=src, env=SDK_ENV)
    return sh(["meson", "compile", "-C", "build"], cwd=src, env=SDK_ENV).stdout


def test_example_builds_out_of_tree_with_meson_and_passes_its_tests():
    out = example_build()
    src = os.path.dirname(EXAMPLE_BUILD)
    assert "warning" not in out.lower(), out
    so = os.path.join(src, "build", "http_post.so")
    assert os.path.exists(so)
    # Only the entry symbol is exported.
    syms = sh(["nm", "-D", "--defined-only", so]).stdout.split()
    assert "px_plugin_entry_v1" in syms and "post_deliver" not in syms, syms
    r = sh(["meson", "test", "-C", "build", "--print-errorlogs"], cwd=src, env=SDK_ENV,
           check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^Ok:\s+3\s*$", r.stdout, re.M), r.stdout
    # The status mapping scenario, looked at in detail.
    with open(os.path.join(src, "tests", "status_mapping.json")) as f:
        scn = json.load(f)
    rc, rep = kit(so, scn)
    assert rc == 0 and rep["ok"], rep
    got = [(d["status"], d["retry_after_ms"]) for d in rep["deliveries"]]
    assert got == [("ok", 0), ("ok", 0), ("retry", 7000), ("retry", 60000), ("retry", 0),
                   ("reject", 0), ("retry", 0), ("reject", 0), ("retry", 0)], got
    auth = [h for h in rep["http_calls"][0]["headers"] if h.startswith("Authorization")]
    assert auth == ["Authorization: Bearer ***"], rep["http_calls"][0]
    assert rep["metrics"]['posts_total{result="retry"}'] == 5, rep["metrics"]
    assert rep["lifecycle"] == ["init", "drain", "drained", "destroy"], rep["lifecycle"]


def test_example_builds_with_make_and_one_cc_line():
    src = copy_example("example-make")
    sh(["make", "CFLAGS=-O2 -Wall -Wextra -Werror"], cwd=src, env=SDK_ENV)
    assert os.path.exists(os.path.join(src, "http_post.so"))
    sh(["make", "check"], cwd=src, env=SDK_ENV)
    # A wrong expectation must fail the kit (the tests can fail).
    with open(os.path.join(src, "tests", "reload.json")) as f:
        scn = json.load(f)
    scn["events"][0]["expect"] = "reject"
    rc, rep = kit(os.path.join(src, "http_post.so"), scn)
    assert rc == 1 and not rep["ok"] and "expected reject, got ok" in rep["failures"][0], rep


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records POSTs; answers 503 with Retry-After to the first one, 201 to the others."""
    seen = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with Receiver.lock:
            Receiver.seen.append({"path": self.path, "headers": dict(self.headers),
                                  "body": json.loads(body)})
            first = len(Receiver.seen) == 1
        self.send_response(503 if first else 201)
        if first:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_example_runs_in_the_installed_host():
    example_build()
    so_dir = EXAMPLE_BUILD
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    cfg = f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [{so_dir}, {PLUGIN_DIR}]
  http: {{ listen: "127.0.0.1:0" }}
  admin: {{ listen: null }}
  drain_timeout: 5s
plugins:
  hook: {{ plugin: webhook, config: {{ path: /in }} }}
  out:
    plugin: http_post
    config: {{ url: "{url}", token: tok-123-secret, headers: ["X-Test: yes"] }}
pipelines:
  - name: hook-to-post
    from: hook
    to: {{ sink: out, with: {{ order: "{{{{/order}}}}", who: "{{{{/name}}}}" }} }}
    retry: {{ attempts: 5, backoff: 100ms }}
"""
    Receiver.seen = []
    saved = harness.PLEXUS
    harness.PLEXUS = BIN  # the installed binary
    try:
        with Host(cfg) as h:
            h.start()
            port = h.http_port()
            import urllib.request
            for i in (1, 2):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/in", method="POST",
                    data=json.dumps({"order": i, "name": f"n{i}"}).encode(),
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    assert resp.status in (200, 202)
            wait_for(lambda: len(Receiver.seen) >= 3, timeout=30, what="3 POSTs (one retried)")
            time.sleep(0.3)
            assert h.stop() == 0
            log = h.log()
    finally:
        harness.PLEXUS = saved
        srv.shutdown()
    seen = Receiver.seen
    assert len(seen) == 3, seen
    bodies = sorted((s["body"]["order"], s["body"]["who"]) for s in seen)
    # The first POST got 503: the same event came again, with the same idempotency key.
    keys = [s["headers"]["Idempotency-Key"] for s in seen]
    assert len(set(keys)) == 2 and keys.count(keys[0]) == 2, keys
    assert sorted(set(bodies)) == [(1, "n1"), (2, "n2")], bodies
    assert all(s["headers"]["Authorization"] == "Bearer tok-123-secret" for s in seen)
    assert all(s["headers"]["X-Test"] == "yes" and s["path"] == "/hook" for s in seen)
    attempts = sorted(s["headers"]["X-Plexus-Attempt"] for s in seen)
    assert attempts == ["1", "1", "2"], attempts
    assert "tok-123-secret" not in log


def test_kit_sends_real_requests_without_a_script():
    example_build()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Receiver.seen = []
    try:
        rc, rep = kit(os.path.join(EXAMPLE_BUILD, "http_post.so"), {
            "config": {"url": f"http://127.0.0.1:{srv.server_address[1]}/x", "body": "event"},
            "events": [{"id": "e1", "type": "t", "payload": {"n": 1}, "expect": "retry",
                        "expect_retry_after_ms": 1000},
                       {"id": "e2", "type": "t", "payload": {"n": 2}, "expect": "ok",
                        "expect_reason": "status=201"}]})
    finally:
        srv.shutdown()
    assert rc == 0 and rep["ok"], rep
    assert [s["body"]["payload"] for s in Receiver.seen] == [{"n": 1}, {"n": 2}], Receiver.seen
    assert Receiver.seen[0]["body"]["id"] == "e1" and Receiver.seen[0]["body"]["source"] == "test"
    assert [c["status"] for c in rep["http_calls"]] == [503, 201], rep["http_calls"]


def test_describe_prints_the_options():
    example_build()
    r = sh([BIN, "plugins", "-p", EXAMPLE_BUILD, "--describe", "http_post"])
    out = r.stdout
    assert f"http_post 1.0.0 (sink, ABI 1.{MINOR})" in out, out
    lines = out.splitlines()
    url = next(l for l in lines if l.strip().startswith("url "))
    assert "string" in url and "required" in url, url
    token = next(l for l in lines if l.strip().startswith("token "))
    assert "secret" in token and "optional" in token, token
    timeout = next(l for l in lines if l.strip().startswith("timeout "))
    assert "duration" in timeout and "default 10s" in timeout, timeout
    assert "endpoint every delivery is POSTed to" in out
    r = sh([BIN, "plugins", "-p", EXAMPLE_BUILD, "--describe", "nope"], check=False)
    assert r.returncode == 1


def test_plugin_new_skeletons_compile_and_load_unedited():
    d = os.path.join(TMP, "new")
    os.makedirs(d)
    for name, kind in (("demo", "--sink"), ("demo_src", "--source")):
        sh([BIN, "plugin", "new", name, kind, "--dir", d])
        root = os.path.join(d, name)
        for f in (name + ".c", "meson.build", "Makefile", "README.md", "tests/scenario.json"):
            assert os.path.exists(os.path.join(root, f)), f
        sh(["meson", "setup", "build", "-Dwerror=true"], cwd=root, env=SDK_ENV)
        sh(["meson", "compile", "-C", "build"], cwd=root, env=SDK_ENV)
        r = sh([BIN, "plugins", "-p", os.path.join(root, "build")])
        role = "sink" if kind == "--sink" else "source"
        line = next(l for l in r.stdout.splitlines() if l.startswith(name + " "))
        assert f"ABI 1.{MINOR}" in line and role in line and "refused" not in line, r.stdout
        r = sh(["meson", "test", "-C", "build", "--print-errorlogs"], cwd=root, env=SDK_ENV,
               check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        # The same skeleton with the Makefile, warnings as errors.
        sh(["make", "CFLAGS=-O2 -Wall -Wextra -Werror"], cwd=root, env=SDK_ENV)
        assert os.path.exists(os.path.join(root, name + ".so"))
    rc, rep = kit(os.path.join(d, "demo", "build", "demo.so"),
                  {"events": [{"type": "t", "payload": {"x": 1}, "expect": "ok"}],
                   "reload": True})
    assert rc == 0 and rep["ok"], rep
    assert rep["handed_over"] == {"delivered": 1}, rep
    assert "describe" not in rep  # the report has its fixed shape
    rc, rep = kit(os.path.join(d, "demo_src", "build", "demo_src.so"),
                  {"config": {"interval": "10ms"}, "run_ms": 200, "expect_emits": {"min": 3}})
    assert rc == 0 and rep["ok"], rep
    seqs = [e["payload"]["seq"] for e in rep["emits"]]
    assert seqs == list(range(len(seqs))) and rep["kv"]["seq"] == len(seqs), rep
    # The skeleton's plugin in a real host, with a pipeline.
    cfg = f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [{os.path.join(d, 'demo_src', 'build')}, {os.path.join(d, 'demo', 'build')}]
  admin: {{ listen: null }}
  http: {{ listen: null }}
plugins:
  ticks: {{ plugin: demo_src, config: {{ interval: 20ms }} }}
  out: {{ plugin: demo }}
pipelines:
  - {{ name: ticks-to-demo, from: ticks, to: {{ sink: out }} }}
"""
    saved = harness.PLEXUS
    harness.PLEXUS = BIN
    try:
        with Host(cfg) as h:
            h.start()
            wait_for(lambda: h.log().count("delivered type=demo_src.tick") >= 3,
                     what="3 deliveries")
            assert h.stop() == 0
    finally:
        harness.PLEXUS = saved
    webhook_skeleton(d)
    # Refusals: an existing folder, a name that is not an identifier.
    r = sh([BIN, "plugin", "new", "demo", "--dir", d], check=False)
    assert r.returncode == 1 and "cannot create" in r.stderr, r.stderr
    r = sh([BIN, "plugin", "new", "Bad-Name", "--dir", d], check=False)
    assert r.returncode == 2, r.stderr


def webhook_skeleton(d):
    """`plugin new --source --http`: compiles with warnings as errors, passes its scenario in the
    kit, and in a real host answers 202 once persisted (the event reaches the sink), 401 to a
    missing or wrong signature, 400 to a body that is not JSON."""
    import hashlib
    import hmac
    import http.client
    name = "demo_hook"
    sh([BIN, "plugin", "new", name, "--source", "--http", "--dir", d])
    root = os.path.join(d, name)
    sh(["meson", "setup", "build", "-Dwerror=true"], cwd=root, env=SDK_ENV)
    sh(["meson", "compile", "-C", "build"], cwd=root, env=SDK_ENV)
    r = sh(["meson", "test", "-C", "build", "--print-errorlogs"], cwd=root, env=SDK_ENV,
           check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    sh(["make", "CFLAGS=-O2 -Wall -Wextra -Werror"], cwd=root, env=SDK_ENV)
    secret = "hook-secret-1234"
    cfg = f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [{os.path.join(root, 'build')}, {PLUGIN_DIR}]
  admin: {{ listen: null }}
  http: {{ listen: "127.0.0.1:0" }}
plugins:
  hook: {{ plugin: {name}, config: {{ path: /hook, secret: "{secret}" }} }}
  out: {{ plugin: file, config: {{ path: "@TMP@/out.jsonl" }} }}
pipelines:
  - {{ name: hook-to-file, from: hook, to: {{ sink: out }} }}
"""
    saved = harness.PLEXUS
    harness.PLEXUS = BIN
    try:
        with Host(cfg) as h:
            h.start()
            port = h.http_port()

            def post(body, sig):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                hdrs = {"Content-Type": "application/json"}
                if sig is not None:
                    hdrs["X-Signature-256"] = sig
                c.request("POST", "/hook", body=body, headers=hdrs)
                resp = c.getresponse()
                out = resp.status, resp.read().decode()
                c.close()
                return out
            body = b'{"order": 7}'
            good = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert post(body, None)[0] == 401
            assert post(body, good[:-1] + ("0" if good[-1] != "0" else "1"))[0] == 401
            assert post(b"not json", "sha256=" + hmac.new(secret.encode(), b"not json",
                                                          hashlib.sha256).hexdigest())[0] == 400
            st, text = post(body, good)
            assert st == 202 and "accepted" in text, (st, text)
            wait_for(lambda: os.path.exists(h.path("out.jsonl")) and
                     '"order":7' in open(h.path("out.jsonl")).read().replace(" ", ""),
                     what="the webhook's event in the sink's file")
            assert h.stop() == 0
    finally:
        harness.PLEXUS = saved


def build_fixture(src, out, extra=(), include=INCLUDE):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I" + include, "-shared", "-fPIC",
        "-fvisibility=hidden", *extra, "-o", out, src, "-ljansson", "-lpthread",
        "-Wl,--no-undefined"])
    return out


def test_kit_catches_rule_violations():
    src = os.path.join(SOURCE, "tests", "sdk", "badsink.c")
    scn = {"events": [{"type": "x", "wait": False}], "timeout_ms": 300, "run_ms": 50}
    expect = {
        0: None,
        1: "timers never stopped",
        2: "drained() was not called",
        3: "complete called twice",
        4: "complete for delivery 0 after destroy",
        5: "kv_set called from a thread other than the loop thread",
    }
    for fault, needle in expect.items():
        so = build_fixture(src, os.path.join(TMP, "bad", str(fault), "badsink.so"),
                           [f"-DFAULT={fault}"])
        rc, rep = kit(so, scn)
        if needle is None:
            assert rc == 0 and rep["ok"], rep
        else:
            assert rc == 1 and not rep["ok"], (fault, rep)
            assert any(needle in v for v in rep["violations"]), (fault, rep["violations"])
    # A crash ends the scenario's own process, not the kit: the report names the callback.
    so = build_fixture(src, os.path.join(TMP, "bad", "6", "badsink.so"), ["-DFAULT=6"])
    rc, rep = kit(so, scn)
    assert rc == 1 and not rep["ok"], rep
    assert rep["failures"] == ["crash: SIGSEGV in deliver of instance badsink"], rep
    assert rep["crash"]["call"] == "deliver" and rep["crash"]["event"], rep
    # Init failures are reported; a plugin that does not load is a failed run.
    rc, rep = kit(os.path.join(TEST_PLUGINS, "abi_init_fails.so"), {})
    assert rc == 1 and any("init failed" in f for f in rep["failures"]), rep
    rc, rep = kit(os.path.join(TEST_PLUGINS, "abi_init_fails.so"), {"expect_init_error": True})
    assert rc == 0, rep
    rc, rep = kit(os.path.join(TEST_PLUGINS, "abi_wrong_major.so"), {})
    assert rc == 1 and "built for plugin ABI 2.x" in rep["failures"][0], rep


def test_kit_runs_the_bundled_plugins():
    out = os.path.join(TMP, "kit-file.jsonl")
    rc, rep = kit(os.path.join(PLUGIN_DIR, "file.so"),
                  {"config": {"path": out},
                   "events": [{"type": "a.b", "payload": {"n": 1}, "expect": "ok"},
                              {"type": "a.c", "payload": {"n": 2}, "expect": "ok"}]})
    assert rc == 0 and rep["ok"], rep
    with open(out) as f:
        assert len(f.read().splitlines()) == 2
    rc, rep = kit(os.path.join(PLUGIN_DIR, "webhook.so"), {
        "config": {"path": "/in"},
        "requests": [{"method": "POST", "path": "/in", "body": {"a": 1},
                      "headers": {"X-Event-Type": "shop.order"}, "expect_status": 202},
                     {"method": "POST", "path": "/in", "body": "not json",
                      "expect_status": 400}],
        "expect_emits": 1})
    assert rc == 0 and rep["ok"], rep
    assert rep["emits"][0]["type"] == "shop.order" and rep["emits"][0]["payload"] == {"a": 1}
    assert rep["emits"][0].get("raw_text") is True, rep["emits"][0]  # event_set_raw, checked
    rc, rep = kit(os.path.join(PLUGIN_DIR, "webhook.so"), {
        "config": {"path": "/in"}, "emit_status": "busy",
        "requests": [{"method": "POST", "path": "/in", "body": {"a": 1}, "expect_status": 503}]})
    assert rc == 0 and rep["ok"], rep
    rc, rep = kit(os.path.join(TEST_PLUGINS, "testsource.so"), {"config": {"count": 5},
                                                                 "expect_emits": 5})
    assert rc == 0 and rep["ok"], rep


def test_kit_runs_the_real_host():
    """The kit's host is the daemon's runtime: the plugin's routes are served by the real HTTP
    server (whose body limit answers 413 before the plugin sees the request), its events get the
    host's ids, and a store that refuses puts makes them busy."""
    big = {"big": "x" * (2 * 1024 * 1024)}
    rc, rep = kit(os.path.join(PLUGIN_DIR, "webhook.so"), {
        "config": {"path": "/in"},
        "requests": [{"method": "POST", "path": "/in", "body": big, "expect_status": 413},
                     {"method": "POST", "path": "/in", "body": {"a": 1}, "expect_status": 202}],
        "expect_emits": 1})
    assert rc == 0 and rep["ok"], (rep["failures"], rep["violations"])  # (the body is 2 MiB)
    assert rep["requests"][0]["body"] == {"error": "body too large"}, rep["requests"][0]
    emitted = rep["emits"][0]
    assert not emitted["id"].startswith("kit-") and emitted["persisted"] == "ok", emitted
    assert rep["requests"][1]["body"]["id"] == emitted["id"], rep["requests"][1]
    rc, rep = kit(os.path.join(PLUGIN_DIR, "webhook.so"), {
        "config": {"path": "/in"}, "emit_status": "busy",
        "requests": [{"method": "POST", "path": "/in", "body": {"a": 1}, "expect_status": 503}]})
    assert rc == 0 and rep["ok"], rep
    assert rep["emits"][0]["persisted"] == "busy", rep["emits"]


def test_kit_expect_emits_matches_content():
    """expect_emits as patterns: each emit's type and payload (a JSON subset) in order; a wrong
    type, a payload value that differs or one emit too many fails the run."""
    so = os.path.join(TEST_PLUGINS, "testsource.so")
    cfg = {"count": 3, "type": "shop.order", "payload": {"shop": "a", "n": {"x": 1, "y": 2}}}
    rc, rep = kit(so, {"config": cfg, "expect_emits": [
        {"type": "shop.order", "payload": {"seq": 0, "n": {"x": 1}}},
        {"type": "shop.order", "payload": {"seq": 1}},
        {"payload": {"shop": "a", "seq": 2}}]})
    assert rc == 0 and rep["ok"], rep
    rc, rep = kit(so, {"config": cfg, "expect_emits": [
        {"type": "shop.order"}, {"type": "shop.refund"}, {"type": "shop.order"}]})
    assert rc == 1 and any("emit 1" in f and "shop.refund" in f for f in rep["failures"]), rep
    rc, rep = kit(so, {"config": cfg, "expect_emits": [
        {"payload": {"seq": 0}}, {"payload": {"seq": 1, "n": {"x": 2}}}, {}]})
    assert rc == 1 and any("emit 1" in f for f in rep["failures"]), rep
    rc, rep = kit(so, {"config": cfg, "expect_emits": [{}, {}]})
    assert rc == 1 and "expected 2 emits, got 3" in rep["failures"], rep
    # with a count: the patterns need only be found, in order
    rc, rep = kit(so, {"config": cfg, "expect_emits": {"min": 1, "match": [
        {"payload": {"seq": 2}}]}})
    assert rc == 0 and rep["ok"], rep
    rc, rep = kit(so, {"config": cfg, "expect_emits": {"match": [
        {"payload": {"seq": 2}}, {"payload": {"seq": 0}}]}})
    assert rc == 1 and any("emit 1" in f for f in rep["failures"]), rep


def test_kit_expect_headers_of_route_responses():
    """expect_headers on a request: the response's headers as the HTTP client received them
    (exact values, names in any case; null: absent)."""
    so = os.path.join(PLUGIN_DIR, "webhook.so")
    ok = {"method": "POST", "path": "/in", "body": {"a": 1}, "expect_status": 202}
    rc, rep = kit(so, {"config": {"path": "/in"}, "requests": [
        dict(ok, expect_headers={"content-type": "application/json", "Retry-After": None})]})
    assert rc == 0 and rep["ok"], rep
    rc, rep = kit(so, {"config": {"path": "/in"}, "emit_status": "busy", "requests": [
        dict(ok, expect_status=503, expect_headers={"Retry-After": "1"})]})
    assert rc == 0 and rep["ok"], rep
    rc, rep = kit(so, {"config": {"path": "/in"}, "requests": [
        dict(ok, expect_headers={"Content-Type": "text/plain", "Retry-After": "1"})]})
    assert rc == 1, rep
    assert any("Content-Type: expected text/plain, got application/json" in f
               for f in rep["failures"]), rep["failures"]
    assert any("Retry-After: expected 1, got none" in f for f in rep["failures"]), rep


def test_kit_http_answers_matched_by_method_and_url():
    """A scripted answer with "method" and/or "url" answers the first request it fits (in list
    order; a URL ending in * is a prefix); "repeat" answers every request that fits."""
    example_build()
    so = os.path.join(EXAMPLE_BUILD, "http_post.so")
    url = "http://127.0.0.1:9/hook"
    ev = [{"id": "e1", "type": "t", "expect": "ok"}, {"id": "e2", "type": "t", "expect": "ok"}]
    rc, rep = kit(so, {"config": {"url": url}, "events": ev, "http": [
        {"method": "GET", "status": 500},
        {"url": "http://127.0.0.1:9/other", "status": 500},
        {"method": "post", "url": url, "status": 200},
        {"url": "http://127.0.0.1:9/h*", "status": 201}]})
    assert rc == 0 and rep["ok"], rep
    assert [c["answer"] for c in rep["http_calls"]] == [2, 3], rep["http_calls"]
    rc, rep = kit(so, {"config": {"url": url}, "events": ev, "http": [
        {"method": "POST", "url": url, "status": 204, "repeat": True}]})
    assert rc == 0 and rep["ok"], rep
    assert [c["status"] for c in rep["http_calls"]] == [204, 204], rep["http_calls"]
    rc, rep = kit(so, {"config": {"url": url}, "events": [dict(ev[0], expect="retry")],
                       "http": [{"method": "GET", "status": 200}]})
    assert rc == 1 and any("no answer left for it" in f for f in rep["failures"]), rep


def test_kit_runs_several_hosts_on_one_store():
    """"hosts": 2 runs two runtimes on one loop over one in-memory cluster state: the plugin's
    lease is held by one host, its compare-and-set builds on the other host's write and a stale
    one is refused, cluster() counts both; expect_locks and expect_cluster check that, and fail when it is not so."""
    so = os.path.join(TEST_PLUGINS, "duty.so")
    scn = {"hosts": 2, "run_ms": 400, "config": {"ttl": "300ms"},
           "expect_locks": {"duty": 1},
           "expect_cluster": [
               {"call": "kv_cas", "host": 1, "key": "starts", "expected": 0, "result": "ok"},
               {"call": "kv_cas", "host": 2, "key": "starts", "expected": 1, "result": "ok",
                "value": 2},
               {"call": "kv_cas", "host": 2, "key": "starts", "expected": 1,
                "result": "conflict"},
               {"call": "cluster", "host": 2, "live_hosts": 2, "host_index": 1},
               {"call": "lock", "host": 1, "name": "duty", "status": "held"}],
           "expect_kv": {"starts": 2}}
    rc, rep = kit(so, scn)
    assert rc == 0 and rep["ok"], rep
    assert rep["locks"] == {"duty": 1}, rep["locks"]
    assert rep["lifecycle"][:4] == ["init@1", "init@2", "start@1", "start@2"], rep["lifecycle"]
    hosts = {l["host"] for l in rep["logs"] if l["msg"].startswith("cluster rc=0 live_hosts=2")}
    assert hosts == {1, 2}, rep["logs"]
    assert not any(c["call"] == "lock" and c["host"] == 2 and c["status"] == "held"
                   for c in rep["cluster"]), rep["cluster"]
    rc, rep = kit(so, dict(scn, expect_locks={"duty": 2}))
    assert rc == 1 and any('lease "duty": expected host 2' in f for f in rep["failures"]), rep
    rc, rep = kit(so, dict(scn, expect_cluster=[{"call": "kv_cas", "host": 2,
                                                 "expected": 0, "result": "ok"}]))
    assert rc == 1 and any("cluster call 0" in f for f in rep["failures"]), rep
    # one host: the lease is its own, and the host is alone
    rc, rep = kit(so, {"run_ms": 200, "expect_locks": {"duty": 1},
                       "expect_cluster": [{"call": "cluster", "live_hosts": 1}]})
    assert rc == 0 and rep["ok"], rep
    rc, rep = kit(so, {"hosts": 9})
    assert rc == 1 and "hosts must be a number from 1 to 4" in rep["failures"][0], rep


def patched_header(minor_field_host, minor_field_desc):
    """A copy of the installed header one minor version ahead (ABI 1.N+1 of the 1.N header): one
    field appended to each struct."""
    with open(os.path.join(INCLUDE, "plexus", "sdk.h")) as f:
        text = f.read()
    marker = f"    /* ABI 1.{NEXT}+: append below this line only */\n"
    assert text.count(marker) == 2
    define = f"#define PX_SDK_ABI_MINOR {MINOR}\n"
    assert text.count(define) == 1
    text = text.replace(define, f"#define PX_SDK_ABI_MINOR {NEXT}\n")
    text = text.replace(marker + "} px_host_api;", marker + minor_field_host + "\n} px_host_api;")
    text = text.replace(marker + "} px_plugin_desc;",
                        marker + minor_field_desc + "\n} px_plugin_desc;")
    inc = os.path.join(TMP, "inc-next")
    os.makedirs(os.path.join(inc, "plexus"), exist_ok=True)
    with open(os.path.join(inc, "plexus", "sdk.h"), "w") as f:
        f.write(text)
    return inc


def test_abi_compatibility():
    inc_next = patched_header("    int (*later_fn)(px_plugin_ctx *ctx, int x);",
                              "    int (*later_cb)(void *state);")
    host_next = os.path.join(TMP, "abi_host_next")
    # Built like the fixtures it loads: a sanitized build's plugins need the sanitizer runtime.
    san = ["-fsanitize=address,undefined"] if harness.SANITIZED else []
    sh(["cc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", *san, "-I" + inc_next,
        "-I" + os.path.join(SOURCE, "host", "runtime"), "-I" + os.path.join(SOURCE, "host", "base"),
        "-I" + os.path.join(SOURCE, "util"), "-o", host_next,
        os.path.join(SOURCE, "tests", "sdk", "abi_host11.c"),
        os.path.join(SOURCE, "util", "mem.c"), "-ljansson", "-ldl"])
    src_next = os.path.join(SOURCE, "tests", "sdk", "plugin11.c")
    p_next = build_fixture(src_next, os.path.join(TMP, "p-next", "plugin11.so"), include=inc_next)
    p_low = build_fixture(src_next, os.path.join(TMP, "p-low", "plugin11.so"),
                          ["-DNEEDS_ONLY_1_0"], include=inc_next)
    example_build()
    example = os.path.join(EXAMPLE_BUILD, "http_post.so")
    r = sh([host_next, "--init", p_next, p_low,
            os.path.join(TEST_PLUGINS, "abi_ok.so"),
            os.path.join(TEST_PLUGINS, "abi_wrong_major.so"),
            os.path.join(TEST_PLUGINS, "abi_major_field.so"),
            os.path.join(TEST_PLUGINS, "abi_v10.so"),
            os.path.join(TEST_PLUGINS, "abi_v11.so")])
    out = r.stdout.splitlines()
    assert f"host ABI 1.{NEXT}" in out[-1], out
    lines = [json.loads(l) for l in out[:-1]]
    ok_next, low, ok_now, wrong, field, v10, v11 = lines
    # The next host reads later_cb only from descriptors large enough to hold it.
    assert ok_next["loaded"] and ok_next["has_later_cb"] and ok_next["later_cb"] == 11, ok_next
    assert ok_next["later_fn_calls"] == 1, ok_next    # PX_HAS(host, later_fn) was true
    assert low["loaded"] and low["abi"] == "1.0", low
    assert ok_now["loaded"] and not ok_now["has_later_cb"] and ok_now["abi"] == f"1.{MINOR}", ok_now
    assert not wrong["loaded"] and "built for plugin ABI 2.x" in wrong["error"], wrong
    assert f"host speaks ABI 1.{NEXT}" in wrong["error"], wrong
    assert not field["loaded"] and "built for plugin ABI 2." in field["error"], field
    # Plugins built as 1.0 and 1.1 (the 1.0 descriptor) load there too.
    assert v10["loaded"] and v10["abi"] == "1.0" and not v10["has_later_cb"], v10
    assert v11["loaded"] and v11["abi"] == "1.1" and not v11["has_later_cb"], v11
    # The out-of-tree example (built against this header) loads in the next host too.
    r = sh([host_next, example])
    ex = json.loads(r.stdout.splitlines()[0])
    assert ex["loaded"] and not ex["has_later_cb"], ex
    # The real host: a plugin that needs the next minor is refused cleanly; one that declares it
    # needs only 1.0 loads, and its PX_HAS probe sees no later_fn.
    r = sh([BIN, "plugins", "-p", os.path.dirname(p_next)], check=False)
    assert r.returncode == 1 and "refused" in r.stdout and \
        f"built for plugin ABI 1.{NEXT}, newer than this host's ABI 1.{MINOR}" in r.stdout, r.stdout
    r = sh([BIN, "plugins", "-p", os.path.dirname(p_low)])
    assert "plugin11" in r.stdout and "refused" not in r.stdout, r.stdout
    rc, rep = kit(p_low, {"events": [{"type": "x", "expect": "ok"}]})
    assert rc == 0 and {"level": "info", "msg": "host has no later_fn"} in rep["logs"], rep
    r = sh([BIN, "plugins", "-p", TEST_PLUGINS], check=False)
    assert r.returncode == 1, r.stderr
    line = next(l for l in r.stdout.splitlines() if "abi_wrong_major" in l)
    assert "refused" in line and "built for plugin ABI 2.x" in line, line


def test_header_compiles_as_c99_c11_and_cxx():
    src_c = os.path.join(SOURCE, "tests", "sdk", "header_c.c")
    for std in ("c99", "c11"):
        for inc in (INCLUDE, os.path.join(SOURCE, "sdk", "include")):
            sh(["cc", f"-std={std}", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I" + inc,
                "-c", src_c, "-o", os.path.join(TMP, f"hc-{std}.o")])
    if not shutil.which("g++"):
        raise AssertionError("g++ is needed for the C++ header check")
    out = os.path.join(TMP, "cxx", "header_cxx.so")
    os.makedirs(os.path.dirname(out))
    sh(["g++", "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I" + INCLUDE,
        "-shared", "-fPIC", "-fvisibility=hidden", "-o", out,
        os.path.join(SOURCE, "tests", "sdk", "header_cxx.cpp"), "-ljansson",
        "-Wl,--no-undefined"])
    syms = sh(["nm", "-D", "--defined-only", out]).stdout
    assert "px_plugin_entry_v1" in syms and "_Z" not in syms.split("px_plugin_entry_v1")[0][-3:]
    r = sh([BIN, "plugins", "-p", os.path.dirname(out)])
    assert "header_cxx" in r.stdout and "refused" not in r.stdout, r.stdout
    rc, rep = kit(out, {"events": [{"type": "x", "expect": "ok", "expect_reason": "from c++"}]})
    assert rc == 0 and rep["ok"], rep


if __name__ == "__main__":
    try:
        run_all(globals())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
