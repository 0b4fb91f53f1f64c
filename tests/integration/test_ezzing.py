"""ezzing source against the real SQS emulator (fauxqs): the 16 seed examples end to end, delete
only after persist (kill -9 between receive and persist, and between persist and delete), poison
messages to the dead letters, an emulator outage with backoff and one log line per state change,
and the example configuration."""
import glob
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

from fauxqs import Fauxqs
from harness import PLUGINS, SOURCE, Host, plexus, read_jsonl, run_all, spool_pending, wait_for

FIXTURES = os.path.join(SOURCE, "tests", "fixtures", "ezzing")
SQS = None  # the emulator shared by the tests


def config(queue_url, endpoint, extra="", visibility="3s"):
    return f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 3s
plugins:
  ez:
    plugin: ezzing
    config:
      queue_url: "{queue_url}"
      region: us-east-1
      endpoint: "{endpoint}"
      access_key_id: test-key
      secret_access_key: test-secret
      wait_time: 5s
      visibility_timeout: {visibility}
      backoff: 100ms
      max_backoff: 1s
{extra}
  out: {{ plugin: testsink, config: {{ file: "@TMP@/out.jsonl" }} }}
pipelines:
  - name: all
    from: ez
    to:
      sink: out
      with: {{ job: "{{{{/job}}}}", data: "{{{{/data}}}}", seq: "{{{{/seq?}}}}" }}
