"""The systemd unit etc/systemd/plexus.service: `systemd-analyze verify` accepts it without a
single warning (with the installed binary path pointed at the built one, the only file it names
that a test machine lacks), it carries the hardening the operations guide promises, and its
exposure score stays low. No running init is needed."""
import os
import re
import shutil
import subprocess
import tempfile

from harness import PLEXUS, SOURCE, run_all

UNIT = os.path.join(SOURCE, "etc", "systemd", "plexus.service")


def analyze(*args):
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def unit_for_test(text):
    d = tempfile.mkdtemp(prefix="px-unit-")
    path = os.path.join(d, "plexus.service")
    with open(path, "w") as f:
        f.write(text.replace("/usr/local/bin/plexus", os.path.abspath(PLEXUS)))
    return path


def directives(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_verify_accepts_the_unit_without_warnings():
    assert shutil.which("systemd-analyze"), "systemd-analyze missing (apt-get install systemd)"
    with open(UNIT) as f:
        text = f.read()
    r = analyze("verify", "--man=no", unit_for_test(text))
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    # the check can fail: a misspelt directive is reported
    bad = unit_for_test(text.replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    r = analyze("verify", "--man=no", bad)
    assert "protect system" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_unit_hardening_and_reload():
    with open(UNIT) as f:
        d = directives(f.read())
    assert d["Type"] == ["simple"]
    assert d["Restart"] == ["on-failure"]
    assert d["User"] == ["plexus"] and d["Group"] == ["plexus"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["ReadWritePaths"] == ["/var/lib/plexus"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["CapabilityBoundingSet"] == [""], "no capabilities at all"
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert any(re.match(r"/usr/local/bin/plexus run -c \S+", x) for x in d["ExecStart"])
    with open(os.path.join(SOURCE, "etc", "systemd", "plexus.sysusers")) as f:
        assert re.search(r"^u plexus ", f.read(), re.M), "the dedicated user is declared"


def test_exposure_score_is_low():
    with open(UNIT) as f:
        text = f.read()
    r = analyze("security", "--offline=yes", unit_for_test(text))
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 2.5, m.group(0)


if __name__ == "__main__":
    run_all(globals())
