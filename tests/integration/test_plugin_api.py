"""The ABI 1.2 host functions as plugins use them in a running host: a lease held by one
generation at a time across reloads, compare-and-set over the state, the cluster view, and the
reason a plugin gives with set_error in `run`, `reload` and /admin/status; plugins built as ABI
1.0 and 1.1 loading and delivering in the same host."""
import json
import re
import signal
import urllib.request

from harness import Host, plexus, read_jsonl, run_all, wait_for

TOKEN = "adm-t0ken-7d1a93"

CFG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 3s
  admin: { listen: "127.0.0.1:0", token: "%s" }
plugins:
  d: { plugin: duty, config: { ttl: 300ms@MORE@ } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: p, from: d, to: { sink: out } }
""" % TOKEN


def cfg(more=""):
    return CFG.replace("@MORE@", more)


def msgs(h, module="d"):
    out = []
    for line in h.log().splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("module") == module:
            out.append(j["msg"])
    return out


def first(lines, prefix):
    return next((i for i, m in enumerate(lines) if m.startswith(prefix)), None)


def status(h):
    req = h.admin_request("GET", "/admin/status", token=TOKEN)
    with urllib.request.urlopen(req, timeout=30) as r:
        return {i["name"]: i for i in json.loads(r.read())["instances"]}


def reload(h, text):
    h.write_config(text)
    h.proc.send_signal(signal.SIGHUP)


def test_lease_cas_and_cluster_across_reloads():
    with Host(cfg()) as h:
        h.start()
        wait_for(lambda: "lease held generation=1" in msgs(h), what="generation 1 holds the lease")
        m = msgs(h)
        assert first(m, "starts=1 version=") is not None and "stale cas: conflict" in m, m
        cl = next(x for x in m if x.startswith("cluster "))
        assert re.fullmatch(r"cluster rc=0 live_hosts=1 host_index=0 host_id=\S+", cl), cl
        # A new generation waits for the lease until the old one is unloaded.
        reload(h, cfg(", tag: two"))
        wait_for(lambda: "lease held generation=2" in msgs(h), what="generation 2 holds it")
        m = msgs(h)
        assert first(m, "starts=2 version=") is not None, m
        unloaded = first(m, "generation 1 drained, unloading")
        assert unloaded is not None and unloaded < m.index("lease held generation=2"), m
        assert "lease lost generation=1" not in m, m
        # Given up in stop, it is taken by the next generation (poked, not after a period).
        reload(h, cfg(", tag: three, release_in_stop: true"))
        wait_for(lambda: "lease held generation=3" in msgs(h), what="generation 3 holds it")
        reload(h, cfg(", tag: four, release_in_stop: true"))
        wait_for(lambda: "lease held generation=4" in msgs(h), what="generation 4 holds it")
        m = msgs(h)
        assert m.index("releasing generation=3 rc=0") < m.index("lease held generation=4"), m
        assert all(f"lease held generation={g}" in m for g in (1, 2, 3, 4))
        assert not any(x.startswith("lease lost") or x.startswith("lease error") for x in m), m
        assert h.stop() == 0


def test_set_error_in_run_reload_and_status():
    reason = "refused by configuration: account acme-42 is unknown"
    bad = cfg(", refuse: account acme-42 is unknown")
    with Host(bad) as h:
        r = plexus("run", "-c", h.config, "--log-format", "json", timeout=120)
        assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
        last = json.loads(r.stderr.strip().splitlines()[-1])
        assert "(instance d): init failed: " + reason + " (invalid argument)" in last["msg"], last
    with Host(cfg()) as h:
        h.start()
        wait_for(lambda: "lease held generation=1" in msgs(h), what="serving")
        h.write_config(bad.replace("127.0.0.1:0", f"127.0.0.1:{h.admin_port()}"))
        r = plexus("reload", "-c", h.config)
        assert r.returncode == 1 and "init failed: " + reason in r.stderr, (r.stdout, r.stderr)
        d = status(h)["d"]
        assert d["state"] == "running" and d["generation"] == 1, d
        assert "init failed: " + reason in (d["last_error"] or ""), d
        assert h.stop() == 0


def test_set_error_in_check():
    """`plexus check` starts nothing, so it never runs init: a plugin's own check (a 1.2
    descriptor callback) judges its options, and its set_error reason is the error, at the
    instance's line; run refuses the same configuration with the same reason."""
    text = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
