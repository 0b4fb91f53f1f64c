"""A private RabbitMQ node for tests: rabbitmq-server (Debian) on 127.0.0.1 with free ports, its own
node name, data directory and epmd port, so it never meets another node on this machine.

    with Rabbit() as r:
        r.url            # amqp://guest:guest@127.0.0.1:<port>/
        r.stop_app()     # the broker goes down (listener closed, connections dropped)
        r.start_app()    # and comes back, with its durable queues and persistent messages

Every wait polls with a deadline stretched by PX_TEST_TIMEOUT_SCALE (harness.scaled); a broker
that does not boot in time is stopped before the error is raised, so none is left running."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import scaled, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Rabbit:
    def __init__(self):
        if not shutil.which("rabbitmq-server"):
            raise RuntimeError("rabbitmq-server is not installed (scripts/deps.sh test)")
        self.dir = tempfile.mkdtemp(prefix="px-rmq-")
        self.port = free_port()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.node = f"pxtest{os.getpid()}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.env = dict(os.environ)
        self.env.update({
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": os.path.join(self.dir, "feature_flags"),
        })
        self.proc = None

    def start(self, timeout=180):
        """Boots the broker and waits until it listens; on any failure stops it and raises."""
        try:
            os.makedirs(os.path.join(self.dir, "mnesia"), exist_ok=True)
            os.makedirs(os.path.join(self.dir, "log"), exist_ok=True)
            with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
                f.write("[].\n")
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=True)
            self.out = open(os.path.join(self.dir, "server.out"), "wb")
            self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=self.out,
                                         stderr=subprocess.STDOUT, cwd=self.dir)
            deadline = time.monotonic() + scaled(timeout)
            while not listening(self.port):
                if self.proc.poll() is not None or b"BOOT FAILED" in self.output():
                    raise AssertionError("rabbitmq did not start:\n" +
                                         self.output().decode(errors="replace")[-3000:])
                if time.monotonic() >= deadline:
                    raise AssertionError(f"rabbitmq did not listen within {scaled(timeout):g}s:\n"
                                         + self.output().decode(errors="replace")[-3000:])
                time.sleep(0.2)
            return self
        except BaseException:
            self.stop()
            raise

    def output(self):
        with open(os.path.join(self.dir, "server.out"), "rb") as f:
            return f.read()

    def ctl(self, *args, timeout=120):
        r = subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env,
                           capture_output=True, text=True, timeout=scaled(timeout))
        if r.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {r.stderr}{r.stdout}")
        return r.stdout

    def stop_app(self):
        self.ctl("stop_app")
        wait_for(lambda: not listening(self.port), timeout=60, interval=0.1,
                 what="the broker to close its listener after stop_app")

    def start_app(self):
        self.ctl("start_app")
        wait_for(lambda: listening(self.port), timeout=120, interval=0.1,
                 what="the broker to listen again after start_app")

    def _node_pids(self):
        """Processes of this node: the broker (beam), its epmd and the shells around them, found
        by this node's name or epmd port in their environment. `su` runs the broker in a session
        of its own, so killing the process started here does not reach them."""
        marks = (f"RABBITMQ_NODENAME={self.node}".encode(),
                 f"ERL_EPMD_PORT={self.epmd_port}".encode())
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                with open(f"/proc/{p}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if any(m in env for m in marks):
                pids.append(int(p))
        return pids

    def _signal_node(self, sig):
        for pid in self._node_pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def stop(self):
        """Stops the node and everything it started, and removes its directory. Safe to call
        after a failed or partial start, and more than once."""
        if self.proc and self.proc.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except Exception:
                pass  # not up (yet): the signals below end it
        self._signal_node(signal.SIGTERM)
        try:
            wait_for(lambda: not self._node_pids(), timeout=30, interval=0.1,
                     what="the broker's processes to exit")
        except AssertionError:
            self._signal_node(signal.SIGKILL)
        if self.proc:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None
        if getattr(self, "out", None):
            self.out.close()
            self.out = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
