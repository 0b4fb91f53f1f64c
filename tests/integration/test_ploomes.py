"""The ploomes plugin end to end: webhooks over loopback HTTP (validation key, 400/401/413, 200
only once persisted), webhook registration against the fake Ploomes API (only the missing ones,
idempotent across restarts, re-sync route), and every sink action with retries and dead letters."""
import email.utils
import http.client
import json
import os
import re
import subprocess
import sys
import time

from harness import (BUILD, PLUGINS, SOURCE, Host, plexus, read_jsonl, require_plugin, run_all,
                     wait_for)

FIXTURES = os.path.join(SOURCE, "tests", "fixtures", "ploomes")
FAKE = os.path.join(SOURCE, "tests", "fakes", "ploomes_fake.py")
CALLBACK = "https://plexus.example.com/ploomes/webhook"

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 3s
  log: { level: debug }
"""


def fixture(name, raw=False):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        data = f.read()
    return data if raw else json.loads(data)


class Fake:
    """The fake Ploomes API (tests/fakes/ploomes_fake.py) on a free loopback port."""

    def __init__(self, *keys):
        args = [sys.executable, FAKE]
        for k in keys:
            args += ["--user-key", k]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = None if body is None else json.dumps(body)
        h = dict(headers or {})
        if data is not None:
            h["Content-Type"] = "application/json"
        c.request(method, path, data, h)
        r = c.getresponse()
        text = r.read()
        c.close()
        return r.status, (json.loads(text) if text else None)

    def control(self, what, body=None):
        return self.call("POST" if body is not None else "GET", "/_control/" + what, body)[1]

    def requests(self):
        return self.control("requests")

    def account(self, key):
        return self.control("state")[key]

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def post(port, path, body, headers=None, method="POST"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    c.request(method, path, body, dict(headers or {}))
    r = c.getresponse()
    text = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text.decode(errors="replace")
    return r.status, parsed, hdrs


def key(k):
    return {"X-Ploomes-Validation-Key": k, "Content-Type": "application/json"}


def dlq(h):
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip().startswith("[") else []


# ------------------------------------------------------------------------------------------------
# Webhooks in


WEBHOOK_CFG = BASE + """  http: { listen: "127.0.0.1:0", max_body: 64KiB }
plugins:
  crm:
    plugin: ploomes
    config: { validation_key: "vk-alpha-123", path: /hooks/alpha }
  crm2:
    plugin: ploomes
    config: { validation_key: "vk-beta-456", path: /hooks/beta/, max_body: 2KiB }
  out: { plugin: testsink, config: { file: "@TMP@/out.jsonl" } }
pipelines:
  - name: all-ploomes
    from: "*"
    when: { type: "ploomes.*" }
    to: { sink: out, with: { payload: "{{}}", source: "{{/$event/source}}" } }
