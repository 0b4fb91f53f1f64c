"""The host core end to end: routing, fan-out, mapping, check, plugins, graceful shutdown."""
import os
import signal
import subprocess
import time

from harness import (Host, plexus, read_acks, read_jsonl, run_all, wait_for, PLEXUS, PLUGINS,
                     TEST_PLUGINS)

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 5s
"""


def test_fan_out_and_filters():
    cfg = BASE + """
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl", ack_file: "@TMP@/acks" } }
  a: { plugin: testsink, config: { file: "@TMP@/a.jsonl", tag: a } }
  b: { plugin: testsink, config: { file: "@TMP@/b.jsonl", tag: b } }
  c: { plugin: testsink, config: { file: "@TMP@/c.jsonl", tag: c } }
pipelines:
  - name: all-orders
    from: src
    when: { type: "shop.order.*" }
    to:
      - { sink: a, action: copy }
      - { sink: b, action: copy, with: { id: "{{/order/id}}", who: "{{/order/name}} <{{/order/email}}>" } }
  - name: big-orders
    from: "*"
    when:
      type: [shop.order.created]
      match:
        /order/total: { in: [100, 200] }
        /order/vip: { exists: true }
    to: { sink: c, action: vip, with: { total: "{{/order/total}}", order: "{{/order}}" } }
"""
    with Host(cfg) as h:
        lines = [
            '{"type":"shop.order.created","order":{"id":1,"name":"Ana","email":"a@x.io","total":100,"vip":true}}',
            '{"type":"shop.order.created","order":{"id":2,"name":"Bo","email":"b@x.io","total":100}}',
            '{"type":"shop.order.paid","order":{"id":3,"name":"Cy","email":"c@x.io","total":200,"vip":false}}',
            '{"type":"shop.refund","order":{"id":4,"name":"Di","email":"d@x.io","total":100,"vip":true}}',
        ]
        with open(h.path("in.jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
        h.start()
        wait_for(lambda: len(read_acks(h.path("acks"))) == 4, what="4 acks")
        wait_for(lambda: len(read_jsonl(h.path("a.jsonl"))) == 3 and
                 len(read_jsonl(h.path("b.jsonl"))) == 3 and
                 len(read_jsonl(h.path("c.jsonl"))) == 1, what="deliveries")
        assert h.stop() == 0
    a = read_jsonl(h.path("a.jsonl"))
    b = read_jsonl(h.path("b.jsonl"))
    c = read_jsonl(h.path("c.jsonl"))
    assert [x["seq"] for x in a] == [0, 1, 2], a
    assert b[0]["params"] == {"id": 1, "who": "Ana <a@x.io>"}, b[0]
    assert c[0]["seq"] == 0 and c[0]["action"] == "vip"
    assert c[0]["params"]["total"] == 100
    assert c[0]["params"]["order"]["email"] == "a@x.io"  # whole object keeps its type
    assert all(x["outcome"] == "ok" and x["attempt"] == 1 for x in a + b + c)


def test_missing_pointer_rejects_that_delivery_only():
    cfg = BASE + """
plugins:
  src: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl", ack_file: "@TMP@/acks" } }
  a: { plugin: testsink, config: { file: "@TMP@/a.jsonl" } }
  b: { plugin: testsink, config: { file: "@TMP@/b.jsonl" } }
pipelines:
  - name: p
    from: src
    to:
      - { sink: a, with: { email: "{{/user/email}}" } }
      - { sink: b, with: { seq: "{{/seq}}" } }
"""
    with Host(cfg) as h:
        with open(h.path("in.jsonl"), "w") as f:
            f.write('{"user":{"name":"no email"}}\n{"user":{"email":"e@x.io"}}\n')
        h.start()
        wait_for(lambda: len(read_jsonl(h.path("b.jsonl"))) == 2, what="b deliveries")
        wait_for(lambda: len(read_jsonl(h.path("a.jsonl"))) == 1, what="a delivery")
        h.stop()
        r = plexus("dlq", "list", "-c", h.config, "--json")
        assert r.returncode == 0, r.stderr
        assert "missing /user/email" in r.stdout, r.stdout
        assert '"sink": "a"' in r.stdout or '"sink":"a"' in r.stdout, r.stdout
    assert read_jsonl(h.path("a.jsonl"))[0]["params"] == {"email": "e@x.io"}


def test_graceful_shutdown_loses_nothing_accepted():
    cfg = BASE + """
