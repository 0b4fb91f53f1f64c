"""Plugin file trust, tried as an attacker would: a plugin file or folder others may write is
refused before anything of it runs (run, check, plugins, reload), with one line naming it and the
fix; host.plugin_trust: permissive loads it with a warning; a symlink planted where the host writes
its private copy is never followed; a relative plugin_path is reported as the absolute folder it
became, and check warns when it is not relative to the config file's own folder."""
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.request

from harness import Host, PLEXUS, PLUGINS, plexus, read_jsonl, run_all, wait_for

CONFIG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: @PLUGDIR@
  drain_timeout: 2s
  http: { listen: "127.0.0.1:0" }
  admin: { listen: "@ADMIN@" }
@EXTRA@plugins:
  hook: { plugin: webhook, config: { path: @HOOKPATH@ } }
  out: { plugin: file, config: { path: "@TMP@/out.jsonl", fsync: never } }
pipelines:
  - { name: p, from: hook, to: { sink: out } }
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin_dir(tmp):
    """A folder of our own with copies of the two bundled plugins these tests use."""
    d = os.path.join(tmp, "plugins")
    os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    for name in ("webhook", "file"):
        dst = os.path.join(d, name + ".so")
        shutil.copyfile(os.path.join(PLUGINS, name + ".so"), dst)
        os.chmod(dst, 0o755)
    return d


def config(plugdir="@TMP@/plugins", extra="", hookpath="/hook", admin=""):
    return (CONFIG.replace("@PLUGDIR@", plugdir).replace("@EXTRA@", extra)
            .replace("@HOOKPATH@", hookpath).replace("@ADMIN@", admin))


def post(port, body, path="/hook"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def delivered(h):
    return read_jsonl(h.path("out.jsonl"))


def refusal_lines(text, path):
    """The whole lines of text that refuse path (a line still being written is not one)."""
    whole = text[:text.rfind("\n") + 1]
    return [line for line in whole.splitlines() if path in line and "refused" in line]


def test_world_writable_plugin_is_refused_everywhere_with_one_line():
    h = Host(config())
    d = plugin_dir(h.tmp)
    so = os.path.join(d, "webhook.so")
    os.chmod(so, 0o757)
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78, (r.returncode, r.stdout, r.stderr)
    lines = refusal_lines(r.stderr, so)
    assert len(lines) == 1, r.stderr
    assert "writable by everyone (mode 0757)" in lines[0] and f"chmod go-w {so}" in lines[0], \
        lines[0]
    r = plexus("plugins", "-p", d)
    assert r.returncode == 1 and "1 plugin file refused" in r.stderr, (r.returncode, r.stderr)
    assert len(refusal_lines(r.stdout, so)) == 1 and "writable by everyone" in r.stdout, r.stdout
    assert "webhook" not in r.stdout.replace(so, ""), "its descriptor was never read"
    with h:
        h.start(wait=False)
        assert h.proc.wait(60) == 1, h.log()
        assert "chmod go-w " + so in h.log()
        pid = h.proc.pid
    assert not os.path.exists(h.path("var", "plugins", "hook.1.%d.so" % pid))


def test_permissive_trust_loads_it_with_a_warning():
    h = Host(config(extra="  plugin_trust: permissive\n"))
    d = plugin_dir(h.tmp)
    so = os.path.join(d, "webhook.so")
    os.chmod(so, 0o777)
    r = plexus("check", "-c", h.config)
    assert r.returncode == 0, r.stderr
    assert "writable by everyone" in r.stderr and so in r.stderr, r.stderr
    with h:
        h.start()
        assert post(h.http_port(), {"n": 1}) == 202
        wait_for(lambda: len(delivered(h)) == 1, what="the event delivered")
        log = h.log()
        assert "plugin_trust is permissive" in log, log
        assert [line for line in log.splitlines() if "\"warn\"" in line and so in line and
                "writable by everyone" in line], log
        assert h.stop() == 0


def test_folder_made_writable_between_reloads_is_refused_and_keeps_serving():
    h = Host(config())
    d = plugin_dir(h.tmp)
    with h:
        h.start()
        port = h.http_port()
        assert post(port, {"n": 1}) == 202
        wait_for(lambda: len(delivered(h)) == 1, what="first event delivered")
        os.chmod(d, 0o777)
        try:
            h.write_config(config(hookpath="/hook2"))
            h.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: refusal_lines(h.log(), d), what="the reload refused")
            lines = refusal_lines(h.log(), d)
            assert lines and "plugin folder" in lines[0] and "chmod go-w" in lines[0], h.log()
            # The running generation keeps serving on its old path.
            assert post(port, {"n": 2}) == 202
            assert post(port, {"n": 3}, path="/hook2") == 404
            wait_for(lambda: len(delivered(h)) == 2, what="second event delivered")
        finally:
            os.chmod(d, 0o755)
        # Fixed: the next reload goes through.
        h.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration applied" in h.log(), what="the reload applied")
        assert post(port, {"n": 4}, path="/hook2") == 202
        wait_for(lambda: len(delivered(h)) == 3, what="third event delivered")
        assert h.stop() == 0
    assert [e["payload"]["n"] for e in delivered(h)] == [1, 2, 4]