"""


def ok_lines(h):
    return [x for x in read_jsonl(h.path("out.jsonl")) if x["outcome"] == "ok"]


def queue_empty(url):
    return SQS.counts(url) == (0, 0)


def fixtures():
    out = {}
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.json"))):
        with open(path) as f:
            out[os.path.basename(path)[:-5]] = f.read()
    return out


def test_seed_examples_arrive_once_and_queue_empties():
    seeds = fixtures()
    assert len(seeds) == 16, sorted(seeds)
    url = SQS.create_queue("ezzing-seed")
    ids = {SQS.send(url, body, {"tenant": "acme"}): job for job, body in seeds.items()}
    with Host(config(url, SQS.endpoint)) as h:
        h.start()
        wait_for(lambda: len(ok_lines(h)) >= 16, timeout=30, what="16 deliveries")
        wait_for(lambda: queue_empty(url), timeout=10, what="every message deleted")
        time.sleep(0.3)
        h.stop()
    lines = ok_lines(h)
    assert len(lines) == 16, len(lines)
    by_type = {x["type"]: x for x in lines}
    for job, body in seeds.items():
        env = json.loads(body)
        got = by_type.get("ezzing." + job)
        assert got, f"no ezzing.{job} in {sorted(by_type)}"
        assert ids.get(got["event"]) == job, (job, got["event"])  # the event id: the MessageId
        assert got["params"]["job"] == job
        assert got["params"]["data"] == env["data"], job
    # The seed reuses uuids (user_created/user_deleted...): the event ids, which sinks pass on
    # (a NotificationQueue message_id), are still one per message, and none was a duplicate.
    assert len({json.loads(b)["uuid"] for b in seeds.values()}) < 16
    assert len({x["event"] for x in lines}) == 16
    assert "ezzing.user_deleted" in by_type and "ezzing.user_created" in by_type
    assert len(ids) == 16


class FaultProxy:
    """Forwards SQS requests to the emulator; can hold DeleteMessageBatch requests, or hold
    ReceiveMessage answers that carry messages (the emulator has handed them out, the consumer
    never sees them), until released."""

    def __init__(self, target):
        self.target = target
        self.hold_deletes = False
        self.hold_receives = False
        self.release = threading.Event()
        self.held = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = self.headers.get("X-Amz-Target", "").replace("AmazonSQS.", "")
                if action == "DeleteMessageBatch" and proxy.hold_deletes:
                    proxy.held += 1
                    proxy.release.wait(60)
                    return self.reply(503, b"{}")
                req = urllib.request.Request(target + "/", data=body, method="POST", headers={
                    "Content-Type": "application/x-amz-json-1.0",
                    "X-Amz-Target": self.headers.get("X-Amz-Target", "")})
                try:
                    with urllib.request.urlopen(req, timeout=40) as r:
                        status, answer = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, answer = e.code, e.read()
                if action == "ReceiveMessage" and proxy.hold_receives and \
                        json.loads(answer or b"{}").get("Messages"):
                    proxy.held += 1
                    proxy.release.wait(60)
                    return self.reply(503, b"{}")
                self.reply(status, answer)

            def reply(self, status, data):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def envelope(job, n, **data):
    return json.dumps({"uuid": f"00000000-0000-4000-8000-{n:012d}", "displayName": job,
                       "job": job, "maxTries": 5, "maxExceptions": None, "failOnTimeout": False,
                       "backoff": None, "timeout": 60, "seq": n,
                       "data": dict({"name": f"n{n}", "email": f"u{n}@example.com"}, **data)})


def test_kill9_between_receive_persist_and_delete_delivers_once():
    url = SQS.create_queue("ezzing-kill")
    proxy = FaultProxy(SQS.endpoint)
    try:
        # 5 s: long enough that nothing comes back before the kill.
        with Host(config(url, proxy.endpoint, visibility="5s")) as h:
            # Persisted but never deleted: the deletes hang in the proxy.
            proxy.hold_deletes = True
            a_ids = SQS.send_many(url, [envelope("user_created", i) for i in range(5)])
            h.start()
            wait_for(lambda: len(ok_lines(h)) == 5, what="first five delivered")
            wait_for(lambda: proxy.held >= 1, what="a delete held")
            # Received but never persisted: the answers carrying them hang in the proxy.
            proxy.hold_receives = True
            SQS.send_many(url, [envelope("user_created", i) for i in range(5, 10)])
            wait_for(lambda: SQS.counts(url) == (0, 10), what="all ten in flight")
            wait_for(lambda: spool_pending(h.path("var", "spool.db")) == 0,
                     what="the spool to commit the sink's done marks")
            assert len(ok_lines(h)) == 5, "a held message reached the sink"
            h.kill9()
            proxy.release.set()
            # Restart straight on the emulator, with debug logs to see the dedupe at work.
            h.write_config(config(url, SQS.endpoint, visibility="5s"))
            h.start(args=("--log-level", "debug"))
            wait_for(lambda: len(ok_lines(h)) >= 10, timeout=30,
                     what="the held messages after the visibility timeout")
            wait_for(lambda: queue_empty(url), timeout=15, what="queue empty")
            time.sleep(0.5)
            h.stop()
            log = h.log()
    finally:
        proxy.close()
    seqs = sorted(x["params"]["seq"] for x in ok_lines(h))
    assert seqs == list(range(10)), seqs  # each exactly once
    dropped = [m for m in a_ids if re.search(r"duplicate dropped .*key=" + re.escape(m), log)]
    assert len(dropped) == 5, (dropped, a_ids)


def test_poison_messages_dead_lettered_and_removed():
    url = SQS.create_queue("ezzing-poison")
    big = json.loads(envelope("user_created", 1))
    big["data"]["blob"] = "x" * (300 * 1024)
    poison = {"not json": "this is {not json", "no job": json.dumps({"uuid": "u", "data": {}}),
              "too large": json.dumps(big)}
    assert len(poison["too large"]) > 300 * 1024
    ids = {SQS.send(url, body): name for name, body in poison.items()}
    SQS.send(url, envelope("user_created", 7))
    with Host(config(url, SQS.endpoint)) as h:
        h.start()
        wait_for(lambda: len(ok_lines(h)) == 1, what="the good message after the poison")
        wait_for(lambda: queue_empty(url), timeout=10, what="poison removed from the queue")
        SQS.send(url, envelope("user_created", 8))  # still consuming
        wait_for(lambda: len(ok_lines(h)) == 2, what="the consumer keeps going")
        h.stop()
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    dead = json.loads(r.stdout)
    assert len(dead) == 3, dead
    seen = {}
    for d in dead:
        shown = plexus("dlq", "show", str(d["id"]), "-c", h.config)
        assert shown.returncode == 0, shown.stderr
        x = json.loads(shown.stdout)
        meta = x.get("meta") or {}
        name = ids[meta["MessageId"]]
        seen[name] = x
        raw = x.get("payload")
        raw = raw if isinstance(raw, str) else json.dumps(raw)
        assert raw == poison[name] or json.loads(raw) == json.loads(poison[name]), name
        assert meta.get("ApproximateReceiveCount") == "1", meta
        assert "SentTimestamp" in meta, meta
    assert sorted(seen) == ["no job", "not json", "too large"], sorted(seen)
    assert "not JSON" in seen["not json"]["reason"], seen["not json"]["reason"]
    assert "no job" in seen["no job"]["reason"]
    assert "body too large" in seen["too large"]["reason"]


def test_emulator_outage_backoff_one_line_per_state_and_resume():
    """The emulator keeps its queues in memory only: after a restart the test creates the queue
    again (same name, same URL). The outage lasts 10 s rather than 30 s: with max_backoff 1s the
    consumer has retried many times by then, which is all the test needs to tell one log line
    per state change from one per attempt, and it keeps the suite short."""
    global SQS
    url = SQS.create_queue("ezzing-outage")
    with Host(config(url, SQS.endpoint)) as h:
        h.start()
        SQS.send_many(url, [envelope("user_created", i) for i in range(3)])
        wait_for(lambda: len(ok_lines(h)) == 3, what="before the outage")
        wait_for(lambda: queue_empty(url), what="deleted before the outage")
        port = SQS.port
        SQS.stop()
        wait_for(lambda: "sqs unreachable" in h.log(), what="the outage noticed")
        time.sleep(10)  # the outage itself: its length is the scenario, nothing waits on it
        assert h.log().count("sqs unreachable") == 1, h.log()[-3000:]
        SQS = Fauxqs(port).start()
        assert SQS.create_queue("ezzing-outage") == url
        SQS.send_many(url, [envelope("user_created", i) for i in range(3, 6)])
        wait_for(lambda: len(ok_lines(h)) == 6, timeout=20, what="after the outage")
        wait_for(lambda: queue_empty(url), what="deleted after the outage")
        h.stop()
    log = h.log()
    assert log.count("sqs unreachable") == 1, log
    assert log.count("sqs reachable again") == 1, log
    m = re.search(r"sqs reachable again down_ms=(\d+) failed_requests=(\d+)", log)
    # At least the outage's length; attempts every second at most (max_backoff 1s), fewer when
    # the machine is busy: a handful proves retries were summed into one line.
    assert m and int(m.group(1)) >= 9000 and int(m.group(2)) >= 4, m and m.group(0)
    assert sorted(x["params"]["seq"] for x in ok_lines(h)) == list(range(6))


def test_example_config_checks():
    for path in glob.glob(os.path.join(SOURCE, "etc", "examples", "ezzing*.yaml")):
        r = plexus("check", "-c", path, env={"PLEXUS_PLUGIN_PATH": PLUGINS})
        assert r.returncode == 0, (path, r.stderr)
        assert "ok" in r.stdout
    assert glob.glob(os.path.join(SOURCE, "etc", "examples", "ezzing*.yaml"))


LARAVEL_RULES = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 2s
plugins:
  ez:
    plugin: ezzing
    config:
      queue_url: "{url}"
      region: us-east-1
      endpoint: "{endpoint}"
      access_key_id: test-key
      secret_access_key: test-secret
      wait_time: 5s
      visibility_timeout: 30s
  slow: {{ plugin: testsink, config: {{ file: "@TMP@/slow.jsonl", stall: true }} }}
  flaky: {{ plugin: testsink, config: {{ file: "@TMP@/flaky.jsonl", fail: retry }} }}
pipelines:
  - {{ name: slow, from: ez, when: {{ type: ezzing.slow_job }}, to: {{ sink: slow }} }}
  - {{ name: flaky, from: ez, when: {{ type: ezzing.flaky_job }}, to: {{ sink: flaky }},
      retry: {{ attempts: 20, backoff: 100ms, max_backoff: 1s }} }}
"""