plugins:
  src: { plugin: testsource, config: { count: 3000, batch: 50, ack_file: "@TMP@/acks" } }
  slow: { plugin: testsink, max_inflight: 4, config: { file: "@TMP@/out.jsonl", delay: 2ms } }
pipelines:
  - { name: p, from: src, to: { sink: slow } }
"""
    with Host(cfg) as h:
        h.start()
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) > 100, what="some deliveries")
        assert h.stop(signal.SIGTERM) == 0
        acked = {s for s, st in read_acks(h.path("acks")).items() if st == 0}
        first_run = len(read_jsonl(h.path("out.jsonl")))
        assert acked, "nothing acknowledged"
        assert first_run < 3000, "stopped too late to test anything"
        # Restart with no new events: what was acknowledged but not delivered is delivered now.
        h.write_config(cfg.replace("count: 3000", "count: 0"))
        h.start()
        wait_for(lambda: acked <= {x["seq"] for x in read_jsonl(h.path("out.jsonl"))
                                   if x["outcome"] == "ok"}, timeout=60,
                 what="every acknowledged event delivered")
        h.stop()
    seqs = [x["seq"] for x in read_jsonl(h.path("out.jsonl")) if x["outcome"] == "ok"]
    assert acked <= set(seqs)
    assert "stopped" in h.log()


def test_check_valid_and_invalid():
    h = Host(BASE + """
plugins:
  out: { plugin: testsink, config: { file: "@TMP@/o.jsonl" } }
""")
    r = plexus("check", "-c", h.config)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    # An unknown option of the plugin, with the exact position.
    h.write_config(BASE + """
plugins:
  out: { plugin: testsink, config: { file: x, fial: retry } }
""")
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert r.stderr.startswith(h.config + ":8:47: "), r.stderr
    assert "did you mean \"fail\"" in r.stderr, r.stderr
    # A required option missing.
    h.write_config(BASE + """
plugins:
  out: { plugin: testsink, config: { tag: x } }
""")
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78 and "\"file\"" in r.stderr and ":8:" in r.stderr, r.stderr
    # A sink used as a source, with the position of the pipeline.
    h.write_config(BASE + """
plugins:
  out: { plugin: testsink, config: { file: x } }
pipelines:
  - { name: loop, from: out, to: { sink: out } }
""")
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78, r.stderr
    assert r.stderr.startswith(h.config + ":10:5: "), r.stderr
    assert "\"out\" is not a source" in r.stderr, r.stderr
    # A plugin that is not there.
    h.write_config(BASE + """
plugins:
  out: { plugin: nosuchplugin }
""")
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78 and "\"nosuchplugin\"" in r.stderr and ":8:" in r.stderr, r.stderr
    # A plugin the loader refuses: one line with the file and both versions.
    h.write_config(BASE + """
plugins:
  out: { plugin: abi_newer_minor }
""")
    r = plexus("check", "-c", h.config)
    assert r.returncode != 0, r.stdout
    assert "abi_newer_minor.so" in r.stderr and "1.3" in r.stderr and "1.2" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_check_finds_what_bundled_plugins_need_without_starting_them():
    """Routes without host.http.listen, and a file sink whose directory is missing or is not a
    directory, are reported at the configuration's line by check, before any init runs."""
    head = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@PLUGINS@]
  http: { listen: null }
  admin: { listen: null }
