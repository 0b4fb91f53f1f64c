"""notification plugin end to end: NotificationQueue messages published to a real RabbitMQ node with
publisher confirms and read back; the broker stopped and restarted mid-run; invalid messages dead
lettered; the Notification service's EventBridge events received over HTTP and through SQS
(fauxqs); the example configuration checked."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from harness import BUILD, PLUGINS, SOURCE, Host, plexus, read_acks, read_jsonl, run_all, wait_for
from rabbit import Rabbit, free_port

AMQP_TOOL = os.path.abspath(os.path.join(BUILD, "tests", "amqp_tool"))
FIXTURES = os.path.abspath(os.path.join(SOURCE, "tests", "fixtures", "notification"))
PEERS = os.path.abspath(os.path.join(SOURCE, "tests", "peers"))
SEED = {  # fixture file -> (event type, EventBridge id)
    "action-create.json": ("notification.action.create", "d02b9c9f-8ec1-4465-22db-df2608ac4f87"),
    "event-create.json": ("notification.event.create", "24db0910-b6b4-7f06-7188-97ae94fe4b32"),
    "action-delete.json": ("notification.action.delete", "4e5090b2-c63b-9066-2a4a-a03a2ada932a"),
    "event-delete.json": ("notification.event.delete", "fd3ca8ac-7a78-732d-e42b-e99428f0a0eb"),
    "notifications-send.json": ("notification.notifications.send",
                                "91357c58-0b8c-57ec-0f79-038258af943a"),
    "action-update.json": ("notification.action.update", "69f8c9bf-5741-50a6-c65b-4b9ce3ceb6fb"),
    "event-update.json": ("notification.event.update", "9448e038-9c1a-7e6a-2db6-33a4f44d2fa6"),
}
API_KEY = "eb-key-5f1c2d9e"

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 5s
  admin: { listen: "" }
"""

rabbit = None


def broker():
    global rabbit
    if rabbit is None:
        rabbit = Rabbit().start()
    return rabbit


