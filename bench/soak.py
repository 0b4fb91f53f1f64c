"""Soak: MINUTES of mixed traffic through the bundled plugins with a flaky sink and a reload every
minute, then checks that nothing was lost, that RSS and open files stayed flat, and that the log
holds no error other than the injected ones. Run through bench/soak.sh.

Traffic (all on loopback): webhook POSTs (bearer token; some create Ploomes contacts through the
ploomes sink and the fake Ploomes API), Ploomes webhooks (validation key), EventBridge events over
HTTP (API key) and through an SQS queue, and Ezzing jobs through another SQS queue (fauxqs).
Every event goes to a steady sink and to a flaky one that is down for 5 s out of every 20 s; each
minute the flaky sink's config changes and the host gets SIGHUP, so a new generation takes over
while deliveries are in flight. Every payload carries a unique "seq"; at the end every
acknowledged seq must be in both sinks."""
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from harness import PLUGINS, SOURCE, Host, read_jsonl, wait_for  # noqa: E402
from fauxqs import Fauxqs  # noqa: E402

MINUTES = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
FIXTURES = os.path.join(SOURCE, "tests", "fixtures")
FAKE = os.path.join(SOURCE, "tests", "fakes", "ploomes_fake.py")
RATE = float(os.environ.get("SOAK_RATE", "40"))  # webhook requests per second

CFG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 5s
  http: { listen: "127.0.0.1:0" }
  admin: { listen: "127.0.0.1:0" }
plugins:
  hook: { plugin: webhook, config: { path: /hook, token: soak-token } }
  plin: { plugin: ploomes, config: { validation_key: soak-validation-key, path: /ploomes } }
  eb:
    plugin: notification
    config:
      http_path: /eventbridge
      api_key: soak-key
      sqs_queue_url: "%(eb_queue)s"
      sqs_endpoint: "%(sqs)s"
      aws_access_key_id: AKIDSOAK
      aws_secret_access_key: soak-secret
      sqs_wait: 1s
  ez:
    plugin: ezzing
    config:
      queue_url: "%(ez_queue)s"
      endpoint: "%(sqs)s"
      access_key_id: AKIDSOAK
      secret_access_key: soak-secret
      wait_time: 1s
      pollers: 2
  crm: { plugin: ploomes, max_inflight: 8, config: { user_key: soak-user-key, base_url: "%(ploomes)s",
                                                     rate_limit: 100 } }
  steady: { plugin: testsink, max_inflight: 32, config: { file: "@TMP@/steady.jsonl" } }
  flaky:
    plugin: testsink
    max_inflight: 16
    config: { file: "@TMP@/flaky.jsonl", fail: retry, down_file: "@TMP@/down", tag: "%(tag)s" }
pipelines:
  - name: to-steady
    from: "*"
    to: { sink: steady }
  - name: to-flaky
    from: "*"
    to: { sink: flaky }
    retry: { attempts: 100000, backoff: 100ms, max_backoff: 2s, jitter: 0.2 }
  - name: contacts
    from: hook
    when: { match: { /contact: { exists: true } } }
    to: { sink: crm, action: create_contact, with: { Name: "{{/contact}}", Email: "{{/seq}}@soak.example.com" } }
    retry: { attempts: 100000, backoff: 200ms, max_backoff: 2s }