plugins:
"""
    with Host("version: 1\n") as h:
        with open(h.path("afile"), "w") as f:
            f.write("a regular file\n")
        cases = [
            ('  hook: { plugin: webhook, config: { path: /hook } }', 'hook:',
             'plugin instance "hook": webhook serves HTTP routes, which need host.http.listen '
             '(not set)'),
            ('  nt: { plugin: notification, config: { http_path: /eb } }', '/eb',
             'plugin instance "nt": notification serves HTTP routes with http_path, which need '
             'host.http.listen (not set)'),
            ('  out: { plugin: file, config: { path: "@TMP@/afile/out.jsonl" } }', '"@TMP@',
             f'plugin instance "out": option "path": cannot create or append to '
             f'{h.tmp}/afile/out.jsonl: {h.tmp}/afile is not a directory'),
            ('  out: { plugin: file, config: { path: "@TMP@/nodir/out.jsonl" } }', '"@TMP@',
             f'plugin instance "out": option "path": cannot create or append to '
             f'{h.tmp}/nodir/out.jsonl: directory {h.tmp}/nodir does not exist'),
        ]
        for line, at, message in cases:
            h.write_config(head + line + "\n")
            col = line.index(at) + 1 if at != "hook:" else 3
            r = plexus("check", "-c", h.config)
            assert r.returncode == 78, (line, r.stdout, r.stderr)
            assert r.stderr == f"{h.config}:8:{col}: {message}\n", (line, r.stderr)
        # what is fine passes: the same plugins with a listener and a writable directory, or the
        # data directory, which the host creates before any init
        h.write_config(head.replace("http: { listen: null }", 'http: { listen: "127.0.0.1:0" }') +
                       '  hook: { plugin: webhook, config: { path: /hook } }\n'
                       '  nt: { plugin: notification, config: { host: 127.0.0.1 } }\n'
                       '  out: { plugin: file, config: { path: "@TMP@/out.jsonl" } }\n'
                       '  kept: { plugin: file, config: { path: "@TMP@/var/kept.jsonl" } }\n')
        r = plexus("check", "-c", h.config)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(h.path("out.jsonl")), "check created the file"
        assert not os.path.exists(h.path("var")), "check created the data directory"


def test_check_default_config():
    cfg = os.path.join(os.environ.get("PX_SOURCE_DIR", "."), "etc", "plexus.yaml")
    r = plexus("check", "-c", cfg, env={"PLEXUS_PLUGIN_PATH": PLUGINS})
    assert r.returncode == 0, r.stderr


def test_plugins_list_and_describe():
    r = plexus("plugins", "-p", TEST_PLUGINS)
    # the fixtures include refused files: listed, and the exit status says so
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "testsink" in r.stdout and "ABI 1.2" in r.stdout
    assert "refused" in r.stdout and "abi_wrong_major" in r.stdout
    assert "refused" in r.stderr, r.stderr
    r = plexus("plugins", "-p", PLUGINS)
    assert r.returncode == 0 and "refused" not in r.stdout, (r.stdout, r.stderr)
    r = plexus("plugins", "-p", TEST_PLUGINS, "--describe", "testsink")
    assert r.returncode == 0
    assert "file" in r.stdout and "required" in r.stdout and "secret" in r.stdout
    r = plexus("plugins", "-p", TEST_PLUGINS, "--describe", "nope")
    assert r.returncode == 1


def test_plugins_without_config_uses_etc_plexus_yaml():
    """Run from a directory holding etc/plexus.yaml (a checkout), `plexus plugins` lists that
    file's plugin path; elsewhere it says which path it searched."""
    with Host("version: 1\n") as h:
        os.makedirs(h.path("etc"))
        with open(h.path("etc", "plexus.yaml"), "w") as f:
            f.write(f"version: 1\nhost:\n  plugin_path: [{PLUGINS}]\n")
        r = subprocess.run([PLEXUS, "plugins"], cwd=h.tmp, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "webhook" in r.stdout and "file" in r.stdout, r.stdout
        os.makedirs(h.path("empty"))
        r = subprocess.run([PLEXUS, "plugins"], cwd=h.path("empty"), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode in (0, 1), (r.stdout, r.stderr)
        if "ABI" not in r.stdout:  # the built-in path holds no installed plugins here
            assert r.stdout.startswith("no plugins found in /"), r.stdout


def test_cli_help_and_version():
    for cmd in ("run", "check", "plugins", "dlq"):
        r = plexus(cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith("usage: plexus " + cmd), (cmd, r)
    r = plexus("version")
    assert r.returncode == 0 and "ABI 1.2" in r.stdout
    r = plexus("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_secret_option_masked_in_logs():
    cfg = BASE + """
plugins:
  out: { plugin: testsink, config: { file: "@TMP@/o.jsonl", secret_token: "s3cr3t-XYZ" } }
"""
    with Host(cfg) as h:
        h.start()
        h.stop()
        assert "configured with token ***" in h.log(), h.log()
        assert "s3cr3t-XYZ" not in h.log()


def test_abi_refusal_at_start_is_one_clear_line():
    cfg = BASE + """
plugins:
  out: { plugin: abi_wrong_major }
"""
    with Host(cfg) as h:
        h.start(wait=False)
        rc = h.proc.wait(20)
        h.proc = None
        assert rc != 0
        log = h.log()
        assert "abi_wrong_major.so: built for plugin ABI 2.x, this host speaks ABI 1.2" in log, log


if __name__ == "__main__":
    run_all(globals())
