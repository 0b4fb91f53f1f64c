"""The web console in a real browser: a host is started here, then tests/browser/console_test.js
drives headless Chromium (the system's, `chromium`) with puppeteer-core (tests/peers) through
every page: log in (a wrong token refused), the graph of two pipelines with its rates moving under
load, a dead letter opened, replayed (the sink receives it) and purged, the tap paused, a failed
reload's error, the playground; then a 50-pipeline configuration with 10,000 dead letters.
Screenshots land in BUILD/test-artifacts/console/. Chromium or puppeteer-core missing is a
failure: scripts/deps.sh test installs both."""
import json
import os
import shutil
import subprocess
import urllib.request

import harness
from harness import Host, run_all, wait_for

TOKEN = "console-t0ken-5f2a9c"
SECRET = "console-s3cret-77e1"
SCRIPT = os.path.join(harness.SOURCE, "tests", "browser", "console_test.js")
PEERS = os.path.join(harness.SOURCE, "tests", "peers")
SHOTS = os.path.join(harness.BUILD, "test-artifacts", "console")

CONFIG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 3s
  http: { listen: null }
  admin: { listen: "127.0.0.1:0", token: "%s" }
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", secret_token: "%s" } }
  crm: { plugin: testsink, config: { file: "@TMP@/crm.jsonl", fail: reject,
                                     down_file: "@TMP@/crm.down" } }
pipelines:
  - { name: archive, from: src, when: { type: "test.*" }, to: { sink: out } }
  - name: leads
    from: src
    when: { type: "lead.*" }
    to: { sink: crm, action: create, with: { email: "{{/email}}" } }
""" % (TOKEN, SECRET)


def chromium():
    """The system's Chromium; its absence fails the test (the project's scripts install it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: run scripts/deps.sh test"
    assert os.path.isdir(os.path.join(PEERS, "node_modules", "puppeteer-core")), \
        "puppeteer-core is not installed in tests/peers: run scripts/deps.sh test"
    return path


def api(h, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = h.admin_request(method, path, token=TOKEN, body=data,
                          headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=harness.scaled(30)) as r:
        return json.loads(r.read())


def dead_total(h):
    return api(h, "GET", "/admin/dlq?limit=1")["total"]


def run_browser(params, timeout=300):
    """Runs the browser script; its output is printed, its failure fails the test."""
    env = dict(os.environ, PX_CONSOLE_TEST=json.dumps(params))
    r = subprocess.run(["node", SCRIPT], capture_output=True, text=True, env=env,
                       timeout=harness.scaled(timeout))
    print(r.stdout + r.stderr, end="", flush=True)
    assert r.returncode == 0, "the browser test failed"
    return r.stdout


def test_console_pages_in_a_browser():
    exe = chromium()
    with Host(CONFIG, name="console") as h:
        open(h.path("crm.down"), "w").close()
        h.start()
        with open(h.path("in.jsonl"), "a") as f:
            for i in range(3):
                f.write(json.dumps({"type": "lead.new", "email": f"lead{i}@example.com"}) + "\n")
        wait_for(lambda: dead_total(h) == 3, what="3 dead letters")
        ids = [d["id"] for d in api(h, "GET", "/admin/dlq")["dead_letters"]]
        with open(h.config) as f:
            good = f.read()
        bad = good.replace("to: { sink: out }", "to: { sink: nowhere }")
        run_browser({
            "mode": "main", "url": f"http://127.0.0.1:{h.admin_port()}", "token": TOKEN,
            "chromium": exe, "shots": SHOTS, "config": h.config, "bad_config": bad,
            "bad_error": "nowhere", "secret": SECRET, "in_file": h.path("in.jsonl"),
            "crm_file": h.path("crm.jsonl"), "crm_down": h.path("crm.down"), "dead_ids": ids,
        })
        # What the browser did, seen from the host.
        reloads = api(h, "GET", "/admin/reloads")
        assert reloads["failed"] == 1 and reloads["reloads"][0]["result"] == "failed", reloads
        assert dead_total(h) == 0
        for name in ("login", "overview", "dead-letters", "dead-letter", "live", "reloads",
                     "playground"):
            assert os.path.getsize(os.path.join(SHOTS, name + ".png")) > 1000, name
        assert h.stop() == 0


SCALE_PIPELINES = 50
SCALE_DEAD = 10000


def scale_config():
    pipes = []
    for i in range(SCALE_PIPELINES):
        # p00 and p01 take every bulk event: half the dead letters are each one's.
        types = "bulk.*" if i < 2 else f"t{i:02}.*"
        pipes.append(f"  - {{ name: p{i:02}, from: src, when: {{ type: \"{types}\" }}, "
                     f"to: {{ sink: {'crm' if i < 2 else 'out'} }} }}")
    return """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 3s
  http: { listen: null }
  admin: { listen: "127.0.0.1:0", token: "%s" }
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl", count: %d,
                                       type: bulk.x, batch: 500 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
  crm: { plugin: testsink, config: { file: "@TMP@/crm.jsonl", fail: reject } }
pipelines:
%s
""" % (TOKEN, SCALE_DEAD // 2, "\n".join(pipes))


def test_console_with_50_pipelines_and_10000_dead_letters():
    exe = chromium()
    with Host(scale_config(), name="scale") as h:
        h.start()
        wait_for(lambda: dead_total(h) == SCALE_DEAD, timeout=120,
                 what=f"{SCALE_DEAD} dead letters")
        run_browser({
            "mode": "scale", "url": f"http://127.0.0.1:{h.admin_port()}", "token": TOKEN,
            "chromium": exe, "shots": SHOTS, "pipelines": SCALE_PIPELINES,
            "dead_total": SCALE_DEAD, "in_file": h.path("in.jsonl"),
        })
        assert h.stop() == 0


if __name__ == "__main__":
    run_all(globals())