def amqp(*args):
    r = subprocess.run([AMQP_TOOL, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"amqp_tool {args}: {r.stderr}"
    return r.stdout


def queue_count(queue):
    return int(amqp("count", broker().url, queue).strip())


def consume(queue, n, idle_ms=1500):
    return [json.loads(line) for line in amqp("consume", broker().url, queue, n,
                                              idle_ms).splitlines()]


def sink_config(queue, extra=""):
    return (f'{{ url: "{broker().url}", queue: {queue}, reconnect_min: 100ms, '
            f'reconnect_max: 500ms, confirm_timeout: 5s{extra} }}')


INVITE = """
    to:
      sink: nq
      action: send
      with:
        name: USER_INVITEUSER
        to: "user{{/seq}}@example.com"
        to_name: "{{/first}}"
        macros: { FNAME: "{{/first}}", SEQ: "{{/seq}}" }
"""


def expected_body(seq, first="Ana"):
    return {"notification": [{"name": "USER_INVITEUSER", "recipients": [{
        "tos": [{"email": f"user{seq}@example.com", "name": first}],
        "macros": {"FNAME": first, "SEQ": str(seq)}}]}]}


def test_example_config_checks():
    r = plexus("check", "-c", os.path.join(SOURCE, "etc", "examples", "notification.yaml"),
               env={"PLEXUS_PLUGIN_PATH": PLUGINS})
    assert r.returncode == 0, r.stdout + r.stderr


def test_publish_1000_confirmed_and_read_back():
    q = "nq_thousand"
    cfg = BASE + f"""
plugins:
  src: {{ plugin: testsource, config: {{ count: 1000, payload: {{ first: Ana }},
          ack_file: "@TMP@/acks" }} }}
  nq: {{ plugin: notification, max_inflight: 128, config: {sink_config(q)} }}
pipelines:
  - name: invite
    from: src""" + INVITE
    with Host(cfg) as h:
        h.start()
        wait_for(lambda: queue_count(q) >= 1000, timeout=60, what="1000 messages in the queue")
        # A first attempt may run before its event's commit, so the broker can hold a message
        # before the source is told its event is persisted.
        wait_for(lambda: len(read_acks(h.path("acks"))) >= 1000, timeout=60, what="1000 acks")
        acks = read_acks(h.path("acks"))
        h.stop()
    ids = {}
    with open(h.path("acks")) as f:
        for line in f:
            seq, eid, _ = line.split()
            ids[int(seq)] = eid
    assert len(acks) == 1000
    msgs = consume(q, 1000)
    assert len(msgs) == 1000, len(msgs)
    seen = set()
    for m in msgs:
        body = json.loads(m["body"])
        seq = int(body["notification"][0]["recipients"][0]["macros"]["SEQ"])
        assert body == expected_body(seq), body
        assert m["delivery_mode"] == 2, "not persistent"
        assert m["content_type"] == "application/json"
        assert m["message_id"] == ids[seq], (m["message_id"], ids[seq])
        seen.add(seq)
    assert seen == set(range(1000))
    assert queue_count(q) == 0, "more messages than deliveries"
    assert f"{q}\ttrue" in broker().ctl("list_queues", "name", "durable"), "queue not durable"
    assert "broker connected" in h.log()


def test_broker_down_at_start_then_back():
    q = "nq_down"
    cfg = BASE + f"""
plugins:
  src: {{ plugin: testsource, config: {{ count: 50, payload: {{ first: Bo }} }} }}
  nq: {{ plugin: notification, config: {sink_config(q)} }}
pipelines:
  - name: invite
    from: src
    retry: {{ attempts: 1000, backoff: 100ms, max_backoff: 300ms, jitter: 0 }}""" + INVITE
    r = broker()
    r.stop_app()
    down = True
    try:
        with Host(cfg) as h:
            h.start()
            wait_for(lambda: h.log().count("retry id=") >= 10, timeout=30,
                     what="deliveries retried while the broker is down")
            assert "broker connect failed" in h.log()
            r.start_app()
            down = False
            wait_for(lambda: queue_count(q) >= 50, timeout=30, what="all 50 after recovery")
            h.stop()
    finally:
        if down:
            r.start_app()
    msgs = consume(q, 100, 1000)
    seqs = sorted(json.loads(m["body"])["notification"][0]["recipients"][0]["macros"]["SEQ"]
                  for m in msgs)
    assert seqs == sorted(str(i) for i in range(50)), seqs


def seq_of(msg):
    return int(json.loads(msg["body"])["notification"][0]["recipients"][0]["macros"]["SEQ"])


def test_broker_stopped_mid_run_nothing_lost():
    """The broker stops while events keep coming: the test feeds events until stop_app has
    returned and the host has seen the broker go, then more while it is down, and restarts it.
    Every event ends in the queue; only those in flight at the drop may be there twice."""
    q = "nq_midrun"
    inflight = 64
    cfg = BASE + f"""
plugins:
  src: {{ plugin: testsource, config: {{ input_file: "@TMP@/in.jsonl", payload: {{ first: Cy }} }} }}
  nq: {{ plugin: notification, max_inflight: {inflight}, config: {sink_config(q)} }}
pipelines:
  - name: invite
    from: src
    retry: {{ attempts: 1000, backoff: 100ms, max_backoff: 500ms, jitter: 0.1 }}""" + INVITE
    r = broker()
    fed = 0

    def feed(count):
        nonlocal fed
        with open(h.path("in.jsonl"), "a") as f:
            f.write("{}\n" * count)
        fed += count

    with Host(cfg) as h:
        open(h.path("in.jsonl"), "w").close()
        h.start()
        feed(300)
        wait_for(lambda: queue_count(q) >= 100, timeout=60, what="first messages")
        stopped_at = len(h.log())
        stopping = threading.Thread(target=r.stop_app)
        stopping.start()
        # Events keep arriving while the broker goes down, whatever the machine's speed.
        down_seen = False
        while stopping.is_alive() or not down_seen:
            assert fed < 200000, "the broker never went down"
            feed(20)
            after = h.log()[stopped_at:]
            down_seen = "connection lost" in after or "broker connect failed" in after
            time.sleep(0.02)  # pacing the feed, not waiting for anything
        stopping.join()
        feed(200)  # and some while it is down: they are retried
        wait_for(lambda: "retry id=" in h.log()[stopped_at:], timeout=60,
                 what="deliveries retried while the broker is down")
        r.start_app()
        seqs = []

        def all_in_queue():
            seqs.extend(seq_of(m) for m in consume(q, fed + 1000, 500))
            return set(seqs) >= set(range(fed))
        wait_for(all_in_queue, timeout=180, interval=0.2, what=f"all {fed} after the restart")
        h.stop()
    seqs.extend(seq_of(m) for m in consume(q, fed + 1000, 500))
    assert set(seqs) == set(range(fed)), f"lost: {sorted(set(range(fed)) - set(seqs))[:20]}"
    dupes = len(seqs) - len(set(seqs))
    # At-least-once: only publishes in flight when the connection dropped (at most max_inflight)
    # can be in the queue twice: stored by the broker, but their confirm never arrived.
    assert dupes <= inflight, f"{dupes} duplicates"
    print(f"     mid-run stop: {fed} delivered, {dupes} duplicates")


def test_reload_while_publishing():
    q = "nq_reload"
    n = 3000
    cfg = BASE + f"""
plugins:
  src: {{ plugin: testsource, config: {{ count: {n}, batch: 1, payload: {{ first: Di }} }} }}
  nq: {{ plugin: notification, max_inflight: 64, config: {sink_config(q)} }}
pipelines:
  - name: invite
    from: src""" + INVITE
    with Host(cfg) as h:
        h.start()
        for i, at in enumerate((300, 1200)):
            wait_for(lambda: queue_count(q) >= at, timeout=30, what=f"{at} messages")
            h.write_config(cfg.replace("confirm_timeout: 5s", f"confirm_timeout: {6 + i}s"))
            h.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: h.log().count("drained, unloading") >= i + 1, timeout=30,
                     what=f"generation {i + 1} drained")
        wait_for(lambda: queue_count(q) >= n, timeout=60, what=f"all {n}")
        time.sleep(0.3)
        h.stop()
    assert "generation 3 serving" in h.log(), h.log()[-2000:]
    assert "drain timed out" not in h.log()
    seqs = [int(json.loads(m["body"])["notification"][0]["recipients"][0]["macros"]["SEQ"])
            for m in consume(q, n + 100, 1000)]
    assert sorted(seqs) == list(range(n)), "lost or duplicated across reloads"


def dead_letters(h):
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_invalid_messages_dead_lettered():
    q = "nq_invalid"
    lines = [
        {"email": "ok@example.com", "first": "Ok"},
        {"email": "not-an-email", "first": "Bad"},
        {"first": "Nobody"},
        {"email": "x@example.com", "phone": "call me maybe", "first": "Ph"},
    ]
    cfg = BASE + f"""
plugins:
  src: {{ plugin: testsource, config: {{ input_file: "@TMP@/in.jsonl" }} }}
  nq: {{ plugin: notification, config: {sink_config(q)} }}
pipelines:
  - name: invite
    from: src
    to:
      - sink: nq
        with:
          name: USER_INVITEUSER
          to: "{{{{/email?}}}}"
          phone: "{{{{/phone?}}}}"
          macros: {{ FNAME: "{{{{/first}}}}" }}
      - sink: nq
        action: fax
        with: {{ name: X, pushId: p }}
"""
    with Host(cfg) as h:
        with open(h.path("in.jsonl"), "w") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))
        h.start()
        wait_for(lambda: len(dead_letters(h)) >= 7, timeout=30, what="dead letters")
        wait_for(lambda: queue_count(q) >= 1, timeout=30, what="the valid message")
        h.stop()
    reasons = sorted(d["reason"] for d in dead_letters(h))
    assert len(reasons) == 7, reasons
    assert sum("unknown action \"fax\"" in x for x in reasons) == 4, reasons
    assert any("with.to: \"not-an-email\" is not an e-mail address" in x for x in reasons), reasons
    assert any("needs at least one of tos, phone or pushId" in x for x in reasons), reasons
    assert any("\"call me maybe\" is not a phone number" in x for x in reasons), reasons
    assert all(d["attempts"] == 1 for d in dead_letters(h)), "rejections must not be retried"
    msgs = consume(q, 10, 1000)
    assert len(msgs) == 1
    assert json.loads(msgs[0]["body"])["notification"][0]["recipients"][0]["tos"] == \
        [{"email": "ok@example.com"}]


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def post(port, body, key=API_KEY, method="POST", path="/eventbridge/notification"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    req.add_header("Content-Type", "application/json; charset=utf-8")
    req.add_header("User-Agent", "Amazon/EventBridge/ApiDestinations")
    if key is not None:
        req.add_header("x-api-key", key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_eventbridge_http_api_destination():
    cfg = BASE.replace("  admin:", '  http: { listen: "127.0.0.1:0" }\n  admin:') + f"""
plugins:
  eb:
    plugin: notification
    config: {{ http_path: /eventbridge/notification, api_key: "{API_KEY}" }}
  out: {{ plugin: testsink, config: {{ file: "@TMP@/out.jsonl" }} }}
pipelines:
  - {{ name: events, from: eb, when: {{ type: "notification.*" }}, to: {{ sink: out }} }}
"""
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        for name in SEED:
            st, body = post(port, fixture(name))
            assert st == 200, (name, st, body)
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) >= 7, what="seven events")
        assert post(port, fixture("action-create.json"), key="wrong")[0] == 401
        assert post(port, fixture("action-create.json"), key=None)[0] == 401
        assert post(port, fixture("action-create.json"), key=API_KEY[:-1])[0] == 401
        st, body = post(port, b'{"hello": "world"}')
        assert st == 400 and b"not an EventBridge event" in body, (st, body)
        st, body = post(port, b"not json at all")
        assert st == 400 and b"not JSON" in body, (st, body)
        assert post(port, None, method="GET")[0] == 405
        # EventBridge delivers at least once: a repeated id is answered 200 and dropped.
        assert post(port, fixture("notifications-send.json"))[0] == 200
        assert post(port, fixture("action-create.json"))[0] == 200
        time.sleep(0.5)
        h.stop()
    got = read_jsonl(h.path("out.jsonl"))
    assert len(got) == 7, [g["event"] for g in got]
    assert sorted((g["type"], g["event"]) for g in got) == sorted(SEED.values())
    assert API_KEY not in h.log(), "the API key was logged"


