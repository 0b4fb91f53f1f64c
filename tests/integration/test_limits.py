"""Limits: a sink's max_pending gives the sources feeding it back-pressure (PX_EBUSY from emit)
once that many deliveries wait for it, and a source's max_events_per_second refuses emits beyond
the rate; both show in /metrics and the log, and nothing is lost: the refused events are emitted
again by the source and delivered once the limit lets them through."""
import os
import re
import time
import urllib.request

from harness import Host, read_acks, read_jsonl, require_plugin, run_all, wait_for

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@]
  drain_timeout: 2s
  admin: { listen: "127.0.0.1:0" }
"""


def metrics(h):
    with urllib.request.urlopen(h.admin_request("GET", "/metrics"), timeout=10) as r:
        return r.read().decode()


def metric(text, name, **labels):
    """Value of one series, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def ok_seqs(path):
    return {x["seq"] for x in read_jsonl(path) if x["outcome"] == "ok"}


def acked(h):
    return {s for s, st in read_acks(h.path("acks")).items() if st == 0}


def test_max_pending_back_pressure():
    cfg = BASE + """
plugins:
  src: { plugin: testsource, config: { count: 300, batch: 20, ack_file: "@TMP@/acks" } }
  slow:
    plugin: testsink
    max_pending: 50
    config: { file: "@TMP@/slow.jsonl", fail: retry, down_file: "@TMP@/down" }
  free: { plugin: testsink, config: { file: "@TMP@/free.jsonl" } }
pipelines:
  - name: p
    from: src
    to: [{ sink: slow }, { sink: free }]
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 200ms, jitter: 0 }
"""
    with Host(cfg) as h:
        open(h.path("down"), "w").close()
        h.start()
        wait_for(lambda: "limit=max_pending" in h.log(), what="the cap to refuse an emit")
        # The cap counts queued puts too: exactly max_pending events got in while the sink is down
        # (every event goes to `slow`), and it holds while the sink stays down. (Their commits
        # may still be landing when the first refusal is logged.)
        wait_for(lambda: len(acked(h)) >= 50, what="the first 50 acknowledged")
        wait_for(lambda: metric(metrics(h), "plexus_pending_deliveries", sink="slow") == 50,
                 what="50 pending in the spool")
        m = metrics(h)
        assert metric(m, "plexus_events_limited_total", source="src", limit="max_pending") >= 1
        assert metric(m, "plexus_sink_max_pending", sink="slow") == 50
        time.sleep(0.5)
        assert len(acked(h)) == 50, "the cap leaked while the sink was down"
        assert "sink=slow pending=50 max_pending=50" in h.log()
        os.unlink(h.path("down"))
        wait_for(lambda: len(ok_seqs(h.path("slow.jsonl"))) == 300, timeout=60,
                 what="every event delivered once the sink is back")
        assert "emits accepted again" in h.log()
        m = metrics(h)
        assert h.stop() == 0
    assert acked(h) == set(range(300))
    assert ok_seqs(h.path("free.jsonl")) == set(range(300))
    assert metric(m, "plexus_events_received_total", source="src") >= 300


def test_max_events_per_second():
    cfg = BASE + """
plugins:
  src:
    plugin: testsource
    max_events_per_second: 20
    config: { count: 60, batch: 60, ack_file: "@TMP@/acks" }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
  other: { plugin: testsource, config: { count: 100, batch: 100, ack_file: "@TMP@/acks2" } }
pipelines:
  - { name: p, from: "*", to: { sink: out } }
"""
    with Host(cfg) as h:
        h.start()
        wait_for(lambda: len(acked(h)) == 60, timeout=30, what="all 60 acknowledged")
        m = metrics(h)
        log = h.log()
        assert h.stop() == 0
    assert "limit=max_events_per_second max_events_per_second=20" in log
    assert metric(m, "plexus_events_limited_total", source="src",
                  limit="max_events_per_second") >= 1
    assert metric(m, "plexus_source_max_events_per_second", source="src") == 20
    # the unlimited source was never refused
    assert metric(m, "plexus_events_limited_total", source="other",
                  limit="max_events_per_second") is None
    assert len(read_acks(h.path("acks2"))) == 100
    # A one-second burst, then 20 per second: the last 40 cannot have come in under 2 s.
    lines = [x for x in read_jsonl(h.path("out.jsonl")) if x["outcome"] == "ok"]
    src = sorted(x["event_ms"] for x in lines if x["seq"] is not None and
                 x["event"] in {i for i in _ids(h, "acks")})
    assert len(src) == 60, len(src)
    assert src[-1] - src[0] >= 1800, src[-1] - src[0]


def test_webhook_answers_503_at_its_rate_limit():
    """A real source: the webhook turns the refusal into 503 + Retry-After (nothing accepted is
    dropped, nothing refused was acknowledged)."""
    import http.client
    cfg = BASE.replace("plugin_path: [@TEST_PLUGINS@]", "plugin_path: [@TEST_PLUGINS@, @PLUGINS@]")
    cfg += """  http: { listen: "127.0.0.1:0" }
plugins:
  hook: { plugin: webhook, max_events_per_second: 2, config: { path: /hook } }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - { name: p, from: hook, to: { sink: out } }
"""
    require_plugin("webhook")  # a bundled plugin: missing is a failure, not a skip
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        statuses = []
        for i in range(6):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", "/hook", body=b'{"n": %d}' % i,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            statuses.append((r.status, r.getheader("Retry-After")))
            c.close()
        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) ==
                 sum(1 for st, _ in statuses if st < 300), what="accepted ones delivered")
        assert h.stop() == 0
    accepted = [st for st, _ in statuses if st in (200, 202)]
    refused = [ra for st, ra in statuses if st == 503]
    assert len(accepted) >= 2 and refused, statuses
    assert all(ra for ra in refused), statuses
    assert len(accepted) + len(refused) == 6, statuses


def _ids(h, name):
    with open(h.path(name)) as f:
        return [line.split()[1] for line in f if len(line.split()) == 3]


if __name__ == "__main__":
    run_all(globals())
