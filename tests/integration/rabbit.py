"""A private RabbitMQ node for tests: rabbitmq-server (Debian) on 127.0.0.1 with free ports, its own
node name, data directory and epmd port, so it never meets another node on this machine.

    with Rabbit() as r:
        r.url            # amqp://guest:guest@127.0.0.1:<port>/
        r.stop_app()     # the broker goes down (listener closed, connections dropped)
        r.start_app()    # and comes back, with its durable queues and persistent messages
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


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

    def start(self, timeout=60):
        os.makedirs(os.path.join(self.dir, "mnesia"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "log"), exist_ok=True)
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=True)
        self.out = open(os.path.join(self.dir, "server.out"), "wb")
        self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if listening(self.port):
                return self
            if self.proc.poll() is not None or b"BOOT FAILED" in self.output():
                break
            time.sleep(0.2)
        raise AssertionError("rabbitmq did not start:\n" + self.output().decode()[-3000:])

    def output(self):
        with open(os.path.join(self.dir, "server.out"), "rb") as f:
            return f.read()

    def ctl(self, *args, timeout=60):
        r = subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {r.stderr}{r.stdout}")
        return r.stdout

    def stop_app(self):
        self.ctl("stop_app")
        assert not listening(self.port), "broker still listening after stop_app"

    def start_app(self):
        self.ctl("start_app")
        deadline = time.time() + 30
        while not listening(self.port):
            assert time.time() < deadline, "broker did not listen again after start_app"
            time.sleep(0.1)

    def _epmd_pids(self):
        """epmd daemons started with this node's private epmd port (found by their environment)."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/comm") as f:
                    if f.read().strip() != "epmd":
                        continue
                with open(f"/proc/{p}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"ERL_EPMD_PORT={self.epmd_port}".encode() in env:
                pids.append(int(p))
        return pids

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except Exception:
                self.proc.kill()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self._epmd_pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        self.proc = None
        if getattr(self, "out", None):
            self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