"""


def test_webhooks_accepted_and_refused():
    with Host(WEBHOOK_CFG) as h:
        h.start()
        port = h.http_port()
        update = fixture("contacts_update.json")
        st, body, _ = post(port, "/hooks/alpha", update, key("vk-alpha-123"))
        assert (st, body) == (200, {"status": "accepted"}), (st, body)
        st, _, _ = post(port, "/hooks/alpha", fixture("contacts_create.json"), key("vk-alpha-123"))
        assert st == 200
        st, _, _ = post(port, "/hooks/beta", fixture("deals_win.json"), key("vk-beta-456"))
        assert st == 200

        refused = [
            ("/hooks/alpha", update, key("vk-alpha-124"), 401, "invalid"),
            ("/hooks/alpha", update, key("vk-alpha-1234"), 401, "invalid"),
            ("/hooks/alpha", update, {"Content-Type": "application/json"}, 401, "missing"),
            ("/hooks/alpha", update, key("vk-beta-456"), 401, "invalid"),  # other account's key
            ("/hooks/beta", update, key("vk-alpha-123"), 401, "invalid"),
            ("/hooks/alpha", fixture("contacts_update.seed.txt", raw=True), key("vk-alpha-123"),
             400, "invalid JSON"),
            ("/hooks/alpha", {"Entity": "Contacts", "New": {}}, key("vk-alpha-123"), 400,
             "Action and Entity"),
            ("/hooks/alpha", [update], key("vk-alpha-123"), 400, "JSON object"),
            ("/hooks/alpha", dict(update, Action="Up date"), key("vk-alpha-123"), 400, "letters"),
            ("/hooks/alpha", b"", key("vk-alpha-123"), 400, "invalid JSON"),
            # the host's max_body (64KiB), then the instance's own (2KiB)
            ("/hooks/alpha", dict(update, pad="x" * 70000), key("vk-alpha-123"), 413, None),
            ("/hooks/beta", dict(update, pad="x" * 3000), key("vk-beta-456"), 413, "too large"),
        ]
        for path, body, headers, want, text in refused:
            st, answer, _ = post(port, path, body, headers)
            assert st == want, (path, headers, st, answer)
            if text:
                assert text in json.dumps(answer), (want, answer)
        st, _, hdrs = post(port, "/hooks/alpha", None, key("vk-alpha-123"), method="GET")
        assert st == 405, st

        wait_for(lambda: len(read_jsonl(h.path("out.jsonl"))) >= 3, what="3 deliveries")
        time.sleep(0.5)  # anything refused that still got through would show up by now
        h.stop()
        log = h.log()
        assert not dlq(h), dlq(h)
    lines = read_jsonl(h.path("out.jsonl"))
    assert len(lines) == 3, lines
    by_type = {x["type"]: x for x in lines}
    assert set(by_type) == {"ploomes.Contacts.Update", "ploomes.Contacts.Create",
                            "ploomes.Deals.Win"}, by_type.keys()
    up = by_type["ploomes.Contacts.Update"]["params"]
    assert up["payload"] == update and up["source"] == "crm"
    assert up["payload"]["Old"]["LegalName"] == "Ploomes"
    assert up["payload"]["New"]["Phones"][0]["PhoneNumber"] == "(11) 4380-7749"
    created = by_type["ploomes.Contacts.Create"]["params"]["payload"]
    assert created["Old"] is None and created == fixture("contacts_create.json")
    assert by_type["ploomes.Deals.Win"]["params"]["source"] == "crm2"
    assert "vk-alpha" not in log and "vk-beta" not in log, "a validation key reached the log"
    assert "refused reason=wrong_key" in log and "refused reason=missing_key" in log
    assert "reason=bad_json" in log


def test_webhook_answered_only_once_persisted():
    cfg = BASE + """  http: { listen: "127.0.0.1:0" }
plugins:
  crm: { plugin: ploomes, config: { validation_key: "vk-persist" } }
  out:
    plugin: testsink
    config: { file: "@TMP@/out.jsonl", fail: retry, down_file: "@TMP@/down" }
pipelines:
  - name: p
    from: crm
    to: { sink: out, with: { payload: "{{}}" } }
    retry: { attempts: 50, backoff: 100ms, max_backoff: 200ms, jitter: 0 }
"""
    with Host(cfg) as h:
        open(h.path("down"), "w").close()
        h.start()
        st, _, _ = post(h.http_port(), "/ploomes/webhook", fixture("deals_win.json"),
                        key("vk-persist"))
        assert st == 200
        h.kill9()  # the 200 promised the event is on disk: it must survive this
        assert not any(x["outcome"] == "ok" for x in read_jsonl(h.path("out.jsonl")))
        os.unlink(h.path("down"))
        h.start()
        wait_for(lambda: [x for x in read_jsonl(h.path("out.jsonl")) if x["outcome"] == "ok"],
                 what="delivery after restart")
        h.stop()
    ok = [x for x in read_jsonl(h.path("out.jsonl")) if x["outcome"] == "ok"]
    assert ok[0]["type"] == "ploomes.Deals.Win"
    assert ok[0]["params"]["payload"] == fixture("deals_win.json")


def test_full_spool_answers_503_never_200():
    """On a full disk the spool cannot keep a webhook: Ploomes must get 503 + Retry-After (so it
    sends again), never a 200 for an event that is not stored."""
    cfg = BASE.replace("data_dir: @TMP@/var", "data_dir: @TMP@/small")
    cfg += """  http: { listen: "127.0.0.1:0" }