def test_symlink_planted_at_the_private_copy_path_is_not_followed():
    h = Host(config())
    plugin_dir(h.tmp)
    victim = h.path("victim.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    with h:
        h.start()
        port = h.http_port()
        copies = h.path("var", "plugins")
        assert os.stat(copies).st_mode & 0o777 == 0o700
        # The copy the next generation of `hook` will be written to.
        planted = os.path.join(copies, "hook.2.%d.so" % h.proc.pid)
        os.symlink(victim, planted)
        h.write_config(config(hookpath="/hook2"))
        h.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration applied" in h.log() or "failed" in h.log(),
                 what="the reload")
        assert "configuration applied changed=1" in h.log(), h.log()
        with open(victim) as f:
            assert f.read() == "precious\n"
        assert not os.path.islink(planted)
        assert post(port, {"n": 1}, path="/hook2") == 202
        wait_for(lambda: len(delivered(h)) == 1, what="event through the new generation")
        assert h.stop() == 0


def test_relative_plugin_path_is_absolute_in_the_log_and_status_and_check_warns():
    port = free_port()
    h = Host(config(plugdir="plugins", admin=f"127.0.0.1:{port}"))
    d = plugin_dir(h.tmp)
    conf_dir = h.path("conf")
    os.makedirs(conf_dir)
    cfg = os.path.join(conf_dir, "plexus.yaml")
    shutil.move(h.config, cfg)
    h.config = cfg
    here = os.getcwd()
    os.chdir(h.tmp)  # the relative folder resolves against the working directory
    try:
        r = plexus("check", "-c", "conf/plexus.yaml")
        assert r.returncode == 0, r.stderr
        warn = [line for line in r.stderr.splitlines() if "warning" in line]
        assert len(warn) == 1 and warn[0].startswith("conf/plexus.yaml:4:16: warning:"), r.stderr
        assert "\"plugins\" is relative" in warn[0] and d in warn[0], warn[0]
        with h:
            h.start()
            assert f"plugin path folder={d} given=plugins" in h.log(), h.log()
            r = plexus("status", "-c", cfg)
            assert r.returncode == 0, r.stderr
            assert f"plugins   {d}\n" in r.stdout, r.stdout
            r = plexus("status", "-c", cfg, "--json")
            assert json.loads(r.stdout)["plugin_path"] == [d], r.stdout
            assert h.stop() == 0
        # From the config's own folder the same words mean what they say: no warning.
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("plugin_path: plugins", "plugin_path: ../plugins"))
        os.chdir(conf_dir)
        r = plexus("check", "-c", "plexus.yaml")
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    finally:
        os.chdir(here)


def test_files_others_own_or_their_group_may_write_are_refused():
    if os.geteuid() != 0:
        print("     (not root: cannot give a file away; skipped)")
        return
    h = Host(config())
    d = plugin_dir(h.tmp)
    so = os.path.join(d, "webhook.so")
    os.chown(so, 65534, 65534)
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78 and "owned by uid 65534" in r.stderr and "chown 0 " + so in \
        r.stderr, r.stderr
    # Root's file, writable by a group that is not root's own private group.
    os.chown(so, 0, 65534)
    os.chmod(so, 0o775)
    r = plexus("check", "-c", h.config)
    assert r.returncode == 78 and "writable by its group (mode 0775)" in r.stderr, r.stderr
    os.chown(so, 0, 0)
    r = plexus("check", "-c", h.config)
    assert r.returncode == 0, r.stderr


if __name__ == "__main__":
    run_all(globals())