def laravel_job(job, seq, **fields):
    return json.dumps(dict({"uuid": f"00000000-0000-4000-8000-{seq:012d}", "displayName": job,
                            "job": job, "maxTries": 5, "maxExceptions": None,
                            "failOnTimeout": False, "backoff": None, "timeout": 60, "seq": seq,
                            "data": {}}, **fields))


def test_retry_until_fail_on_timeout_and_max_exceptions_applied():
    """Laravel's attempt rules on the host's deliveries: failOnTimeout ends a job at its first
    timeout, maxExceptions caps the attempts below maxTries, and retryUntil replaces maxTries
    (here 1) with a deadline: retries go on until it, then the job is dead."""
    url = SQS.create_queue("ezzing-laravel-rules")
    deadline_s = int(time.time()) + 6
    SQS.send_many(url, [
        laravel_job("slow_job", 1, timeout=1, failOnTimeout=True),
        laravel_job("flaky_job", 2, maxExceptions=2, backoff="0"),
        laravel_job("flaky_job", 3, maxTries=1, retryUntil=deadline_s, backoff="1"),
    ])
    with Host(LARAVEL_RULES.format(url=url, endpoint=SQS.endpoint)) as h:
        h.start()
        wait_for(lambda: len(dlq_list(h)) == 3, timeout=40, what="three dead letters")
        h.stop()
    dead = {}
    for d in dlq_list(h):
        shown = plexus("dlq", "show", str(d["id"]), "-c", h.config)
        assert shown.returncode == 0, shown.stderr
        x = json.loads(shown.stdout)
        payload = x["payload"] if isinstance(x["payload"], dict) else json.loads(x["payload"])
        dead[payload["seq"]] = d
    attempts = {}
    for name in ("slow", "flaky"):
        for line in read_jsonl(h.path(name + ".jsonl")):
            attempts[line["seq"]] = attempts.get(line["seq"], 0) + 1
    # failOnTimeout: one attempt, dead at its timeout although maxTries 5 leaves four.
    assert "failed on timeout (attempt 1)" in dead[1]["reason"], dead[1]
    assert attempts[1] == 1, attempts
    # maxExceptions 2 < maxTries 5: two attempts.
    assert "attempts exhausted (2)" in dead[2]["reason"], dead[2]
    assert attempts[2] == 2, attempts
    # retryUntil: more attempts than maxTries 1, then stopped by the deadline.
    assert "retry deadline passed" in dead[3]["reason"], dead[3]
    assert attempts[3] >= 2, attempts