plugins:
  crm: { plugin: ploomes, config: { validation_key: "vk-full-key" } }
  out:
    plugin: testsink
    config: { file: "@TMP@/out.jsonl", fail: retry, down_file: "@TMP@/down" }
pipelines:
  - name: p
    from: crm
    to: { sink: out, with: { n: "{{/n}}" } }
    retry: { attempts: 1000, backoff: 100ms, max_backoff: 200ms }
"""
    h = Host(cfg)
    small = h.path("small")
    os.makedirs(small)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small],
        capture_output=True).returncode == 0
    if not mounted:
        raise AssertionError("this test needs root to mount a small tmpfs")
    try:
        open(h.path("down"), "w").close()
        h.start()
        port = h.http_port()
        base = fixture("contacts_update.json")
        accepted, busy = [], None
        for n in range(600):
            st, body, hdrs = post(port, "/ploomes/webhook", dict(base, n=n, pad="x" * 8000),
                                  key("vk-full-key"))
            if st == 200:
                accepted.append(n)
            else:
                busy = (st, body, hdrs)
                break
        assert busy, "the spool never filled up"
        assert busy[0] == 503 and busy[2].get("retry-after") == "5", busy
        assert accepted, "nothing accepted before the disk filled"
        # Space returns: the webhook Ploomes sends again is accepted, and every 200 is delivered.
        subprocess.run(["mount", "-o", "remount,size=64m", small], check=True)
        os.unlink(h.path("down"))
        n = accepted[-1] + 1

        def resend():
            st, _, _ = post(port, "/ploomes/webhook", dict(base, n=n), key("vk-full-key"))
            return st == 200 or time.sleep(0.2)
        wait_for(resend, timeout=30, what="a 200 once space returned")
        want = set(accepted) | {n}
        wait_for(lambda: want <= {x["params"]["n"] for x in read_jsonl(h.path("out.jsonl"))
                                  if x["outcome"] == "ok"},
                 timeout=60, what="every accepted webhook delivered")
        h.stop()
    finally:
        if h.proc:
            h.proc.kill()
            h.proc.wait()
        subprocess.run(["umount", "-l", small], capture_output=True)


# ------------------------------------------------------------------------------------------------
# Registration


def test_registration_creates_only_missing_and_is_idempotent():
    with Fake("uk-main-key", "uk-other") as fake:
        fake.control("seed", {"key": "uk-main-key", "webhooks": [
            # already right: left alone
            {"EntityId": 1, "ActionId": 2, "CallbackUrl": CALLBACK, "ValidationKey": "vk-registered"},
            # right subscription, stale key: patched
            {"EntityId": 2, "ActionId": 4, "CallbackUrl": CALLBACK, "ValidationKey": "old"},
            # someone else's webhooks: never touched
            {"EntityId": 1, "ActionId": 1, "CallbackUrl": "https://elsewhere.example/h",
             "ValidationKey": "x"},
            {"EntityId": 2, "ActionId": 5, "CallbackUrl": "https://elsewhere.example/h",
             "ValidationKey": "x"},
            {"EntityId": 1, "ActionId": 3, "CallbackUrl": "https://elsewhere.example/g",
             "ValidationKey": "x"},
        ]})
        fake.control("seed", {"key": "uk-other", "webhooks": [
            {"EntityId": 1, "ActionId": 1, "CallbackUrl": CALLBACK, "ValidationKey": "vk-registered"}]})
        # The first listing fails: the pass is retried with backoff, the host keeps running.
        fake.control("fail", {"status": 500, "method": "GET", "path": "/Webhooks", "count": 1,
                              "message": "listing is down"})
        cfg = BASE + f"""  http: {{ listen: "127.0.0.1:0" }}
plugins:
  crm:
    plugin: ploomes
    config:
      validation_key: vk-registered
      user_key: uk-main-key
      base_url: "{fake.url}"
      callback_url: "{CALLBACK}"
      subscriptions: [Contacts.Update, Contacts.Create, Deals.Win, Deals.Lose, Deals.Reopen, "1.3",
                      contacts.update]
      page_size: 2
      sync_retry: 200ms
      rate_limit: 0