class FauxQS:
    def __init__(self):
        self.port = free_port()
        self.log = open(os.path.join(BUILD, f"fauxqs-{self.port}.log"), "wb")
        env = dict(os.environ, FAUXQS_PORT=str(self.port))
        self.proc = subprocess.Popen(["node", os.path.join(PEERS, "node_modules", ".bin",
                                                           "fauxqs")],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=PEERS)
        try:
            wait_for(lambda: self._up(), timeout=90, what="fauxqs")
        except BaseException:
            self.stop()
            raise

    def _up(self):
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def call(self, action, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/",
                                     data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/x-amz-json-1.0")
        req.add_header("X-Amz-Target", f"AmazonSQS.{action}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def queue_state(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_fauxqs/queues/{name}",
                                    timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)


def test_eventbridge_through_sqs():
    if not shutil.which("node") or not os.path.exists(os.path.join(PEERS, "node_modules")):
        raise AssertionError("fauxqs missing: run scripts/deps.sh test")
    fq = FauxQS()
    try:
        url = fq.call("CreateQueue", {"QueueName": "nq-events"})["QueueUrl"]
        for name in SEED:
            fq.call("SendMessage", {"QueueUrl": url, "MessageBody": fixture(name).decode()})
        fq.call("SendMessage", {"QueueUrl": url, "MessageBody": "{\"detail-type\": \"x\"}"})
        fq.call("SendMessage", {"QueueUrl": url, "MessageBody": fixture("event-update.json")
                                .decode()})
        cfg = BASE + f"""
plugins:
  eb:
    plugin: notification
    config:
      sqs_queue_url: "{url}"
      sqs_endpoint: "http://127.0.0.1:{fq.port}"
      aws_access_key_id: test-key-id
      aws_secret_access_key: test-secret
      sqs_wait: 1s
  out: {{ plugin: testsink, config: {{ file: "@TMP@/out.jsonl" }} }}
pipelines:
  - {{ name: events, from: eb, to: {{ sink: out }} }}
"""
        with Host(cfg) as h:
            h.start()
            wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) >= 7, timeout=30,
                     what="seven events")
            wait_for(lambda: not fq.queue_state("nq-events")["messages"]["ready"] and
                     not fq.queue_state("nq-events")["messages"]["inflight"], timeout=30,
                     what="queue emptied")
            time.sleep(0.3)
            h.stop()
        got = read_jsonl(h.path("out.jsonl"))
        assert sorted((g["type"], g["event"]) for g in got) == sorted(SEED.values()), got
        dead = dead_letters(h)
        assert len(dead) == 1, dead
        assert "not an EventBridge event" in dead[0]["reason"], dead[0]
    finally:
        fq.stop()


