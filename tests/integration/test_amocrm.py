"""amocrm plugin end to end against the fake amoCRM (tests/fakes/amocrm_fake.py): OAuth connect,
token refresh before expiry and after 401, a refused refresh making the account stale, cached
lists with pagination, rules, leads per rule, error mappings, the admin API's status codes."""
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import PLUGINS, SOURCE, Host, plexus, run_all, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
from amocrm_fake import AmoFake  # noqa: E402

FIX = os.path.join(SOURCE, "tests", "fixtures", "amocrm")
CLIENT_ID = "5e1c8a2b-4f0d-4c3a-9b7e-2a6d1f0c9e11"
SECRET = "client-secret-for-tests"
REDIRECT = "https://quiz.example/amocrm/webhook/create"
TOKEN = "admin-token-for-tests"
REFERER = "quizstudio.amocrm.ru"


def fixture(name):
    with open(os.path.join(FIX, name)) as f:
        return json.load(f)


def call(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, raw.decode(errors="replace")


CONFIG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 2s
  http: { listen: "127.0.0.1:0" }
  admin: { listen: "127.0.0.1:0" }
plugins:
  quiz: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  amo:
    plugin: amocrm
    max_inflight: 64
    config:
      client_id: "%(client_id)s"
      client_secret: "%(secret)s"
      redirect_uri: "%(redirect)s"
      api_token: "%(token)s"
      base_url: "%(fake)s"
      auth_url: "%(fake)s/oauth"
      rate_limit: %(rate)s
      stale_retry: 1s
      api_prefix: "%(prefix)s"
  rules: { plugin: file, config: { path: "@TMP@/rules.jsonl" } }
pipelines:
  - name: quiz-to-amo
    from: quiz
    when: { type: quiz.result }
    to:
      sink: amo
      action: create_lead
      with:
        quiz_id: "{{/quiz_id}}"
        name: "Quiz {{/quiz_id}} #{{/seq}}"
        answers: "{{/answers}}"
        contact: "{{/contact?}}"
        company: "{{/company?}}"
        utm: "{{/utm?}}"
    retry: { attempts: 1000, backoff: 200ms, max_backoff: 1s, jitter: 0 }
  - name: rule-events
    from: amo
    when: { type: amocrm.rule.saved }
    to: { sink: rules }
"""


class Env:
    """A fake amoCRM plus a plexus host whose amocrm instance points at it."""

    def __init__(self, rate=40, fake_rps=50, expires_in=86400, max_limit=250,
                 prefix="/amocrm", served_at="/amocrm"):
        self.fake = AmoFake(fixture("amocrm_data.json"), CLIENT_ID, SECRET, REDIRECT).start()
        self.fake.rps, self.fake.expires_in, self.fake.max_limit = fake_rps, expires_in, max_limit
        self.vars = {"client_id": CLIENT_ID, "secret": SECRET, "redirect": REDIRECT,
                     "token": TOKEN, "fake": self.fake.url, "rate": rate, "prefix": prefix}
        self.served_at = served_at  # the path api_prefix should resolve to ("" = the root)
        self.host = Host(CONFIG % self.vars)
        self.seq = 0

    def __enter__(self):
        self.start()
        return self

    def start(self):
        # the log is appended across restarts: wait for this run's "started" line
        before = self.host.log().count("\"started") if os.path.exists(self.host.log_path) else 0
        self.host.start(wait=False)
        wait_for(lambda: self.host.log().count("\"started") > before or
                 self.host.proc.poll() is not None, what="host start")
        assert self.host.proc.poll() is None, self.host.log()[-3000:]
        ports = re.findall(r"http listening address=\S+ port=(\d+)", self.host.log())
        self.base = "http://127.0.0.1:%s%s" % (ports[-1], self.served_at)

    def __exit__(self, *exc):
        try:
            if self.host.proc:
                self.host.stop()
        finally:
            self.host.__exit__()
            self.fake.stop()

    def api(self, method, path, body=None, token=TOKEN):
        return call(method, self.base + path, body, token)

    def ctl(self, what, body=None):
        return call("POST" if body is not None or what != "state" else "GET",
                    self.fake.url + "/_fake/" + what, body)[1]

    def state(self):
        return call("GET", self.fake.url + "/_fake/state")[1]

    def connect(self):
        st, body = self.api("POST", "/account")
        assert st == 200, (st, body)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(body["link"]).query)
        assert q["client_id"] == [CLIENT_ID], body
        code = self.ctl("code", {})["code"]
        query = urllib.parse.urlencode({"code": code, "referer": REFERER,
                                        "state": q["state"][0], "client_id": CLIENT_ID})
        st, body = call("GET", self.base + "/webhook/create?" + query)
        assert st == 200, (st, body, self.host.log()[-2000:])
        return body

    def wait_synced(self):
        wait_for(lambda: self.api("GET", "/tags")[1]["count"] == 12, what="caches filled")

    def our_tag_ids(self, amo_ids):
        st, body = self.api("GET", "/tags?size=100")
        by_amo = {t["AmoID"]: t["ID"] for t in body["items"]}
        return [by_amo[x] for x in amo_ids]

    def save_rule(self, quiz=4242, method="POST"):
        req = fixture("rules_req.json")
        for k in req["TagsToAdd"]:
            req["TagsToAdd"][k] = self.our_tag_ids(req["TagsToAdd"][k])
        st, body = self.api(method, "/rules/%d" % quiz, req)
        assert st == 200, (st, body)

    def emit(self, *payloads):
        with open(self.host.path("in.jsonl"), "a") as f:
            for p in payloads:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")

    def quiz(self, **changes):
        p = fixture("quiz_result.json")
        p.update(changes)
        return p

    def metrics(self):
        with urllib.request.urlopen(self.host.admin_request("GET", "/metrics"), timeout=10) as r:
            return r.read().decode()

    def leads(self):
        return self.state()["leads"]

    def count(self, status, path=None):
        return sum(1 for t, m, p, s in self.state()["log"]
                   if s == status and (path is None or p.startswith(path)))


def test_example_config_checks():
    r = plexus("check", "-c", os.path.join(SOURCE, "etc", "examples", "amocrm.yaml"),
               env={"PLEXUS_PLUGIN_PATH": PLUGINS})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout + r.stderr


def test_fake_follows_the_reference():
    """The fake itself: single-use codes and refresh tokens, expiry, 204, rate limit."""
    fake = AmoFake(fixture("amocrm_data.json"), CLIENT_ID, SECRET, REDIRECT).start()
    try:
        def token(**kw):
            return call("POST", fake.url + "/oauth2/access_token",
                        dict(client_id=CLIENT_ID, client_secret=SECRET, redirect_uri=REDIRECT,
                             **kw))
        code = call("POST", fake.url + "/_fake/code", {})[1]["code"]
        st, pair = token(grant_type="authorization_code", code=code)
        assert st == 200 and pair["token_type"] == "Bearer" and pair["expires_in"] > 0
        assert token(grant_type="authorization_code", code=code)[0] == 400
        st, pair2 = token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
        assert st == 200 and pair2["refresh_token"] != pair["refresh_token"]
        st, body = token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
        assert st == 400 and body["hint"] == "Token has been revoked", body
        assert call("GET", fake.url + "/api/v4/users")[0] == 401
        assert call("GET", fake.url + "/api/v4/users", token=pair2["access_token"])[0] == 200
        assert call("GET", fake.url + "/api/v4/users?page=9",
                    token=pair2["access_token"])[0] == 204
        call("POST", fake.url + "/_fake/expire", {})
        assert call("GET", fake.url + "/api/v4/users", token=pair2["access_token"])[0] == 401
        st, pair3 = token(grant_type="refresh_token", refresh_token=pair2["refresh_token"])
        codes = [call("GET", fake.url + "/api/v4/account", token=pair3["access_token"])[0]
                 for _ in range(fake.rps + 3)]
        assert codes.count(200) <= fake.rps and 429 in codes, codes
        time.sleep(1.1)  # let the one-second window pass
        st, body = call("POST", fake.url + "/api/v4/leads/complex",
                        [{"pipeline_id": 123, "status_id": 2001}], token=pair3["access_token"])
        assert st == 400, (st, body)
        assert body["validation-errors"][0]["errors"][0]["path"] == "status_id", body
    finally:
        fake.stop()


def test_admin_api_codes_before_and_after_connect():
    with Env() as e:
        endpoints = [("POST", "/account"), ("GET", "/account"), ("DELETE", "/account"),
                     ("GET", "/users"), ("PATCH", "/users"), ("GET", "/pipelines"),
                     ("PATCH", "/pipelines"), ("GET", "/steps?pipelineID=123"),
                     ("PATCH", "/steps"), ("GET", "/fields"), ("PATCH", "/fields"),
                     ("GET", "/tags"), ("PATCH", "/tags"), ("GET", "/rules/1"),
                     ("POST", "/rules/1"), ("PATCH", "/rules/1")]
        for method, path in endpoints:
            assert e.api(method, path, token=None)[0] == 401, (method, path)
            assert e.api(method, path, token="wrong")[0] == 401, (method, path)
        assert e.api("GET", "/account") == (404, "no amoCRM account connected")
        assert e.api("GET", "/users") == (200, {"count": 0, "items": []})
        assert e.api("PATCH", "/users")[0] == 500
        assert e.api("GET", "/steps")[0] == 400
        assert e.api("GET", "/users?page=abc")[0] == 400
        assert e.api("GET", "/users?size=0")[0] == 400
        assert e.api("GET", "/rules/1")[0] == 404
        assert e.api("POST", "/rules/1", {"PipelineID": 123, "StepID": 1001})[0] == 404
        assert e.api("GET", "/rules/abc")[0] == 400
        assert e.api("GET", "/nothing")[0] == 404
        assert e.api("PUT", "/account")[0] == 405
        # the OAuth callback: needs a state from POST /account and an allowed referer
        code = e.ctl("code", {})["code"]
        st, _ = call("GET", e.base + "/webhook/create?code=%s&referer=%s" % (code, REFERER))
        assert st == 400
        link = e.api("POST", "/account")[1]["link"]
        state = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["state"][0]
        st, body = call("GET", e.base + "/webhook/create?" + urllib.parse.urlencode(
            {"code": code, "referer": "evil.example.com", "state": state}))
        assert st == 400 and "referer" in body, body
        assert e.state()["grants"]["authorization_code"] == 0, "a refused callback reached amoCRM"

        e.connect()
        st, acc = e.api("GET", "/account")
        want = fixture("account.json")
        assert st == 200
        for k in ("amoID", "name", "subdomain", "country", "driveURL", "deleted", "stale"):
            assert acc[k] == want[k], (k, acc)
        assert acc["accountID"] == "amo" and acc["id"] == 1 and acc["createdAt"], acc
        # an authorisation code and a state work once
        st, _ = call("GET", e.base + "/webhook/create?" + urllib.parse.urlencode(
            {"code": "x", "referer": REFERER, "state": state}))
        assert st == 400
        assert "client-secret" not in e.host.log() and "acc-" not in e.host.log()
        assert "ref-" not in e.host.log(), "a token reached the log"

        e.wait_synced()
        assert e.api("PATCH", "/users") == (200, "Success")
        assert e.api("GET", "/rules/999") == (404, "no rule for quiz 999")
        assert e.api("PATCH", "/rules/999", {"StepID": 1001})[0] == 404
        assert e.api("POST", "/rules/5", "not an object")[0] == 400
        assert e.api("DELETE", "/account") == (200, "Success")
        assert e.api("GET", "/account")[0] == 404
        assert e.api("POST", "/rules/5", {"PipelineID": 123, "StepID": 1001})[0] == 404
        assert e.api("PATCH", "/tags")[0] == 500
        e.connect()
        st, acc = e.api("GET", "/account")
        assert st == 200 and acc["id"] == 2 and not acc["deleted"], acc


def test_connect_cache_pagination_rules_and_lead():
    with Env(max_limit=2) as e:
        e.connect()
        e.wait_synced()
        st, users = e.api("GET", "/users")
        assert st == 200 and users["count"] == 5, users
        assert {u["amoUserID"] for u in users["items"]} == {7001, 7002, 7003, 7004, 7005}
        assert all(u["amoID"] == 30120394 for u in users["items"])
        # the fake lists 2 per page: users took pages 1..3 by _links.next, and 204 ends tags
        pages = [p for t, m, p, s in e.state()["log"] if p.startswith("/api/v4/users")]
        assert [urllib.parse.parse_qs(urllib.parse.urlparse(p).query)["page"][0]
                for p in pages] == ["1", "2", "3"], pages
        st, page = e.api("GET", "/users?page=2&size=2")
        assert page["count"] == 5 and len(page["items"]) == 2
        assert [u["amoUserID"] for u in page["items"]] == [7003, 7004]
        assert e.api("GET", "/users?page=9")[1] == {"count": 5, "items": []}
        st, pipes = e.api("GET", "/pipelines")
        assert pipes["count"] == 3 and {p["AmoID"] for p in pipes["items"]} == {123, 124, 125}
        st, steps = e.api("GET", "/steps?pipelineID=123")
        assert steps["count"] == 4, steps
        assert {s["AmoID"] for s in steps["items"]} == {1001, 1002, 142, 143}
        assert e.api("GET", "/steps?pipelineID=124")[1]["count"] == 3
        st, fields = e.api("GET", "/fields?size=100")
        assert fields["count"] == 11, fields
        sel = [f for f in fields["items"] if f["AmoID"] == 502][0]
        assert sel["EntityType"] == "leads" and sel["Type"] == "select"
        ids_before = {(t["Entity"], t["AmoID"]): t["ID"]
                      for t in e.api("GET", "/tags?size=50")[1]["items"]}

        # a tag added in amoCRM shows after PATCH /tags, the others keep their IDs
        data = fixture("amocrm_data.json")["tags"]
        data["leads"].append({"id": 104, "name": "новый", "color": None})
        e.ctl("data", {"tags": data})
        assert e.api("PATCH", "/tags") == (200, "Success")
        after = {(t["Entity"], t["AmoID"]): t["ID"]
                 for t in e.api("GET", "/tags?size=50")[1]["items"]}
        assert len(after) == 13 and all(after[k] == v for k, v in ids_before.items()), after
        # companies lose their tags: amoCRM answers 204, the cached ones become Deleted ...
        e.ctl("data", {"tags": dict(data, companies=[])})
        assert e.api("PATCH", "/tags") == (200, "Success")
        assert e.api("GET", "/tags?size=50")[1]["count"] == 10
        assert any(p.startswith("/api/v4/companies/tags") and s == 204
                   for t, m, p, s in e.state()["log"])
        # ... and come back under the same IDs
        e.ctl("data", {"tags": data})
        assert e.api("PATCH", "/tags") == (200, "Success")
        again = {(t["Entity"], t["AmoID"]): t["ID"]
                 for t in e.api("GET", "/tags?size=50")[1]["items"]}
        assert again == after, again

        # rules: validated against the cache
        base = fixture("rules_req.json")
        for k in base["TagsToAdd"]:
            base["TagsToAdd"][k] = e.our_tag_ids(base["TagsToAdd"][k])
        for change, word in ((("StepID", 2001), "StepID 2001"),
                             (("PipelineID", 999), "PipelineID 999"),
                             (("PipelineID", 125), "archived"),
                             (("PerformerID", 9), "PerformerID 9")):
            bad = dict(base)
            bad[change[0]] = change[1]
            if change[0] == "PipelineID" and change[1] == 125:
                bad["StepID"] = 3001
            st, body = e.api("POST", "/rules/4242", bad)
            assert st == 400 and word in body, (change, st, body)
        bad = json.loads(json.dumps(base))
        bad["Fieldsrule"]["Lead"]["QuestionID"]["19"] = 601
        st, body = e.api("POST", "/rules/4242", bad)
        assert st == 400 and "601" in body and "leads" in body, body
        bad = json.loads(json.dumps(base))
        bad["TagsToAdd"]["Lead"] = [99999]
        st, body = e.api("POST", "/rules/4242", bad)
        assert st == 400 and "99999" in body, body
        assert e.api("GET", "/rules/4242")[0] == 404

        e.save_rule(4242)
        assert e.api("POST", "/rules/4242", base)[0] == 400, "a second rule for the same quiz"
        st, rule = e.api("GET", "/rules/4242")
        assert st == 200 and rule["QuizID"] == 4242 and rule["AccountID"] == 30120394
        assert rule["PipelineID"] == 123 and rule["StepID"] == 1002
        assert rule["FieldsRule"]["lead"]["QuestionID"]["12"] == 502
        assert rule["FieldsRule"]["contact"]["ContactRuleMap"] == {"position": 604}
        assert e.api("PATCH", "/rules/4242", {"StepID": 1001}) == (200, "Success")
        assert e.api("PATCH", "/rules/4242", {"StepID": 2001})[0] == 400
        assert e.api("GET", "/rules/4242")[1]["StepID"] == 1001
        assert e.api("PATCH", "/rules/4242", {"StepID": 1002}) == (200, "Success")
        wait_for(lambda: len(open(e.host.path("rules.jsonl")).readlines()) == 3
                 if os.path.exists(e.host.path("rules.jsonl")) else False,
                 what="3 amocrm.rule.saved events")
        events = [json.loads(x) for x in open(e.host.path("rules.jsonl"))]
        assert [x["type"] for x in events] == ["amocrm.rule.saved"] * 3
        assert [x["payload"]["created"] for x in events] == [True, False, False]
        assert events[1]["payload"]["rule"]["StepID"] == 1001

        # one quiz result -> exactly one lead, shaped by the rule
        e.emit(e.quiz())
        wait_for(lambda: len(e.leads()) == 1, what="the lead")
        time.sleep(0.5)
        st = e.state()
        assert len(st["leads"]) == 1, st["leads"]
        lead = st["leads"][0]
        assert lead["name"] == "Quiz 4242 #0"
        assert (lead["pipeline_id"], lead["status_id"], lead["responsible_user_id"]) == \
            (123, 1002, 7002)
        cf = {x.get("field_id", x.get("field_code")): x["values"]
              for x in lead["custom_fields_values"]}
        assert cf == {501: [{"value": 150000}], 502: [{"enum_id": 5022}],
                      503: [{"value": "Хочу светлую кухню"}],
                      504: [{"enum_id": 5041}, {"enum_id": 5043}], 505: [{"value": True}],
                      "UTM_SOURCE": [{"value": "yandex"}],
                      "UTM_CAMPAIGN": [{"value": "spring"}]}, cf
        assert lead["_embedded"]["tags"] == [{"id": 101}, {"id": 102}]
        contact = lead["_embedded"]["contacts"][0]
        assert contact["name"] == "Анна Ли" and contact["responsible_user_id"] == 7002
        ccf = {x.get("field_id", x.get("field_code")): x["values"]
               for x in contact["custom_fields_values"]}
        assert ccf == {"PHONE": [{"value": "+79990000000", "enum_code": "WORK"}],
                       "EMAIL": [{"value": "anna@example.com", "enum_code": "WORK"}],
                       604: [{"value": "Директор"}], 603: [{"value": "Москва"}]}, ccf
        assert contact["_embedded"]["tags"] == [{"id": 201}]
        company = lead["_embedded"]["companies"][0]
        assert company["name"] == "Ромашка"
        assert company["custom_fields_values"] == [{"field_id": 701,
                                                    "values": [{"value": "7700000000"}]}]
        assert company["_embedded"]["tags"] == [{"id": 301}]
        assert st["contacts"][0]["id"] and st["companies"][0]["id"]

        # no rule -> dead letter with that reason; amoCRM's 400 -> dead letter with its errors
        e.emit(e.quiz(quiz_id=777))
        bad = e.quiz()
        bad["answers"] = dict(bad["answers"], **{"12": "Кухня"})
        e.emit(bad)
        wait_for(lambda: "no rule for quiz 777" in e.host.log(), what="no-rule dead letter")
        wait_for(lambda: "NotSupportedChoice" in e.host.log(), what="validation dead letter")
        time.sleep(0.3)
        assert len(e.leads()) == 1
        e.host.stop()
        r = plexus("dlq", "list", "--json", "-c", e.host.config)
        dl = json.loads(r.stdout)
        reasons = sorted(x["reason"] for x in dl)
        assert len(dl) == 2, dl
        assert reasons[1] == "rejected: no rule for quiz 777", reasons
        assert "amocrm 400" in reasons[0] and ".values.0.value" in reasons[0], reasons


def test_refresh_before_expiry_and_restart():
    with Env(expires_in=4) as e:
        e.connect()
        e.wait_synced()
        e.save_rule()
        # 4 s tokens: the plugin renews each at half its life, before amoCRM would refuse it
        wait_for(lambda: e.state()["grants"]["refresh_token"] >= 2, timeout=15,
                 what="two refreshes ahead of expiry")
        # a hot reload hands the token life cycle to the new generation without a refused refresh
        e.host.write_config(CONFIG % dict(e.vars, rate=39))
        e.host.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "generation 2 serving (plugin amocrm" in e.host.log(),
                 what="reloaded amocrm")
        n = e.state()["grants"]["refresh_token"]
        wait_for(lambda: e.state()["grants"]["refresh_token"] >= n + 2, timeout=15,
                 what="refreshes after the reload")
        e.emit(e.quiz())
        wait_for(lambda: len(e.leads()) == 1, what="lead")
        st = e.state()
        assert st["grants"]["refused"] == 0
        assert e.count(401) == 0, "a request went out with an expired token"
        # the stored pair survives a restart: no new authorisation needed
        e.host.stop()
        refreshes = e.state()["grants"]["refresh_token"]
        e.start()
        assert e.api("GET", "/account")[1]["stale"] is False
        e.emit(e.quiz())
        wait_for(lambda: len(e.leads()) == 2, what="lead after restart")
        st = e.state()
        assert st["grants"]["authorization_code"] == 1 and st["grants"]["refused"] == 0
        assert st["grants"]["refresh_token"] >= refreshes


def test_burst_with_token_expiry_refreshes_once():
    with Env(rate=40, fake_rps=50) as e:
        e.connect()
        e.wait_synced()
        e.save_rule()
        n = 200
        e.emit(*[e.quiz() for _ in range(n)])
        wait_for(lambda: len(e.leads()) >= 40, what="first leads")
        e.ctl("expire", {})
        wait_for(lambda: len(e.leads()) >= n, timeout=60, what="all leads")
        time.sleep(0.5)
        st = e.state()
        names = [x["name"] for x in st["leads"]]
        assert len(names) == n and len(set(names)) == n, "lost or duplicated leads"
        assert set(names) == {"Quiz 4242 #%d" % i for i in range(n)}
        assert st["grants"]["refresh_token"] == 1, st["grants"]
        assert e.count(401) >= 1, "the expiry was not noticed"
        assert e.count(429) == 0, "the plugin's rate limit let a burst through"


def test_refused_refresh_marks_stale_then_reconnect_resumes():
    with Env() as e:
        e.connect()
        e.wait_synced()
        e.save_rule()
        e.ctl("revoke", {})
        e.ctl("expire", {})
        e.emit(*[e.quiz() for _ in range(3)])
        wait_for(lambda: e.api("GET", "/account")[1]["stale"] is True, what="stale account")
        # Deliveries keep retrying meanwhile (counted, not timed); the refresh must not loop.
        retries = e.host.log().count("retry id=")
        wait_for(lambda: e.host.log().count("retry id=") >= retries + 6, timeout=60,
                 what="six more retries while the account is stale")
        st = e.state()
        assert st["grants"]["refused"] == 1, st["grants"]
        assert st["leads"] == []
        assert "dead letter" not in e.host.log()
        assert "account is stale" in e.host.log()
        assert e.api("PATCH", "/users")[0] == 500
        assert re.search(r'plexus_plugin_amocrm_account_stale\{instance="amo"[^}]*\} 1\b', e.metrics())
        e.connect()
        assert e.api("GET", "/account")[1]["stale"] is False
        assert re.search(r'plexus_plugin_amocrm_account_stale\{instance="amo"[^}]*\} 0\b', e.metrics())
        wait_for(lambda: len(e.leads()) == 3, timeout=20, what="leads after reconnect")
        time.sleep(0.5)
        names = sorted(x["name"] for x in e.leads())
        assert names == ["Quiz 4242 #0", "Quiz 4242 #1", "Quiz 4242 #2"], names
        assert "dead letter" not in e.host.log()


def test_error_mappings_429_5xx_401_and_rate_limit():
    with Env(rate=3, fake_rps=4) as e:
        e.connect()
        e.wait_synced()
        e.save_rule()
        e.ctl("fail", {"path": "/api/v4/leads/complex", "status": 429, "count": 1,
                       "retry_after": 2})
        e.emit(e.quiz())
        wait_for(lambda: len(e.leads()) == 1, what="lead after 429")
        posts = [(t, s) for t, m, p, s in e.state()["log"] if p == "/api/v4/leads/complex"]
        assert [s for _, s in posts] == [429, 200], posts
        assert posts[1][0] - posts[0][0] >= 1.9, "Retry-After not honoured"

        e.ctl("fail", {"path": "/api/v4/leads/complex", "status": 503, "count": 1})
        e.emit(e.quiz())
        wait_for(lambda: len(e.leads()) == 2, what="lead after 503")

        refreshes = e.state()["grants"]["refresh_token"]
        e.ctl("fail", {"path": "/api/v4/leads/complex", "status": 401, "count": 1})
        e.emit(e.quiz())
        wait_for(lambda: len(e.leads()) == 3, what="lead after 401")
        assert e.state()["grants"]["refresh_token"] == refreshes + 1

        # 10 leads at the plugin's 3 rps never trip the fake's 4 rps window
        before = e.count(429)
        e.emit(*[e.quiz() for _ in range(10)])
        wait_for(lambda: len(e.leads()) == 13, timeout=30, what="rate-limited leads")
        assert e.count(429) == before
        names = [x["name"] for x in e.leads()]
        assert len(set(names)) == 13
        assert "dead letter" not in e.host.log()


def test_reload_while_requests_wait_on_amocrm():
    with Env() as e:
        e.connect()
        e.wait_synced()
        e.save_rule()
        e.ctl("fail", {"path": "/api/v4/users", "delay": 3, "count": 1})
        e.ctl("fail", {"path": "/api/v4/leads/complex", "delay": 3, "count": 1})
        e.emit(e.quiz())
        out = {}
        th = threading.Thread(target=lambda: out.update(r=e.api("PATCH", "/users")))
        th.start()
        wait_for(lambda: e.state()["count"].get("200", 0) and
                 any(f.get("count") == 0 for f in e.fake.fails), what="calls in flight")
        time.sleep(0.3)
        e.host.write_config(CONFIG % dict(e.vars, rate=39))
        e.host.proc.send_signal(signal.SIGHUP)
        th.join(30)
        # the old generation answers what it holds and drops nothing it was delivering
        assert out["r"][0] in (200, 503), out
        wait_for(lambda: "generation 2 serving (plugin amocrm" in e.host.log(), what="reload")
        wait_for(lambda: len(e.leads()) >= 1, timeout=20, what="the lead")
        assert e.api("GET", "/account")[0] == 200
        assert e.api("PATCH", "/users") == (200, "Success")
        e.emit(e.quiz())
        wait_for(lambda: len({x["name"] for x in e.leads()}) == 2, what="second lead")


def test_disconnect_hook_soft_deletes():
    with Env() as e:
        e.connect()
        e.wait_synced()
        e.save_rule()
        acc = str(fixture("amocrm_data.json")["account"]["id"])

        def hook(account_id, uuid=CLIENT_ID, key=SECRET):
            sig = hmac.new(key.encode(), ("%s|%s" % (uuid, account_id)).encode(),
                           hashlib.sha256).hexdigest()
            return call("GET", e.base + "/webhook/delete?" + urllib.parse.urlencode(
                {"account_id": account_id, "client_uuid": uuid, "signature": sig}))[0]

        assert hook(acc, key="not-the-secret") == 401
        assert hook(acc, uuid="another-client") == 401
        assert hook("12345") == 404
        assert e.api("GET", "/account")[0] == 200
        assert hook(acc) == 200
        assert e.api("GET", "/account")[0] == 404
        e.emit(e.quiz())
        wait_for(lambda: "no amoCRM account connected" in e.host.log(), what="retry, no account")
        assert e.leads() == [] and "dead letter" not in e.host.log()
        e.connect()
        wait_for(lambda: len(e.leads()) == 1, timeout=20, what="lead after reconnect")


def disconnect_hook(e, account_id):
    sig = hmac.new(SECRET.encode(), ("%s|%s" % (CLIENT_ID, account_id)).encode(),
                   hashlib.sha256).hexdigest()
    return call("GET", e.base + "/webhook/delete?" + urllib.parse.urlencode(
        {"account_id": account_id, "client_uuid": CLIENT_ID, "signature": sig}))


def test_api_prefix_root_serves_every_seed_endpoint():
    """api_prefix "/" serves the OpenAPI document's paths at the root of the listener."""
    with Env(prefix="/", served_at="") as e:
        e.connect()
        e.wait_synced()
        seen = []

        def expect(method, path, want, body=None):
            st, answer = e.api(method, path, body)
            seen.append((method, path.split("?")[0], st))
            assert st == want, (method, path, st, answer)
            return answer

        expect("GET", "/account", 200)
        assert "link" in expect("POST", "/account", 200)
        for name in ("users", "pipelines", "fields", "tags"):
            assert expect("GET", "/" + name, 200)["count"] > 0, name
        assert expect("GET", "/steps?pipelineID=123", 200)["count"] == 4
        for name in ("users", "pipelines", "steps", "fields", "tags"):
            assert expect("PATCH", "/" + name, 200) == "Success", name
        e.save_rule(4242)
        seen.append(("POST", "/rules/4242", 200))
        assert expect("GET", "/rules/4242", 200)["StepID"] == 1002
        assert expect("PATCH", "/rules/4242", 200, {"StepID": 1001}) == "Success"
        assert expect("DELETE", "/account", 200) == "Success"
        e.connect()
        seen.append(("GET", "/webhook/create", 200))
        acc = str(fixture("amocrm_data.json")["account"]["id"])
        assert disconnect_hook(e, acc)[0] == 200
        seen.append(("GET", "/webhook/delete", 200))
        # every (method, path) of the document answered
        assert len({(m, p.replace("4242", "{quizID}")) for m, p, _ in seen}) == 18, seen
        # the prefix is joined without a second slash: the doubled path is not an endpoint
        assert e.api("GET", "//account") == (404, "Not Found")
        assert e.api("GET", "/nothing") == (404, "Not Found")
        assert e.api("PUT", "/account")[0] == 405


def test_api_prefix_spellings_resolve_to_one_path():
    """"" means the root; repeated and trailing slashes collapse."""
    for prefix, served_at in (("", ""), ("//quiz//amo/", "/quiz/amo"), ("/amocrm///", "/amocrm")):
        with Env(prefix=prefix, served_at=served_at) as e:
            assert e.api("GET", "/account") == (404, "no amoCRM account connected"), prefix
            assert e.api("POST", "/account")[0] == 200, prefix
            assert call("GET", e.base + "/webhook/create")[0] == 400, prefix
            assert e.api("GET", "/rules/1") == (404, "no rule for quiz 1"), prefix


SECOND_ACCOUNT = {"id": 30555001, "name": "Second", "subdomain": "second", "country": "RU",
                  "currency": "RUB", "current_user_id": 7001,
                  "drive_url": "https://drive-c.amocrm.ru"}


def switch_account(e, account):
    """Makes the fake answer as `account` and connects it (replacing the connected one)."""
    e.ctl("data", {"account": account})
    e.connect()
    assert e.api("GET", "/account")[1]["amoID"] == account["id"]
    e.wait_synced()


def assert_rules_kept_per_account(e, first):
    """Account B saves a rule for the quiz account A (`first`) has one for: each keeps its own."""
    st, mine = e.api("GET", "/rules/4242")
    assert st == 200 and mine["AccountID"] == first["id"] and mine["StepID"] == 1002, mine
    switch_account(e, SECOND_ACCOUNT)
    assert e.api("GET", "/rules/4242") == (404, "no rule for quiz 4242")
    assert e.api("PATCH", "/rules/4242", {"StepID": 1001})[0] == 404
    req = fixture("rules_req.json")
    req["TagsToAdd"] = {}
    req["StepID"] = 1001
    assert e.api("POST", "/rules/4242", req) == (200, "Success")
    st, theirs = e.api("GET", "/rules/4242")
    assert st == 200 and theirs["AccountID"] == SECOND_ACCOUNT["id"], theirs
    assert theirs["StepID"] == 1001 and theirs["ID"] != mine["ID"], theirs
    assert e.api("PATCH", "/rules/4242", {"PerformerID": 7003}) == (200, "Success")
    switch_account(e, first)
    assert e.api("GET", "/rules/4242") == (200, mine), "account A's rule was changed"
    e.emit(e.quiz())
    wait_for(lambda: len(e.leads()) == 1, what="account A's lead")
    lead = e.leads()[0]
    assert (lead["status_id"], lead["responsible_user_id"]) == (1002, 7002), lead
    # stored apart: both survive a restart
    e.host.stop()
    e.start()
    assert e.api("GET", "/rules/4242") == (200, mine)
    switch_account(e, SECOND_ACCOUNT)
    st, theirs = e.api("GET", "/rules/4242")
    assert st == 200 and (theirs["StepID"], theirs["PerformerID"]) == (1001, 7003), theirs


def test_rules_are_kept_per_account_and_quiz():
    with Env() as e:
        first = fixture("amocrm_data.json")["account"]
        e.connect()
        e.wait_synced()
        e.save_rule(4242)
        assert_rules_kept_per_account(e, first)


def test_rules_stored_by_quiz_only_are_migrated_to_their_account():
    """Rules stored before they were keyed by account: found again for the account they name."""
    import sqlite3
    with Env() as e:
        first = fixture("amocrm_data.json")["account"]
        e.connect()
        e.wait_synced()
        e.save_rule(4242)
        e.host.stop()
        db = sqlite3.connect(e.host.path("var", "spool.db"))
        try:
            (raw,) = db.execute("SELECT value FROM kv WHERE instance='amo' AND key='rules'")\
                .fetchone()
            rule = [r for r in json.loads(raw).values() if r["QuizID"] == 4242][0]
            orphan = dict(rule, QuizID=77)
            del orphan["AccountID"]
            # 4243 only under its quiz id; 4242 under both keys (the account's key wins)
            old = {"30120394:4242": rule, "4242": dict(rule, StepID=1001),
                   "4243": dict(rule, QuizID=4243, ID=99), "77": orphan}
            db.execute("UPDATE kv SET value=? WHERE instance='amo' AND key='rules'",
                       (json.dumps(old),))
            db.commit()
        finally:
            db.close()
        e.start()
        assert "rules migrated to account keys count=2" in e.host.log(), e.host.log()[-2000:]
        assert "rule without an account kept unused quiz=77" in e.host.log()
        st, moved = e.api("GET", "/rules/4243")
        assert st == 200 and (moved["ID"], moved["AccountID"]) == (99, first["id"]), moved
        assert e.api("GET", "/rules/77") == (404, "no rule for quiz 77")
        assert_rules_kept_per_account(e, first)
        e.host.stop()
        db = sqlite3.connect(e.host.path("var", "spool.db"))
        try:
            (raw,) = db.execute("SELECT value FROM kv WHERE instance='amo' AND key='rules'")\
                .fetchone()
        finally:
            db.close()
        stored = json.loads(raw)
        assert sorted(stored) == ["30120394:4242", "30120394:4243", "30555001:4242", "77"], \
            sorted(stored)
        assert stored["77"] == orphan


if __name__ == "__main__":
    run_all(globals())