"""
        with Host(cfg) as h:
            h.start()
            wait_for(lambda: "webhooks in sync" in h.log(), what="first sync")
            log = h.log()
            assert "webhook sync failed" in log and "listing is down" in log
            mine = lambda: sorted((w["EntityId"], w["ActionId"], w["ValidationKey"])
                                  for w in fake.account("uk-main-key")["webhooks"]
                                  if w["CallbackUrl"] == CALLBACK)
            assert mine() == [(1, 1, "vk-registered"), (1, 2, "vk-registered"), (1, 3, "vk-registered"),
                              (2, 4, "vk-registered"), (2, 5, "vk-registered"), (2, 6, "vk-registered")], mine()
            others = [w for w in fake.account("uk-main-key")["webhooks"]
                      if w["CallbackUrl"] != CALLBACK]
            assert len(others) == 3 and all(w["ValidationKey"] == "x" for w in others)
            assert len(fake.account("uk-other")["webhooks"]) == 1
            reqs = fake.requests()
            assert all(r["headers"].get("user-key") == "uk-main-key" for r in reqs), reqs
            posts = [r for r in reqs if r["method"] == "POST"]
            assert len(posts) == 4, posts
            assert all(r["path"] == "/Webhooks" and r["body"]["CallbackUrl"] == CALLBACK and
                       r["body"]["ValidationKey"] == "vk-registered" and
                       r["headers"]["content-type"] == "application/json" for r in posts)
            patches = [r for r in reqs if r["method"] == "PATCH"]
            assert len(patches) == 1 and patches[0]["body"] == {"ValidationKey": "vk-registered"}
            lists = [(r["params"].get("$top"), r["params"].get("$skip"), r["status"])
                     for r in reqs if r["method"] == "GET" and r["path"] == "/Webhooks"]
            assert lists == [("2", "0", 500), ("2", "0", 200), ("2", "2", 200),
                             ("2", "4", 200)], lists
            assert [r["path"] for r in reqs if r["path"] == "/Webhooks@Actions"] == \
                ["/Webhooks@Actions"]

            # Re-sync through the route: needs the key, changes nothing, then repairs a deletion.
            port = h.http_port()
            st, body, _ = post(port, "/ploomes/webhook/sync", b"", {})
            assert st == 401, (st, body)
            fake.control("reset_log", {})
            st, body, _ = post(port, "/ploomes/webhook/sync", b"", key("vk-registered"))
            assert st == 200 and body["ok"] and body["created"] == 0 and body["updated"] == 0, body
            assert body["present"] == 6, body
            assert not [r for r in fake.requests() if r["method"] != "GET"]
            gone = [w for w in fake.account("uk-main-key")["webhooks"]
                    if w["CallbackUrl"] == CALLBACK and w["ActionId"] == 5][0]
            st, _ = fake.call("DELETE", f"/Webhooks({gone['Id']})", headers={"User-Key": "uk-main-key"})
            assert st == 200
            st, body, _ = post(port, "/ploomes/webhook/sync", b"", key("vk-registered"))
            assert st == 200 and body["created"] == 1 and body["present"] == 5, body
            assert len(mine()) == 6
            h.stop()

        # A restart (a new generation) lists again and finds nothing to do.
        fake.control("reset_log", {})
        with Host(cfg, tmp=h.tmp) as h2:
            h2.start()
            wait_for(lambda: h2.log().count("webhooks in sync") >= 4, what="sync after restart")
            h2.stop()
        reqs = fake.requests()
        assert reqs and all(r["method"] == "GET" for r in reqs), reqs
        last = [x for x in h2.log().splitlines() if "webhooks in sync" in x][-1]
        assert "created=0 updated=0 present=6" in last, last


def test_registration_waits_out_rate_limit_and_bad_key():
    with Fake("uk-main-key") as fake:
        fake.control("fail", {"status": 429, "retry_after": 1, "method": "POST",
                              "path": "/Webhooks", "count": 1})
        cfg = BASE + f"""  http: {{ listen: "127.0.0.1:0" }}