def test_eventbridge_id_is_dedupe_key_subject_and_meta():
    """Each of the seed's events, posted to the plugin in the test kit's host: the EventBridge id
    is the event's id, dedupe key and subject, and the metadata `eventbridge.id`."""
    requests = [{"method": "POST", "path": "/eb", "body": json.loads(fixture(name)),
                 "expect_status": 200} for name in SEED]
    scenario = {"config": {"http_path": "/eb"}, "requests": requests,
                "expect_emits": len(SEED)}
    path = os.path.join(BUILD, f"eb-scenario-{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(scenario, f)
    try:
        r = plexus("plugin", "test", os.path.join(PLUGINS, "notification.so"), "--scenario", path,
                   "--compact")
    finally:
        os.unlink(path)
    report = json.loads(r.stdout)
    assert r.returncode == 0, report.get("failures") or report.get("violations") or r.stderr
    got = {e["id"]: e for e in report["emits"]}
    assert sorted(got) == sorted(eb_id for _, eb_id in SEED.values()), sorted(got)
    for eb_id, e in got.items():
        assert e.get("dedupe_key") == eb_id, e
        assert e.get("subject") == eb_id, e
        assert e["meta"].get("eventbridge.id") == eb_id, e["meta"]


if __name__ == "__main__":
    try:
        run_all(globals())
    finally:
        if rabbit:
            rabbit.stop()