def test_requests_carry_a_valid_sigv4_signature():
    """Against a peer that recomputes AWS Signature Version 4 from what it received: with the
    right secret the signature passes (the peer then answers text, not JSON: a server error),
    with a wrong one it is refused (403). Both runs poll the same way; only the secret differs."""
    peer = subprocess.Popen([sys.executable, os.path.join(SOURCE, "tests", "peers", "sigv4_peer.py"),
                             "--key", "test-key", "--secret", "test-secret", "--region",
                             "us-east-1", "--service", "sqs"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(peer.stdout.readline().strip().split("=", 1)[1])
        endpoint = f"http://127.0.0.1:{port}"
        url = f"{endpoint}/000000000000/signed"
        with Host(config(url, endpoint)) as h:
            h.start()
            wait_for(lambda: "sqs server error" in h.log(), what="the signed request answered")
            h.stop()
        assert "message=answer is not a JSON object" in h.log(), h.log()[-2000:]
        assert "status=403" not in h.log(), h.log()[-2000:]
        wrong = config(url, endpoint).replace("secret_access_key: test-secret",
                                              "secret_access_key: other-secret")
        with Host(wrong) as h:
            h.start()
            wait_for(lambda: "sqs refused the request status=403" in h.log(),
                     what="the wrongly signed request refused")
            h.stop()
    finally:
        peer.stdin.close()
        try:
            peer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()


def dlq_list(h):
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


if __name__ == "__main__":
    SQS = Fauxqs().start()
    try:
        run_all(globals())
    finally:
        SQS.stop()
