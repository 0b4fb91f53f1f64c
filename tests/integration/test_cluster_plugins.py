"""Bundled plugins on several hosts sharing one PostgreSQL store (pg.py): amoCRM with short-lived
single-use tokens while leads flow through three hosts (one refresh at a time cluster-wide, no
refused refresh, no lead lost, the account's rate split across the hosts), and Ploomes webhook
registration by three hosts starting at once (one subscription per entity/action)."""
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import urllib.request

from harness import Host, run_all, wait_for
from pg import Postgres

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
from amocrm_fake import AmoFake  # noqa: E402
from test_amocrm import (CLIENT_ID, REDIRECT, REFERER, SECRET, TOKEN, call,  # noqa: E402
                         fixture)
from test_cluster import BASE  # noqa: E402  (one host config, per-host values from the environment)
from test_ploomes import Fake as PloomesFake  # noqa: E402

AMO = BASE + """plugins:
  quiz: { plugin: testsource, config: { input_file: "${PX_DATA}/in.jsonl" } }
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
      stale_retry: 1s
pipelines:
  - name: quiz-to-amo
    from: quiz
    when: { type: quiz.result }
    to:
      sink: amo
      action: create_lead
      with:
        quiz_id: "{{/quiz_id}}"
        name: "Quiz {{/quiz_id}} #{{/n}}"
        answers: "{{/answers}}"
        contact: "{{/contact?}}"
    retry: { attempts: 1000, backoff: 200ms, max_backoff: 1s, jitter: 0 }
"""

PLOOMES = BASE + """plugins:
  crm:
    plugin: ploomes
    config:
      validation_key: vk-registered
      user_key: uk-main-key
      base_url: "%(fake)s"
      callback_url: "https://plexus.example.com/ploomes/webhook"
      subscriptions: [Deals.Win, Deals.Lose, Contacts.Create]
      rate_limit: 0
"""

TOKEN_LIFE = 2      # seconds an access token lives (refreshed at half of it)
FLOW_SECONDS = 12   # how long leads flow while tokens turn over


def host_env(pg, h, name):
    return {"PX_PG_URL": pg.url, "PX_HOST_ID": name, "PX_DATA": h.tmp}


def start_all(pg, text, names):
    """Starts one host per name at once (no waiting in between), then waits for every one."""
    hosts = []
    try:
        for name in names:
            h = Host(text)
            hosts.append(h)
            h.start(wait=False, env=host_env(pg, h, name))
        for h in hosts:
            wait_for(lambda: "\"started" in h.log() or h.proc.poll() is not None,
                     what="host start")
            assert h.proc.poll() is None, h.log()[-3000:]
    except BaseException:
        for h in hosts:
            h._kill()
        raise
    return hosts


def api(h, method, path, body=None):
    return call(method, "http://127.0.0.1:%d/amocrm%s" % (h.http_port(), path), body, TOKEN)


def metric(h, name):
    with urllib.request.urlopen(h.admin_request("GET", "/metrics"), timeout=10) as r:
        m = re.search(r'^%s\{[^}]*instance="amo"[^}]*\} (\S+)$' % name, r.read().decode(), re.M)
    return float(m.group(1)) if m else None


def quiz(seq):
    p = fixture("quiz_result.json")
    p["n"] = seq
    return p


def test_amocrm_three_hosts_short_tokens_rate_split():
    fake = AmoFake(fixture("amocrm_data.json"), CLIENT_ID, SECRET, REDIRECT).start()
    try:
        fake.expires_in = TOKEN_LIFE
        with Postgres() as pg:
            text = AMO % {"client_id": CLIENT_ID, "secret": SECRET, "redirect": REDIRECT,
                          "token": TOKEN, "fake": fake.url}
            hosts = start_all(pg, text, ["a", "b", "c"])
            try:
                run_amocrm(fake, hosts)
                for h in hosts:
                    h.stop()  # a clean stop: sanitizer reports (leaks) fail the test
            finally:
                for h in hosts:
                    h._kill()
    finally:
        fake.stop()


def fake_state(fake):
    return call("GET", fake.url + "/_fake/state")[1]