"""


def fixture(kind, name):
    with open(os.path.join(FIXTURES, kind, name)) as f:
        return json.load(f)


def proc_figures(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


class Traffic:
    """Senders on threads; `acked` holds every seq the host acknowledged (2xx) or that sits in an
    SQS queue (the queue keeps it until the host has it)."""

    def __init__(self, h, sqs, ez_queue, eb_queue):
        self.h, self.sqs, self.ez_queue, self.eb_queue = h, sqs, ez_queue, eb_queue
        self.port = h.http_port()
        self.acked = set()
        self.contacts = set()
        self.refused = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.n = 0
        # without Laravel's maxTries, whose hint would cap the flaky sink's attempts at 5
        self.user = dict(fixture("ezzing", "user_created.json"), maxTries=None)
        self.plo = fixture("ploomes", "contacts_create.json")
        self.ebe = fixture("notification", "event-create.json")

    def next_seq(self, prefix):
        with self.lock:
            self.n += 1
            return f"{prefix}-{self.n}"

    def post(self, path, body, headers):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            h = {"Content-Type": "application/json"}
            h.update(headers)
            c.request("POST", path, json.dumps(body), h)
            r = c.getresponse()
            r.read()
            c.close()
            return r.status
        except OSError:
            return 0

    def send_http(self, path, body, headers):
        """Posts until the host takes it (503 = back-pressure: try again, as a sender would)."""
        for _ in range(100):
            st = self.post(path, body, headers)
            if 200 <= st < 300:
                with self.lock:
                    self.acked.add(body["seq"])
                return
            with self.lock:
                if st == 503:
                    self.refused += 1
                else:
                    self.errors += 1
            time.sleep(0.2)

    def webhooks(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            seq = self.next_seq("w")
            body = {"seq": seq, "n": i}
            if i % max(1, int(RATE)) == 0:  # one a second: under the API's 120 a minute
                body["contact"] = f"Soak {seq}"
            self.send_http("/hook", body, {"Authorization": "Bearer soak-token"})
            if "contact" in body:
                with self.lock:
                    self.contacts.add(body["contact"])
            time.sleep(1.0 / RATE)

    def ploomes_hooks(self):
        while not self.stop.is_set():
            body = dict(self.plo, seq=self.next_seq("p"))
            self.send_http("/ploomes", body, {"X-Ploomes-Validation-Key": "soak-validation-key"})
            time.sleep(0.2)

    def eventbridge_http(self):
        while not self.stop.is_set():
            body = dict(self.ebe, seq=self.next_seq("e"), id=self.next_seq("ebid"))
            self.send_http("/eventbridge", body, {"x-api-key": "soak-key"})
            time.sleep(0.25)

    def queues(self):
        while not self.stop.is_set():
            batch_ez, batch_eb = [], []
            for _ in range(5):
                batch_ez.append(json.dumps(dict(self.user, seq=self.next_seq("z"),
                                                uuid=self.next_seq("uuid"))))
                batch_eb.append(json.dumps(dict(self.ebe, seq=self.next_seq("q"),
                                                id=self.next_seq("ebq"))))
            try:
                self.sqs.send_many(self.ez_queue, batch_ez)
                self.sqs.send_many(self.eb_queue, batch_eb)
                with self.lock:
                    self.acked.update(json.loads(b)["seq"] for b in batch_ez + batch_eb)
            except Exception:  # the emulator is a test peer: count, never hide
                with self.lock:
                    self.errors += 1
            time.sleep(0.5)

    def start(self):
        self.threads = [threading.Thread(target=f, daemon=True) for f in
                        (self.webhooks, self.ploomes_hooks, self.eventbridge_http, self.queues)]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def delivered(path):
    return {x["seq"] for x in read_jsonl(path) if x["outcome"] == "ok"}


def main():
    import subprocess
    sqs = Fauxqs(logger=False).start()
    fake = subprocess.Popen([sys.executable, FAKE, "--user-key", "soak-user-key"],
                            stdout=subprocess.PIPE, text=True)
    ploomes = f"http://127.0.0.1:{int(fake.stdout.readline())}"
    ok = True
    try:
        ez_queue = sqs.create_queue("soak-ezzing", VisibilityTimeout=30)
        eb_queue = sqs.create_queue("soak-events", VisibilityTimeout=30)
        params = {"sqs": sqs.endpoint, "ez_queue": ez_queue, "eb_queue": eb_queue,
                  "ploomes": ploomes, "tag": "t0"}
        h = Host(CFG % params, name="soak")
        with h:
            h.start()
            pid = h.proc.pid
            traffic = Traffic(h, sqs, ez_queue, eb_queue)
            traffic.start()
            t0 = time.time()
            end = t0 + MINUTES * 60
            warm = t0 + min(60.0, MINUTES * 60 * 0.2)
            start_fig = None
            reloads = 0
            next_reload = t0 + 60
            peak_rss = 0
            while time.time() < end:
                now = time.time()
                # the flaky sink is down 5 s out of every 20 s
                down = (now - t0) % 20 < 5
                if down and not os.path.exists(h.path("down")):
                    open(h.path("down"), "w").close()
                elif not down and os.path.exists(h.path("down")):
                    os.unlink(h.path("down"))
                if now >= next_reload:
                    reloads += 1
                    params["tag"] = f"t{reloads}"
                    h.write_config(CFG % params)
                    h.proc.send_signal(signal.SIGHUP)
                    next_reload += 60
                if start_fig is None and now >= warm:
                    start_fig = proc_figures(pid)
                peak_rss = max(peak_rss, proc_figures(pid)[0])
                if h.proc.poll() is not None:
                    raise AssertionError("host died:\n" + h.log()[-3000:])
                time.sleep(0.5)
            traffic.finish()
            if os.path.exists(h.path("down")):
                os.unlink(h.path("down"))
            acked = set(traffic.acked)
            print(f"soak: {MINUTES:g} min, {len(acked)} events acknowledged, "
                  f"{traffic.refused} refused with 503 and sent again, {reloads} reloads",
                  flush=True)
            wait_for(lambda: acked <= delivered(h.path("steady.jsonl")) and
                     acked <= delivered(h.path("flaky.jsonl")), timeout=300, interval=1,
                     what="every acknowledged event in both sinks")
            wait_for(lambda: sum(sqs.counts(ez_queue)) + sum(sqs.counts(eb_queue)) == 0,
                     timeout=120, interval=1, what="both queues empty")
            # the contacts reached the fake Ploomes API
            def contacts_done():
                st = json.loads(urllib.request.urlopen(ploomes + "/_control/state",
                                                       timeout=10).read())
                names = {c.get("Name") for c in st.get("soak-user-key", {}).get("contacts", [])}
                return traffic.contacts <= names
            wait_for(contacts_done, timeout=300, interval=1, what="contacts created")
            time.sleep(2)  # let the last marks commit and memory settle
            end_fig = proc_figures(pid)
            log = h.log()
            assert h.stop() == 0, "host did not stop cleanly"
        from harness import plexus
        r = plexus("dlq", "list", "--json", "-c", h.config)
        dead = json.loads(r.stdout) if r.stdout.strip().startswith("[") else []
        steady = read_jsonl(h.path("steady.jsonl"))
        flaky = read_jsonl(h.path("flaky.jsonl"))
        print(f"soak: steady sink {len(steady)} deliveries ({len(delivered(h.path('steady.jsonl')))}"
              f" distinct), flaky sink {len(flaky)} attempts "
              f"({sum(1 for x in flaky if x['outcome'] == 'retry')} told to retry), "
              f"{len(traffic.contacts)} Ploomes contacts", flush=True)
        print(f"soak: RSS start {start_fig[0]} KiB, end {end_fig[0]} KiB, peak {peak_rss} KiB; "
              f"fds start {start_fig[1]}, end {end_fig[1]}", flush=True)
        errors = [line for line in log.splitlines() if '"level":"error"' in line]
        print(f"soak: {len(errors)} error lines in the log; sender errors {traffic.errors}",
              flush=True)
        for line in errors[:10]:
            print("  " + line[:300])
        unknown_extra = set(delivered(h.path("steady.jsonl"))) - acked
        print(f"soak: {len(dead)} dead letters", flush=True)
        if errors or dead:
            ok = False
        if traffic.errors:
            ok = False
        if end_fig[1] > start_fig[1] + 8:
            print("soak: open files grew", flush=True)
            ok = False
        if end_fig[0] > start_fig[0] * 1.5 + 32 * 1024:
            print("soak: RSS grew", flush=True)
            ok = False
        if unknown_extra:
            # events the host took but whose answer the sender never saw (a 2xx lost on a
            # timeout) are fine; anything else would be a bug in the test
            print(f"soak: {len(unknown_extra)} delivered events were not counted as acknowledged")
    finally:
        fake.terminate()
        fake.wait(10)
        sqs.stop()
    print("soak: " + ("PASS" if ok else "FAIL"), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