plugins:
  crm:
    plugin: ploomes
    config:
      validation_key: vk-registered
      user_key: uk-main-key
      base_url: "{fake.url}"
      callback_url: "{CALLBACK}"
      subscriptions: [Deals.Win]
      sync_retry: 100ms
      rate_limit: 0
  wrong:
    plugin: ploomes
    config:
      path: /wrong/webhook
      validation_key: vk-wrong
      user_key: not-a-key
      base_url: "{fake.url}"
      callback_url: "{CALLBACK}"
      subscriptions: [Deals.Lose]
      sync_retry: 100ms
"""
        with Host(cfg) as h:
            h.start()
            wait_for(lambda: "webhooks in sync" in h.log(), what="sync")
            wait_for(lambda: h.log().count("Invalid User-Key") >= 2, what="retried bad key")
            assert h.proc.poll() is None
            h.stop()
        posts = [r for r in fake.requests() if r["method"] == "POST"]
        assert [r["status"] for r in posts] == [429, 200], posts
        assert posts[1]["t"] - posts[0]["t"] >= 0.95, "retried before the advertised Retry-After"
        assert [(w["EntityId"], w["ActionId"]) for w in fake.account("uk-main-key")["webhooks"]] == \
            [(2, 4)]
        assert "not-a-key" not in h.log()


# ------------------------------------------------------------------------------------------------
# Sink actions


SINK_CFG = BASE + """plugins:
  feed: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  crm:
    plugin: ploomes
    max_inflight: 4
    config: { user_key: uk-main-key, base_url: "@URL@", rate_limit: @RATE@ }
@EXTRA@
pipelines:
  - name: cc
    from: feed
    when: { match: { /op: create_contact } }
    to:
      sink: crm
      action: create_contact
      with: { Name: "{{/name?}}", Email: "{{/email}}" }
    retry: &r { attempts: @ATTEMPTS@, backoff: 100ms, max_backoff: 300ms, jitter: 0 }
  - name: uc
    from: feed
    when: { match: { /op: update_contact } }
    to: { sink: crm, action: update_contact, with: { id: "{{/id}}", Name: "{{/name}}" } }
    retry: *r
  - name: cd
    from: feed
    when: { match: { /op: create_deal } }
    to:
      sink: crm
      action: create_deal
      with: { Title: "{{/title}}", ContactId: "{{/contact}}", Amount: "{{/amount}}" }
    retry: *r
  - name: ud
    from: feed
    when: { match: { /op: update_deal } }
    to: { sink: crm, action: update_deal, with: { id: "{{/id?}}", Amount: "{{/amount}}" } }
    retry: *r
  - name: win
    from: feed
    when: { match: { /op: win_deal } }
    to: { sink: crm, action: win_deal, with: { id: "{{/id}}", WonAmount: "{{/amount}}" } }
    retry: *r
  - name: lose
    from: feed
    when: { match: { /op: lose_deal } }
    to: { sink: crm, action: lose_deal, with: { id: "{{/id}}", LossReasonId: "{{/reason}}" } }
    retry: *r
  - name: req
    from: feed
    when: { match: { /op: request } }
    to:
      sink: crm
      action: request
      with: { method: GET, path: "/Contacts?$filter=Email eq '{{/email}}'" }
    retry: *r
  - name: bogus
    from: feed
    when: { match: { /op: bogus } }
    to: { sink: crm, action: merge_contacts }
    retry: *r
