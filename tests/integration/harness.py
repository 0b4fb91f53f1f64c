"""Integration test harness: runs the real plexus binary with a YAML config in a temporary
directory, with the test plugins, and reads what the test sink recorded.

Each test module defines functions named test_*; run_all() runs them in order and ends with the
line "N passed, N failed, N skipped". A test that cannot run here (e.g. no ::1 on this machine)
raises Skip("why"): it is reported as skipped, never as passed. A missing bundled plugin or test
peer is a failure, not a skip (scripts/deps.sh installs every peer).

Waits poll for a condition with a deadline (wait_for); every deadline is multiplied by
PX_TEST_TIMEOUT_SCALE (default 1) for machines slower than usual, e.g. under stress-ng."""
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

BUILD = os.environ.get("PX_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SOURCE = os.environ.get("PX_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PLEXUS = os.path.join(BUILD, "host", "plexus")
TEST_PLUGINS = os.path.join(BUILD, "tests", "plugins")
PLUGINS = os.path.join(BUILD, "plugins")
SANITIZED = os.environ.get("PX_BUILD_OPTIONS", "none") not in ("", "none") or \
    os.path.basename(os.path.normpath(BUILD)).endswith("-san")


TIMEOUT_SCALE = float(os.environ.get("PX_TEST_TIMEOUT_SCALE") or 1)


class Skip(Exception):
    """Raised by a test that cannot run on this machine; run_all counts it as skipped."""


def scaled(seconds):
    """A deadline in seconds, stretched by PX_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def wait_for(pred, timeout=20.0, interval=0.02, what="condition"):
    """Polls pred until it returns a true value (returned) or the deadline passes (fails)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def require_plugin(name):
    """Fails unless the bundled plugin name was built (every bundled plugin always is)."""
    path = os.path.join(PLUGINS, name + ".so")
    assert os.path.exists(path), f"bundled plugin {name} was not built: {path} is missing"
    return path


def read_jsonl(path):
    """The JSON lines of a file written by a sink. A last line without its line break is being
    written and is left out; any other line that is not JSON fails: the sinks never leave a
    partial line before a whole one (they cut it when they open the file)."""
    bad = None
    for _ in range(3):
        if not os.path.exists(path):
            return []
        out, seen = [], None
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    seen = (n, line)
                    break
        if seen is None:
            return out
        # A sink that cuts a partial line at open may do so while this read is under way: the
        # read then continues from an offset inside a line written since. Such a tear is gone
        # on the next read; a line that is really torn stays where it is.
        if seen == bad:
            break
        bad = seen
    raise AssertionError(f"{path}:{bad[0]}: not a JSON line: {bad[1][:300]!r}")


def spool_pending(db_path):
    """Deliveries the spool at db_path (e.g. h.path("var", "spool.db")) has not marked done, as
    committed, read beside the running host; None while the file cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True,
                                                timeout=5)) as db:
            return db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    except sqlite3.Error:
        return None


def read_acks(path):
    """Returns {seq: status} from a testsource ack_file."""
    acks = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    acks[int(parts[0])] = int(parts[2])
    return acks


class Host:
    """One plexus process on a config written into its own temporary directory."""

    def __init__(self, config_text, name="host", tmp=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="px-it-")
        self.config = os.path.join(self.tmp, name + ".yaml")
        self.log_path = os.path.join(self.tmp, name + ".log")
        self.write_config(config_text)
        self.proc = None

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def write_config(self, text):
        text = text.replace("@TMP@", self.tmp).replace("@TEST_PLUGINS@", TEST_PLUGINS)
        text = text.replace("@PLUGINS@", PLUGINS)
        with open(self.config + ".new", "w") as f:
            f.write(text)
        os.replace(self.config + ".new", self.config)

    def start(self, wait=True, env=None, args=(), prefix=()):
        """prefix: a command that runs plexus (e.g. ["ip", "netns", "exec", NAME])."""
        e = dict(os.environ)
        e.update(env or {})
        self.logf = open(self.log_path, "ab")
        before = self.logf.tell()  # a restart appends: wait for this run's line
        self.proc = subprocess.Popen([*prefix, PLEXUS, "run", "-c", self.config, "--log-format",
                                      "json", *args], stdout=self.logf, stderr=self.logf, env=e)
        if wait:
            try:
                wait_for(lambda: "\"started" in self.log()[before:] or self.proc.poll() is not None,
                         timeout=60, what="host start")
                if self.proc.poll() is not None:
                    raise AssertionError(f"host exited with {self.proc.returncode}:\n{self.log()}")
            except BaseException:
                self._kill()
                raise
        return self

    def http_port(self):
        """The port of host.http.listen (useful with port 0), from the start-up log."""
        import re
        m = re.search(r"http listening address=\S+ port=(\d+)", self.log())
        assert m, "no http listener in the log"
        return int(m.group(1))

    def admin_port(self):
        """The port of the admin listener serving now (the latest one after a reload)."""
        import re
        m = re.findall(r"admin listening address=\S+ port=(\d+)", self.log())
        assert m, "no admin listener in the log"
        return int(m[-1])

    def admin_token(self):
        """The admin API's bearer token when the host took it from its token file
        (data_dir/admin.token, named in the start-up log); None when the config sets
        host.admin.token (the test knows it) or host.admin.auth: none."""
        import re
        m = re.findall(r"admin listening address=\S+ port=\d+ auth=(\w+)(?: source=(\w+))?"
                       r"(?: file=([^\s\"]+))?", self.log())
        assert m, "no admin listener in the log"
        auth, source, path = m[-1]
        if auth != "token" or source != "file":
            return None
        with open(path) as f:
            return f.read().strip()

    def admin_request(self, method, path, token=None, body=None, headers=None):
        """A urllib request to the admin API with the bearer token (token, else admin_token())."""
        import urllib.request
        token = token or self.admin_token()
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        return urllib.request.Request(f"http://127.0.0.1:{self.admin_port()}{path}",
                                      data=body, headers=h, method=method)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if not self.proc:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("host did not stop in time:\n" + self.log()[-3000:])
        self.logf.close()
        self.proc = None
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        """A sanitizer report anywhere in the log fails the test, whatever it asserted."""
        log = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                at = log.index(marker)
                raise AssertionError("sanitizer report:\n" + log[max(0, at - 200):at + 3000])

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def __enter__(self):
        return self

    def _kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.logf.close()
            self.proc = None

    def __exit__(self, *exc):
        self._kill()


def plexus(*args, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([PLEXUS, *args], capture_output=True, text=True, env=e,
                          timeout=scaled(timeout))


def run_all(module_globals):
    tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_") and callable(f)]
    only = sys.argv[1:]
    passed = failed = skipped = 0
    for name, fn in tests:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Skip as e:
            skipped += 1
            print(f"skip {name}: {e}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    sys.exit(1 if failed else 0)