def run_amocrm(fake, hosts):
    a, b, c = hosts
    # the rate of the account (6/s by default) is split across the three live hosts
    wait_for(lambda: all(metric(h, "plexus_plugin_amocrm_rate_limit") == 2 for h in hosts),
             timeout=30, what="every host at a third of the rate")
    # the OAuth state is made on a and used up on b: it lives in the shared store
    st, body = api(a, "POST", "/account")
    assert st == 200, (st, body)
    state = urllib.parse.parse_qs(urllib.parse.urlparse(body["link"]).query)["state"][0]
    code = call("POST", fake.url + "/_fake/code", {})[1]["code"]
    query = urllib.parse.urlencode({"code": code, "referer": REFERER, "state": state,
                                    "client_id": CLIENT_ID})
    st, body = call("GET", "http://127.0.0.1:%d/amocrm/webhook/create?%s" % (b.http_port(), query))
    assert st == 200, (st, body, b.log()[-2000:])
    # ...and only once, whichever host sees it again
    st, _ = call("GET", "http://127.0.0.1:%d/amocrm/webhook/create?%s" % (c.http_port(), query))
    assert st == 400, st
    # caches filled by b are served by c, and the rule saved on c is used by every host
    wait_for(lambda: api(c, "GET", "/tags")[1]["count"] == 12, timeout=30, what="caches on c")
    req = fixture("rules_req.json")
    tags = {t["AmoID"]: t["ID"] for t in api(c, "GET", "/tags?size=100")[1]["items"]}
    for k in req["TagsToAdd"]:
        req["TagsToAdd"][k] = [tags[x] for x in req["TagsToAdd"][k]]
    st, body = api(c, "POST", "/rules/4242", req)
    assert st == 200, (st, body)
    # rules get ids from one counter: a second quiz's rule saved on a gets the next one
    st, _ = api(a, "POST", "/rules/4243", req)
    assert st == 200
    ids = {api(h, "GET", "/rules/%d" % q)[1]["ID"] for h in hosts for q in (4242, 4243)}
    assert len(ids) == 2, ids
    call("POST", fake.url + "/_fake/reset_rate", {})
    refreshes = fake_state(fake)["grants"]["refresh_token"]
    # leads flow through all three hosts while the 2 s tokens turn over
    sent, stop = [], threading.Event()

    def feed():
        seq = 0
        end = time.monotonic() + FLOW_SECONDS
        while time.monotonic() < end and not stop.is_set():
            h = hosts[seq % 3]
            with open(h.path("in.jsonl"), "a") as f:
                f.write(json.dumps(quiz(seq)) + "\n")
            sent.append(seq)
            seq += 1
            stop.wait(0.125)  # 8 leads/s: more than the account takes (not a synchronisation)

    t = threading.Thread(target=feed)
    t.start()
    try:
        t.join()
    finally:
        stop.set()
        t.join()
    want = {"Quiz 4242 #%d" % i for i in sent}
    wait_for(lambda: {x["name"] for x in fake_state(fake)["leads"]} >= want, timeout=60,
             what="every lead created")
    st = fake_state(fake)
    names = [x["name"] for x in st["leads"]]
    assert len(names) == len(want) and set(names) == want, "lost or duplicated leads"
    assert st["grants"]["refused"] == 0, st["grants"]  # no invalid_grant, ever
    assert st["grants"]["refresh_token"] - refreshes >= FLOW_SECONDS // TOKEN_LIFE, st["grants"]
    assert st["per_second"] <= 7, "amoCRM saw %d requests in one second" % st["per_second"]
    for h in hosts:
        assert api(h, "GET", "/account")[1]["stale"] is False
        assert metric(h, "plexus_plugin_amocrm_account_stale") == 0
    refreshed_by = [h.log().count("access token refreshed") for h in hosts]
    print("  leads=%d refreshes=%d by_host=%s max_per_second=%d" % (
        len(names), st["grants"]["refresh_token"], refreshed_by, st["per_second"]))


def test_ploomes_three_hosts_register_once():
    with PloomesFake("uk-main-key") as fake:
        fake.control("config", {"delay": 0.3})  # a slow API: the three passes overlap
        with Postgres() as pg:
            hosts = start_all(pg, PLOOMES % {"fake": fake.url}, ["a", "b", "c"])
            try:
                for h in hosts:
                    wait_for(lambda: "webhooks in sync" in h.log(), timeout=60,
                             what="registration pass on every host")
                for h in hosts:
                    h.stop()
            finally:
                for h in hosts:
                    h._kill()
        hooks = fake.account("uk-main-key")["webhooks"]
        pairs = sorted((w["EntityId"], w["ActionId"]) for w in hooks)
        assert len(pairs) == 3 and len(set(pairs)) == 3, pairs
        posts = [r for r in fake.requests() if r["method"] == "POST" and r["path"] == "/Webhooks"]
        assert len(posts) == 3, len(posts)


if __name__ == "__main__":
    run_all(globals())