"""


def sink_cfg(fake, extra_plugins="", rate_limit=0, attempts=6):
    cfg = SINK_CFG.replace("@URL@", fake.url).replace("@RATE@", str(rate_limit))
    cfg = cfg.replace("@ATTEMPTS@", str(attempts))
    return cfg.replace("@EXTRA@\n", extra_plugins + "\n" if extra_plugins else "")


def feed(h, *events):
    with open(h.path("in.jsonl"), "a") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")


def test_sink_actions_against_the_fake():
    with Fake("uk-main-key") as fake:
        fake.control("seed", {"key": "uk-main-key",
                              "contacts": [{"Id": 500, "Name": "Ana", "Email": "ana@example.com"}],
                              "deals": [{"Id": 700, "Title": "Big", "StatusId": 1},
                                        {"Id": 701, "Title": "Small", "StatusId": 1}]})
        with Host(sink_cfg(fake)) as h:
            h.start()
            feed(h, {"op": "create_contact", "name": "Bea", "email": "bea@example.com"})
            wait_for(lambda: len(fake.requests()) == 1, what="create_contact")
            feed(h, {"op": "update_contact", "id": 500, "name": "Ana Lee"},
                 {"op": "create_deal", "title": "New deal", "contact": 500, "amount": 5000},
                 {"op": "update_deal", "id": "700", "amount": 6000},
                 {"op": "lose_deal", "id": 701, "reason": 3},
                 {"op": "request", "email": "bea@example.com"})
            wait_for(lambda: len(fake.requests()) == 6, what="5 more calls")
            feed(h, {"op": "win_deal", "id": 700, "amount": 6000})
            wait_for(lambda: len(fake.requests()) == 7, what="win_deal")
            wait_for(lambda: h.log().count("result=") >= 7, what="7 done")
            time.sleep(0.3)
            h.stop()
            assert not dlq(h), dlq(h)
        reqs = fake.requests()
        assert all(r["status"] == 200 for r in reqs), reqs
        assert all(r["headers"]["user-key"] == "uk-main-key" and
                   r["headers"]["accept"] == "application/json" for r in reqs)
        calls = {(r["method"], r["path"]): r for r in reqs}
        want = {
            ("POST", "/Contacts"): {"Name": "Bea", "Email": "bea@example.com"},
            ("PATCH", "/Contacts(500)"): {"Name": "Ana Lee"},
            ("POST", "/Deals"): {"Title": "New deal", "ContactId": 500, "Amount": 5000},
            ("PATCH", "/Deals(700)"): {"Amount": 6000},
            ("POST", "/Deals(700)/Win"): {"WonAmount": 6000},
            ("POST", "/Deals(701)/Lose"): {"LossReasonId": 3},
            ("GET", "/Contacts"): None,
        }
        assert set(calls) == set(want), sorted(calls)
        for k, body in want.items():
            assert calls[k]["body"] == body, (k, calls[k]["body"])
            if body is not None:
                assert calls[k]["headers"]["content-type"] == "application/json"
        assert calls[("GET", "/Contacts")]["params"] == {"$filter": "Email eq 'bea@example.com'"}
        acc = fake.account("uk-main-key")
        contacts = {c["Id"]: c for c in acc["contacts"]}
        deals = {d["Id"]: d for d in acc["deals"]}
        assert contacts[500]["Name"] == "Ana Lee"
        bea = [c for c in contacts.values() if c["Name"] == "Bea"][0]
        assert deals[700]["StatusId"] == 2 and deals[700]["Amount"] == 6000
        assert deals[701]["StatusId"] == 3 and deals[701]["LossReasonId"] == 3
        log = h.log()
        assert f"result=id={bea['Id']}" in log, "created id not in the delivery result"
        assert "result=id=701" in log
        assert "uk-main-key" not in log


def test_sink_retries_and_dead_letters():
    with Fake("uk-main-key") as fake:
        fake.control("seed", {"key": "uk-main-key", "contacts": [{"Id": 500, "Name": "Ana"}]})
        fake.control("fail", {"status": 429, "retry_after": 1, "method": "POST", "path": "/Deals",
                              "count": 1})
        fake.control("fail", {"status": 503, "method": "PATCH", "path": "/Contacts(500)",
                              "count": 2, "message": "maintenance"})
        # Retry-After may also be an HTTP date.
        fake.control("fail", {"status": 429, "method": "POST", "path": "/Contacts", "count": 1,
                              "retry_after": email.utils.formatdate(time.time() + 3,
                                                                    usegmt=True)})
        wrong = f"""  wrongkey:
    plugin: ploomes
    config: {{ user_key: nope-not-a-key, base_url: "{fake.url}" }}
  nowhere:
    plugin: ploomes
    config: {{ user_key: uk-main-key, base_url: "http://127.0.0.1:9", timeout: 2s }}"""
        cfg = sink_cfg(fake, wrong, attempts=4) + """  - name: badkey
    from: feed
    when: { match: { /op: badkey } }
    to: { sink: wrongkey, action: create_contact, with: { Name: x } }
  - name: down
    from: feed
    when: { match: { /op: down } }
    to: { sink: nowhere, action: create_contact, with: { Name: x } }
    retry: { attempts: 2, backoff: 100ms, jitter: 0 }