plugins:
  src: { plugin: testsource }
  acct: { plugin: abi_set_error, config: { first: @FIRST@ } }
pipelines:
  - { name: p, from: src, to: { sink: acct } }
"""
    with Host(text.replace("@FIRST@", "bad")) as h:
        r = plexus("check", "-c", h.config)
        assert r.returncode != 0, (r.stdout, r.stderr)
        line = r.stderr.strip().splitlines()[-1]
        assert re.search(r"\.yaml:\d+:\d+: plugin instance \"acct\": check failed: option first: "
                         r"\"bad\" names no account \(instance acct\) \(invalid argument\)$",
                         line), line
        r = plexus("run", "-c", h.config, timeout=120)
        assert r.returncode != 0 and 'names no account (instance acct)' in r.stderr, r.stderr
        h.write_config(text.replace("@FIRST@", "good"))
        r = plexus("check", "-c", h.config)
        assert r.returncode == 0, (r.stdout, r.stderr)


def test_plugins_built_for_1_0_and_1_1_deliver():
    text = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  admin: { listen: null }
  http: { listen: null }
  log: { level: debug }
plugins:
  src: { plugin: testsource, config: { count: 3 } }
  old10: { plugin: abi_v10 }
  old11: { plugin: abi_v11 }
pipelines:
  - { name: p, from: src, to: [{ sink: old10 }, { sink: old11 }] }
"""
    r = plexus("plugins", "-p", __import__("harness").TEST_PLUGINS)
    lines = {l.split()[0]: l for l in r.stdout.splitlines() if l.strip()}
    assert "ABI 1.0" in lines["abi_v10"] and "ABI 1.1" in lines["abi_v11"], r.stdout
    assert "ABI 1.2" in lines["duty"], r.stdout
    with Host(text) as h:
        h.start()

        def done(sink):
            return [m for m in msgs(h, "dispatch")
                    if m.startswith("delivered") and f" sink={sink} " in m]
        wait_for(lambda: len(done("old10")) >= 3 and len(done("old11")) >= 3,
                 what="3 deliveries to each old plugin")
        assert all("abi=1.0 payload={" in m for m in done("old10")), done("old10")
        assert all("abi=1.1 text={" in m for m in done("old11")), done("old11")
        assert h.stop() == 0


def test_redelivery_after_a_drain_timeout_is_the_next_attempt():
    """A delivery still open when its generation's drain times out goes to the next generation
    as attempt 2, not as attempt 1 again, and costs none of the pipeline's attempts."""
    text = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 300ms
  admin: { listen: "127.0.0.1:0", token: "%s" }
plugins:
  src: { plugin: testsource, config: { count: 1 } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl", stall: @STALL@ } }
pipelines:
  - { name: p, from: src, to: { sink: out }, retry: { attempts: 1 } }
""" % TOKEN
    with Host(text.replace("@STALL@", "true")) as h:
        h.start()
        wait_for(lambda: status(h)["out"]["inflight"] == 1, what="the delivery held by gen 1")
        reload(h, text.replace("@STALL@", "false"))
        wait_for(lambda: any(x["outcome"] == "ok" for x in read_jsonl(h.path("out.jsonl"))),
                 what="the delivery redone")
        lines = read_jsonl(h.path("out.jsonl"))
        assert [(x["outcome"], x["attempt"]) for x in lines] == [("stalled", 1), ("ok", 2)], lines
        assert "drain timed out" in h.log()
        assert h.stop() == 0


if __name__ == "__main__":
    run_all(globals())
