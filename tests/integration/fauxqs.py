"""The fauxqs SQS emulator (pinned in tests/peers) as a test peer on 127.0.0.1, and a minimal
SQS client over the JSON protocol. fauxqs accepts any credentials and does not check
signatures, so the client sends none; the host under test signs its own requests (SigV4)."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from harness import scaled

SOURCE = os.environ.get("PX_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PEERS = os.path.abspath(os.path.join(SOURCE, "tests", "peers"))


class SqsError(Exception):
    def __init__(self, status, body):
        super().__init__(f"sqs error {status}: {body}")
        self.status = status
        self.body = body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed():
    """Installs the pinned peers (npm ci, from the committed lock file) when missing."""
    cli = os.path.join(PEERS, "node_modules", "fauxqs", "package.json")
    if not os.path.exists(cli):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS,
                       check=True)


class Fauxqs:
    """One emulator process in its own process group; stop() kills the whole group."""

    def __init__(self, port=None, logger=True):
        self.port = port or free_port()
        self.proc = None
        self.logger = logger
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="px-fauxqs-"), "fauxqs.log")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=90):
        """Starts the emulator and waits until it answers; on any failure stops it and raises."""
        ensure_installed()
        env = dict(os.environ, FAUXQS_PORT=str(self.port))
        if not self.logger:
            env["FAUXQS_LOGGER"] = "false"
        self.logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["node", os.path.join(PEERS, "node_modules", ".bin", "fauxqs")], cwd=PEERS,
                env=env, stdout=self.logf, stderr=self.logf, start_new_session=True)
            deadline = time.monotonic() + scaled(timeout)
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"fauxqs exited {self.proc.returncode}: "
                                         f"{self.log()[-2000:]}")
                if (self.logger and "Server listening" in self.log()) or \
                        (not self.logger and self._answers()):
                    return self
                if time.monotonic() >= deadline:
                    raise AssertionError(f"fauxqs did not start within {scaled(timeout):g}s: "
                                         + self.log()[-2000:])
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _answers(self):
        try:
            urllib.request.urlopen(self.endpoint + "/health", timeout=1).read()
            return True
        except (OSError, urllib.error.URLError):
            return False

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        """Stops the whole process group; safe after a failed start and more than once."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(scaled(30))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    # --- SQS JSON protocol ---------------------------------------------------------------------

    def call(self, action, params, timeout=30):
        req = urllib.request.Request(
            self.endpoint + "/", data=json.dumps(params).encode(), method="POST",
            headers={"Content-Type": "application/x-amz-json-1.0",
                     "X-Amz-Target": "AmazonSQS." + action})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read()
        except urllib.error.HTTPError as e:
            raise SqsError(e.code, e.read().decode(errors="replace"))
        return json.loads(text) if text else {}

    def create_queue(self, name, **attributes):
        attrs = {k: str(v) for k, v in attributes.items()}
        return self.call("CreateQueue", {"QueueName": name, "Attributes": attrs})["QueueUrl"]

    def send(self, url, body, attributes=None):
        p = {"QueueUrl": url, "MessageBody": body}
        if attributes:
            p["MessageAttributes"] = {k: {"DataType": "String", "StringValue": v}
                                      for k, v in attributes.items()}
        return self.call("SendMessage", p)["MessageId"]

    def send_many(self, url, bodies):
        """SendMessageBatch by tens; returns the MessageIds in order."""
        ids = []
        for at in range(0, len(bodies), 10):
            chunk = bodies[at:at + 10]
            r = self.call("SendMessageBatch", {"QueueUrl": url, "Entries": [
                {"Id": f"m{i}", "MessageBody": b} for i, b in enumerate(chunk)]})
            if r.get("Failed"):
                raise AssertionError(f"send failed: {r['Failed']}")
            by_id = {x["Id"]: x["MessageId"] for x in r["Successful"]}
            ids += [by_id[f"m{i}"] for i in range(len(chunk))]
        return ids

    def counts(self, url):
        """(visible, in flight) messages of the queue."""
        a = self.call("GetQueueAttributes", {
            "QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages",
                                                "ApproximateNumberOfMessagesNotVisible"]})
        a = a["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])