"""
        with Host(cfg) as h:
            h.start()
            feed(h, {"op": "create_deal", "title": "Retry me", "contact": 500, "amount": 1},
                 {"op": "update_contact", "id": 500, "name": "Ana B"},
                 {"op": "create_contact", "email": "no-name@example.com"},  # 400 from the API
                 {"op": "update_contact", "id": 999, "name": "Ghost"},      # 404
                 {"op": "update_deal", "amount": 3},                         # no id
                 {"op": "bogus"},
                 {"op": "badkey"},
                 {"op": "down"})
            wait_for(lambda: len(dlq(h)) >= 6, timeout=30, what="6 dead letters")
            wait_for(lambda: h.log().count("result=id=") >= 2, what="2 done after retries")
            time.sleep(0.3)
            h.stop()
            dead = dlq(h)
        reasons = sorted(x["reason"] for x in dead)
        assert len(dead) == 6, reasons
        text = "\n".join(reasons)
        assert "rejected: http 400: The field Name is required." in text, text
        assert "rejected: http 404: Contact 999 not found" in text, text
        assert "update_deal needs with.id" in text, text
        assert "unknown action \"merge_contacts\"" in text, text
        assert "rejected: user key refused (http 401): Invalid User-Key" in text, text
        assert "attempts exhausted (2): request failed" in text, text
        reqs = fake.requests()
        deals = [r for r in reqs if r["method"] == "POST" and r["path"] == "/Deals"]
        assert [r["status"] for r in deals] == [429, 200], deals
        assert deals[1]["t"] - deals[0]["t"] >= 0.95, "retried before the advertised Retry-After"
        contacts = [r for r in reqs if r["method"] == "POST" and r["path"] == "/Contacts" and
                    r["headers"]["user-key"] == "uk-main-key"]
        assert [r["status"] for r in contacts] == [429, 400], contacts
        assert contacts[1]["t"] - contacts[0]["t"] >= 1.5, "HTTP-date Retry-After not honoured"
        patches = [r["status"] for r in reqs if r["method"] == "PATCH" and
                   r["path"] == "/Contacts(500)"]
        assert patches == [503, 503, 200], patches
        assert fake.account("uk-main-key")["contacts"][0]["Name"] == "Ana B"
        assert len(fake.account("uk-main-key")["deals"]) == 1
        assert "retry" in h.log() and "rate limited" in h.log()


def test_rate_limits_client_and_server():
    with Fake("uk-main-key") as fake:
        # The server allows 3 calls per 2 s; the client limiter is off: 429s, then all done.
        fake.control("config", {"rate_limit": 3, "window": 2})
        with Host(sink_cfg(fake, attempts=10)) as h:
            h.start()
            feed(h, *[{"op": "create_contact", "name": f"c{i}", "email": f"c{i}@x.io"}
                      for i in range(6)])
            wait_for(lambda: len(fake.account("uk-main-key")["contacts"]) == 6, timeout=30,
                     what="6 contacts despite the server's limit")
            h.stop()
            assert not dlq(h)
        statuses = [r["status"] for r in fake.requests()]
        assert 429 in statuses and statuses.count(200) == 6, statuses

        # The client limiter at 120/minute starts calls 500 ms apart: the server never says 429.
        # The spacing is read from the limiter's own schedule (its debug log, monotonic clock),
        # not from when the calls arrived, which a busy machine shifts either way.
        fake.control("reset_log", {})
        fake.control("config", {"rate_limit": 120, "window": 60})
        with Host(sink_cfg(fake, rate_limit=120)) as h:
            h.start()
            feed(h, *[{"op": "create_contact", "name": f"d{i}", "email": f"d{i}@x.io"}
                      for i in range(4)])
            wait_for(lambda: len(fake.requests()) == 4, what="4 calls")
            h.stop()
        assert all(r["status"] == 200 for r in fake.requests())
        starts = [int(t) for t in re.findall(r"ploomes call start method=POST at_us=(\d+)",
                                             h.log())]
        assert len(starts) == 4, starts
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert min(gaps) >= 500000, gaps


def test_stop_with_calls_queued_loses_nothing():
    """SIGTERM while calls wait behind a slow limiter (2 per minute): the host stops promptly and
    cleanly, a pending sync request gets 503, and the deliveries are done after a restart."""
    import threading
    with Fake("uk-main-key") as fake:
        extra = f"""  hooks:
    plugin: ploomes
    config:
      validation_key: vk-stop-key
      user_key: uk-main-key
      base_url: "{fake.url}"
      callback_url: "{CALLBACK}"
      subscriptions: [Deals.Win, Deals.Lose]
      rate_limit: 2"""
        cfg = BASE + '  http: { listen: "127.0.0.1:0" }\n' + \
            sink_cfg(fake, extra, rate_limit=2)[len(BASE):]
        with Host(cfg) as h:
            h.start()
            port = h.http_port()
            feed(h, *[{"op": "create_contact", "name": f"s{i}", "email": f"s{i}@x.io"}
                      for i in range(3)])
            wait_for(lambda: len([r for r in fake.requests() if r["path"] == "/Contacts"]) == 1,
                     what="the first call")
            wait_for(lambda: len([r for r in fake.requests() if r["path"].startswith("/Webhooks")])
                     == 1, what="the first registration call")
            answer = {}
            t = threading.Thread(target=lambda: answer.update(
                r=post(port, "/ploomes/webhook/sync", b"", key("vk-stop-key"))))
            t.start()
            wait_for(lambda: h.log().count("webhook sync requested") == 1, what="sync request")
            time.sleep(0.2)
            assert h.stop() == 0
            t.join(10)
            log = h.log()
            assert "drain timed out" not in log, log[-2000:]
            assert answer["r"][0] == 503, answer
            assert len(fake.account("uk-main-key")["contacts"]) == 1
            h.write_config(cfg.replace("rate_limit: 2", "rate_limit: 0"))
            os.replace(h.path("in.jsonl"), h.path("in.old"))  # the test source would re-read it
            h.start()
            wait_for(lambda: len(fake.account("uk-main-key")["contacts"]) == 3, what="the rest")
            wait_for(lambda: "webhooks in sync" in h.log(), what="sync after restart")
            time.sleep(0.3)
            h.stop()
        names = sorted(c["Name"] for c in fake.account("uk-main-key")["contacts"])
        assert names == ["s0", "s1", "s2"], names
        assert len(fake.account("uk-main-key")["webhooks"]) == 2


# ------------------------------------------------------------------------------------------------
# Examples


def test_example_configs_check():
    env = {"PLEXUS_PLUGIN_PATH": PLUGINS}
    r = plexus("check", "-c", os.path.join(SOURCE, "etc", "examples", "ploomes.yaml"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout + r.stderr
    require_plugin("ezzing")
    require_plugin("notification")
    r = plexus("check", "-c", os.path.join(SOURCE, "etc", "examples", "ploomes-ezzing.yaml"),
               env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # A mistake in the plugin's options is caught by check too.
    bad = os.path.join(BUILD, "ploomes-bad-example.yaml")
    with open(os.path.join(SOURCE, "etc", "examples", "ploomes.yaml")) as f:
        text = f.read().replace("rate_limit: 120", "rate_limt: 120")
    with open(bad, "w") as f:
        f.write(text)
    r = plexus("check", "-c", bad, env=env)
    os.unlink(bad)
    assert r.returncode != 0 and "rate_limit" in r.stderr + r.stdout, r.stderr


if __name__ == "__main__":
    run_all(globals())
