"""Secrets never leak: one run configures a secret wherever the configuration takes one (admin
token, every PX_OPT_SECRET option of the bundled plugins, a broker URL with a password), drives
traffic including failures (wrong tokens and keys, refused signatures, rejected deliveries into the
dead letters, an unreachable broker, a refused API key), then greps every output for each secret
value: the host log (at debug level), /admin/status, /metrics, `plexus status`, `plexus dlq list`
and `show` of every dead letter, and `plexus check` on configurations whose secret options are
wrong."""
import hashlib
import hmac
import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

from harness import SOURCE, Host, plexus, read_jsonl, require_plugin, run_all, wait_for

FAKES = os.path.join(SOURCE, "tests", "fakes")
FIXTURES = os.path.join(SOURCE, "tests", "fixtures")
sys.path.insert(0, os.path.dirname(__file__))

SECRETS = {
    "admin_token": "adm-T0ken-5ecret-a1b2",
    "webhook_token": "wh-T0ken-5ecret-c3d4",
    "webhook_hmac": "wh-Hmac-5ecret-e5f6",
    "ploomes_validation_key": "pl-Vk-5ecret-a7b8",
    "ploomes_user_key": "pl-Uk-5ecret-c9d0",
    "ploomes_bad_user_key": "pl-BadUk-5ecret-e1f2",
    "amocrm_client_secret": "amo-Cs-5ecret-a3b4",
    "amocrm_api_token": "amo-Tok-5ecret-c5d6",
    "notification_password": "nt-Pw-5ecret-e7f8",
    "notification_url_password": "nt-UrlPw-5ecret-a9b0",
    "notification_api_key": "nt-Key-5ecret-c1d2",
    "notification_aws_secret": "nt-Aws-5ecret-e3f4",
    "ezzing_access_key": "AKIA5ECRETEZ00112233",
    "ezzing_secret_key": "ez-Sk-5ecret-a5b6/c7d8+e9",
    "testsink_token": "ts-Tok-5ecret-f0a1",
}
AMO_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
AMO_REDIRECT = "https://quiz.example.com/amocrm/webhook/create"


def assert_clean(what, text):
    for name, value in SECRETS.items():
        # the secret itself, and the halves of it: a cut copy is a leak too
        for probe in (value, value[:len(value) // 2 + 2], value[len(value) // 2 - 2:]):
            assert probe not in text, f"secret {name} found in {what}:\n" + \
                text[max(0, text.index(probe) - 300):text.index(probe) + 300]


def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body, h)
    r = c.getresponse()
    data = r.read()
    hdrs = "\n".join(f"{k}: {v}" for k, v in r.getheaders())
    c.close()
    return r.status, data.decode(errors="replace"), hdrs


class Proc:
    """A fake API (python3 tests/fakes/X.py ARGS) that prints its port first."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, method, path, body=None):
        st, text, _ = request(self.port, method, path, body)
        return st, (json.loads(text) if text.strip() else None)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


CFG_HEAD = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 2s
  log: { level: debug }
  http: { listen: "127.0.0.1:0" }
  admin: { listen: "127.0.0.1:0", token: "%(admin_token)s" }
plugins:
  feed: { plugin: testsource, config: { input_file: "@TMP@/in.jsonl" } }
  rec:
    plugin: testsink
    config: { file: "@TMP@/rec.jsonl", secret_token: "%(testsink_token)s" }
  refuse:
    plugin: testsink
    config: { file: "@TMP@/refuse.jsonl", fail: reject, secret_token: "%(testsink_token)s" }
  hook:
    plugin: webhook
    config: { path: /hook, token: "%(webhook_token)s", meta_headers: [x-signature-256, user-agent] }
  signed:
    plugin: webhook
    config: { path: /signed, hmac_secret: "%(webhook_hmac)s",
              meta_headers: [authorization, x-signature-256] }
"""
CFG_PIPES = """pipelines:
  - { name: hooks, from: hook, to: [{ sink: rec }, { sink: refuse }] }
  - { name: signed-refused, from: signed, to: { sink: refuse } }
"""


def build_config(fakes):
    plugins = CFG_HEAD % SECRETS
    pipes = CFG_PIPES
    if "ploomes" in fakes:
        plugins += f"""  pl-in:
    plugin: ploomes
    config: {{ validation_key: "{SECRETS['ploomes_validation_key']}", path: /ploomes }}
  pl-out:
    plugin: ploomes
    config: {{ user_key: "{SECRETS['ploomes_user_key']}", base_url: "{fakes['ploomes'].url}" }}
  pl-bad:
    plugin: ploomes
    config: {{ user_key: "{SECRETS['ploomes_bad_user_key']}",
              base_url: "{fakes['ploomes'].url}" }}
"""
        pipes += """  - { name: pl-hooks, from: pl-in, to: { sink: rec } }
  - name: pl-create
    from: feed
    when: { match: { /op: pl } }
    to: { sink: pl-out, action: create_contact, with: { Email: "{{/email}}" } }
    retry: { attempts: 2, backoff: 100ms, jitter: 0 }
  - name: pl-badkey
    from: feed
    when: { match: { /op: pl-bad } }
    to: { sink: pl-bad, action: create_contact, with: { Name: x } }
    retry: { attempts: 2, backoff: 100ms, jitter: 0 }
"""
    if "amocrm" in fakes:
        plugins += f"""  amo:
    plugin: amocrm
    config:
      client_id: "{AMO_CLIENT_ID}"
      client_secret: "{SECRETS['amocrm_client_secret']}"
      redirect_uri: "{AMO_REDIRECT}"
      api_token: "{SECRETS['amocrm_api_token']}"
      base_url: "{fakes['amocrm'].url}"
      rate_limit: 0
      stale_retry: 100ms
"""
        pipes += """  - name: amo-lead
    from: feed
    when: { match: { /op: amo } }
    to: { sink: amo, action: create_lead, with: { quiz_id: 777, answers: {} } }
    retry: { attempts: 2, backoff: 100ms, jitter: 0 }
"""
    plugins += f"""  nt-url:
    plugin: notification
    config:
      url: "amqp://guest:{SECRETS['notification_url_password']}@127.0.0.1:1/"
      connect_timeout: 1s
      reconnect_min: 100ms
      reconnect_max: 200ms
  nt-pw:
    plugin: notification
    config:
      host: 127.0.0.1
      port: 1
      password: "{SECRETS['notification_password']}"
      connect_timeout: 1s
      reconnect_min: 100ms
      reconnect_max: 200ms
  nt-events:
    plugin: notification
    config:
      http_path: /eventbridge
      api_key: "{SECRETS['notification_api_key']}"
      aws_access_key_id: AKIAEXAMPLE
      aws_secret_access_key: "{SECRETS['notification_aws_secret']}"
"""
    pipes += """  - { name: nt-events-in, from: nt-events, to: { sink: rec } }
  - name: nt-send-url
    from: feed
    when: { match: { /op: nt } }
    to: { sink: nt-url, action: send, with: { name: X, to: a@example.com } }
    retry: { attempts: 2, backoff: 100ms, jitter: 0, timeout: 3s }
  - name: nt-send-pw
    from: feed
    when: { match: { /op: nt } }
    to: { sink: nt-pw, action: send, with: { name: X, to: a@example.com } }
    retry: { attempts: 2, backoff: 100ms, jitter: 0, timeout: 3s }
"""
    if "sqs" in fakes:
        plugins += f"""  ez:
    plugin: ezzing
    config:
      queue_url: "{fakes['queue_url']}"
      endpoint: "{fakes['sqs'].endpoint}"
      access_key_id: "{SECRETS['ezzing_access_key']}"
      secret_access_key: "{SECRETS['ezzing_secret_key']}"
      wait_time: 1s
      pollers: 1
"""
        pipes += """  - { name: ez-in, from: ez, to: { sink: rec } }
"""
    return plugins + pipes


def admin_get(port, path, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request(port, "GET", path, headers=headers)


def start_fakes():
    """Every peer the instances talk to; those started are stopped again when one fails."""
    for name in ("ploomes", "amocrm", "ezzing", "notification"):
        require_plugin(name)  # every bundled plugin is built: a missing one fails, not skips
    from fauxqs import Fauxqs
    fakes = {}
    try:
        fakes["ploomes"] = Proc(os.path.join(FAKES, "ploomes_fake.py"), "--user-key",
                                SECRETS["ploomes_user_key"])
        fakes["amocrm"] = Proc(os.path.join(FAKES, "amocrm_fake.py"),
                               os.path.join(FIXTURES, "amocrm", "amocrm_data.json"),
                               AMO_CLIENT_ID, SECRETS["amocrm_client_secret"], AMO_REDIRECT)
        fakes["sqs"] = Fauxqs(logger=False)
        fakes["sqs"].start()
        fakes["queue_url"] = fakes["sqs"].create_queue("ezzing-secrets")
    except BaseException:
        stop_fakes(fakes)
        raise
    return fakes


def stop_fakes(fakes):
    for k, f in fakes.items():
        if k == "sqs":
            f.stop()
        elif hasattr(f, "close"):
            f.close()


def traffic(h, fakes):
    """Drives every instance, failures included. Returns what the outputs must show, so the test
    also proves the failures it greps really happened."""
    port = h.http_port()
    expect_dead = 1  # the refused signed webhook
    # webhook: no token, a wrong one, the right one
    assert request(port, "POST", "/hook", {"a": 1})[0] == 401
    assert request(port, "POST", "/hook", {"a": 1},
                   {"Authorization": "Bearer wrong-" + SECRETS["webhook_token"][:4]})[0] == 401
    assert request(port, "POST", "/hook", {"a": 2},
                   {"Authorization": "Bearer " + SECRETS["webhook_token"]})[0] in (200, 202)
    expect_dead += 1  # its copy to `refuse`
    # hmac: a wrong signature, then a right one (its delivery is rejected into the dead letters)
    body = json.dumps({"signed": True}).encode()
    ts = str(int(time.time()))
    sig = hmac.new(SECRETS["webhook_hmac"].encode(), ts.encode() + b"." + body,
                   hashlib.sha256).hexdigest()
    assert request(port, "POST", "/signed", body, {"X-Signature-256": "sha256=" + "0" * 64,
                                                   "X-Signature-Timestamp": ts})[0] == 401
    assert request(port, "POST", "/signed", body, {"X-Signature-256": "sha256=" + sig,
                                                   "X-Signature-Timestamp": ts})[0] in (200, 202)
    feed = []
    if "ploomes" in fakes:
        hook = {"Action": "Create", "Entity": "Contact", "New": {"Id": 1, "Name": "A"}}
        assert request(port, "POST", "/ploomes", hook,
                       {"X-Ploomes-Validation-Key": "nope"})[0] in (401, 403)
        assert request(port, "POST", "/ploomes", hook,
                       {"X-Ploomes-Validation-Key": SECRETS["ploomes_validation_key"]})[0] == 200
        feed += [{"op": "pl", "email": "no-name@example.com"},  # 400: rejected
                 {"op": "pl-bad"}]                             # 401: key refused
        expect_dead += 2
    if "amocrm" in fakes:
        assert request(port, "POST", "/amocrm/account", "",
                       {"Authorization": "Bearer nope"})[0] == 401
        st, text, _ = request(port, "POST", "/amocrm/account", "",
                              {"Authorization": "Bearer " + SECRETS["amocrm_api_token"]})
        assert st == 200, text
        link = json.loads(text)["link"]
        state = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["state"][0]
        code = fakes["amocrm"].call("POST", "/_fake/code", {})[1]["code"]
        q = urllib.parse.urlencode({"code": code, "referer": "example.amocrm.ru",
                                    "state": state, "client_id": AMO_CLIENT_ID})
        st, text, _ = request(port, "GET", "/amocrm/webhook/create?" + q)
        assert st == 200, text
        # a disconnect hook with a forged signature
        st, _, _ = request(port, "GET", "/amocrm/webhook/delete?account_id=1&client_uuid=x&"
                           "signature=00")
        assert st in (400, 401, 404)
        feed.append({"op": "amo"})  # no rule for the quiz: rejected
        expect_dead += 1
    assert request(port, "POST", "/eventbridge", {"detail-type": "x"},
                   {"x-api-key": "nope"})[0] in (401, 403)
    feed.append({"op": "nt"})  # no broker: retried, then dead (two sinks)
    expect_dead += 2
    if "sqs" in fakes:
        fakes["sqs"].send(fakes["queue_url"], "this is not json")  # poison: dead letter
        expect_dead += 1
    with open(h.path("in.jsonl"), "a") as f:
        for e in feed:
            f.write(json.dumps(e) + "\n")
    return expect_dead


def dead_letters(h):
    r = plexus("dlq", "list", "--json", "-c", h.config)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    return (json.loads(out) if out.startswith("[") else []), r.stdout + r.stderr


def test_no_secret_in_any_output():
    fakes = start_fakes()
    outputs = {}
    try:
        with Host(build_config(fakes)) as h:
            h.start()
            aport = h.admin_port()
            expect_dead = traffic(h, fakes)
            wait_for(lambda: len(dead_letters(h)[0]) >= expect_dead, timeout=40,
                     what=f"{expect_dead} dead letters")
            # the admin API: refused without the token and with a wrong one, then read
            assert admin_get(aport, "/admin/status", None)[0] == 401
            assert admin_get(aport, "/admin/status", "wrong")[0] == 401
            st, status_text, status_hdrs = admin_get(aport, "/admin/status",
                                                     SECRETS["admin_token"])
            assert st == 200, status_text
            outputs["/admin/status"] = status_text + status_hdrs
            st, metrics_text, _ = admin_get(aport, "/metrics", SECRETS["admin_token"])
            assert st == 200 and "plexus_" in metrics_text, metrics_text[:500]
            outputs["/metrics"] = metrics_text
            outputs["/admin/dlq"] = admin_get(aport, "/admin/dlq", SECRETS["admin_token"])[1]
            r = plexus("status", "-c", h.config)
            outputs["plexus status"] = r.stdout + r.stderr
            r = plexus("status", "--json", "-c", h.config)
            outputs["plexus status --json"] = r.stdout + r.stderr
            time.sleep(0.5)
            assert h.stop() == 0
            outputs["log"] = h.log()
        dead, text = dead_letters(h)
        outputs["dlq list"] = text
        for d in dead:
            r = plexus("dlq", "show", str(d["id"]), "-c", h.config)
            assert r.returncode == 0, r.stderr
            outputs[f"dlq show {d['id']}"] = r.stdout + r.stderr
        outputs["recorded deliveries"] = open(h.path("rec.jsonl")).read()
    finally:
        stop_fakes(fakes)

    # the failures really happened (else the grep proves nothing)
    log = outputs["log"]
    assert "***" in log, "testsink logs its secret_token at init: it must show masked"
    reasons = outputs["dlq list"]
    assert "rejected: told to reject" in reasons
    if "ploomes" in fakes:
        assert "http 400" in reasons and "401" in reasons, reasons
    if "amocrm" in fakes:
        assert "no rule for quiz 777" in reasons, reasons
    for what, text in outputs.items():
        assert_clean(what, text)


# ------------------------------------------------------------------------------------------------
# `plexus check` on wrong secret options


CHECK_HEAD = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  admin: { listen: null }
"""


def check_cases():
    s = SECRETS
    cases = [
        ("testsink secret as a list",
         f'plugins:\n  t: {{ plugin: testsink, config: {{ file: x, secret_token: ["{s["testsink_token"]}"] }} }}\n',
         None),
        ("webhook token as a mapping",
         f'plugins:\n  w: {{ plugin: webhook, config: {{ token: {{ t: "{s["webhook_token"]}" }} }} }}\n',
         "webhook"),
        ("webhook hmac as a list",
         f'plugins:\n  w: {{ plugin: webhook, config: {{ hmac_secret: ["{s["webhook_hmac"]}"] }} }}\n',
         "webhook"),
        ("ploomes validation key as a list",
         f'plugins:\n  p: {{ plugin: ploomes, config: {{ validation_key: ["{s["ploomes_validation_key"]}"] }} }}\n',
         "ploomes"),
        ("ploomes user key as a mapping",
         f'plugins:\n  p: {{ plugin: ploomes, config: {{ user_key: {{ k: "{s["ploomes_user_key"]}" }} }} }}\n',
         "ploomes"),
        ("amocrm client secret as a list",
         f'plugins:\n  a: {{ plugin: amocrm, config: {{ client_id: x, redirect_uri: y, api_token: z, '
         f'client_secret: ["{s["amocrm_client_secret"]}"] }} }}\n', "amocrm"),
        ("amocrm api token as a mapping, other required option missing",
         f'plugins:\n  a: {{ plugin: amocrm, config: {{ client_id: x, client_secret: q, '
         f'api_token: {{ t: "{s["amocrm_api_token"]}" }} }} }}\n', "amocrm"),
        ("notification password as a list",
         f'plugins:\n  n: {{ plugin: notification, config: {{ password: ["{s["notification_password"]}"] }} }}\n',
         "notification"),
        ("notification url as a mapping",
         f'plugins:\n  n: {{ plugin: notification, config: {{ url: {{ u: "amqp://u:{s["notification_url_password"]}@h/" }} }} }}\n',
         "notification"),
        ("ezzing secret key as a list",
         f'plugins:\n  e: {{ plugin: ezzing, config: {{ queue_url: q, secret_access_key: ["{s["ezzing_secret_key"]}"] }} }}\n',
         "ezzing"),
        ("secret under a misspelt key",
         f'plugins:\n  w: {{ plugin: webhook, config: {{ tokn: "{s["webhook_token"]}" }} }}\n',
         "webhook"),
    ]
    return cases


def test_check_errors_never_echo_secrets():
    tried = 0
    with Host("version: 1\n") as h:
        # host.admin.token of the wrong type
        for name, text in [
            ("admin token as a list", CHECK_HEAD.replace(
                "admin: { listen: null }",
                f'admin: {{ listen: null, token: ["{SECRETS["admin_token"]}"] }}')),
            ("admin token as a mapping", CHECK_HEAD.replace(
                "admin: { listen: null }",
                f'admin: {{ listen: null, token: {{ t: "{SECRETS["admin_token"]}" }} }}')),
        ]:
            h.write_config(text)
            r = plexus("check", "-c", h.config)
            assert r.returncode == 78, (name, r.stdout, r.stderr)
            assert "secret" in r.stderr, (name, r.stderr)
            assert_clean(f"plexus check ({name})", r.stdout + r.stderr)
            tried += 1
        for name, body, plugin in check_cases():
            if plugin:
                require_plugin(plugin)
            h.write_config(CHECK_HEAD + body)
            r = plexus("check", "-c", h.config)
            assert r.returncode == 78, (name, r.stdout, r.stderr)
            assert r.stderr.strip(), name
            assert_clean(f"plexus check ({name})", r.stdout + r.stderr)
            tried += 1
    assert tried >= 4, tried


# ------------------------------------------------------------------------------------------------
# Stored data is kept byte for byte; only printed text is masked


KEEP_TOKEN = "wh-t0ken-5ecret-c3d4"     # lowercase: also part of a header name, so of a meta key
KEEP_KEY_ID = "AKIAKEEP5ECRET0011223"   # alphanumeric: also part of an SQS attribute name
KEEP_CFG = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  log: { level: debug }
  http: { listen: "127.0.0.1:0" }
  admin: { listen: null }
plugins:
  hook:
    plugin: webhook
    config: { path: /hook, token: "%(token)s", meta_headers: [x-note, x-%(token)s-id] }
  refuse:
    plugin: testsink
    config: { file: "@TMP@/refuse.jsonl", fail: reject, secret_token: "%(token)s" }
  ez:
    plugin: ezzing
    config:
      queue_url: "%(queue_url)s"
      endpoint: "%(endpoint)s"
      access_key_id: "%(key_id)s"
      secret_access_key: "keep-Sk-5ecret-a5b6"
      wait_time: 1s
      pollers: 1
  nt:
    plugin: notification
    config: { host: 127.0.0.1, port: 1, connect_timeout: 1s }
  guestbook: { plugin: testsink, config: { file: "@TMP@/guestbook.jsonl" } }
pipelines:
  - { name: hooks, from: hook, to: { sink: refuse } }
  - { name: ez-in, from: ez, to: { sink: refuse } }
"""


def spool_dead_meta(h):
    """The metadata text of every dead-lettered event, read from the spool file itself."""
    import sqlite3
    db = sqlite3.connect(h.path("var", "spool.db"))
    try:
        rows = db.execute("SELECT e.meta FROM dead d JOIN events e ON e.eid = d.event").fetchall()
    finally:
        db.close()
    return [r[0] for r in rows if r[0]]


def test_stored_data_is_kept_byte_for_byte_while_the_log_is_masked():
    """A configured secret that is part of a metadata key or value (a webhook header, an SQS
    message attribute of a poison message) is stored unchanged in the event and its dead letter;
    the log line that prints the secret shows it masked; the notification plugin's default
    password (guest, not set by the config) masks nothing."""
    for name in ("webhook", "ezzing", "notification"):
        require_plugin(name)
    from fauxqs import Fauxqs
    sqs = Fauxqs(logger=False).start()
    try:
        queue_url = sqs.create_queue("keep-bytes")
        cfg = KEEP_CFG % {"token": KEEP_TOKEN, "key_id": KEEP_KEY_ID, "queue_url": queue_url,
                          "endpoint": sqs.endpoint}
        with Host(cfg) as h:
            h.start()
            note = f"before-{KEEP_TOKEN}-after guest"
            st, text, _ = request(h.http_port(), "POST", "/hook", {"a": 1},
                                  {"Authorization": "Bearer " + KEEP_TOKEN, "X-Note": note,
                                   f"X-{KEEP_TOKEN}-Id": "42"})
            assert st in (200, 202), text
            attr_value = f"x {KEEP_KEY_ID} y guest"
            sqs.send(queue_url, "not json: poison", {f"key{KEEP_KEY_ID}": attr_value})
            wait_for(lambda: len(dead_letters(h)[0]) >= 2, timeout=40, what="2 dead letters")
            assert h.stop() == 0
            log = h.log()
        stored = [json.loads(m) for m in spool_dead_meta(h)]
        hook_meta = next(m for m in stored if "x-note" in m)
        assert hook_meta["x-note"] == note, hook_meta
        assert hook_meta[f"x-{KEEP_TOKEN}-id"] == "42", hook_meta
        poison_meta = next(m for m in stored if "MessageId" in m)
        assert poison_meta[f"attr.key{KEEP_KEY_ID}"] == attr_value, poison_meta
        dead, _ = dead_letters(h)
        shown = ""
        for d in dead:
            r = plexus("dlq", "show", str(d["id"]), "-c", h.config)
            assert r.returncode == 0, r.stderr
            shown += r.stdout
        for text in (note, f"x-{KEEP_TOKEN}-id", f"attr.key{KEEP_KEY_ID}", attr_value,
                     "MessageId"):
            assert json.dumps(text) in shown, (text, shown)
        # printed text: the secret is masked where testsink logs it, "guest" is not a secret
        assert "configured with token ***" in log, log[-3000:]
        assert KEEP_TOKEN not in log and KEEP_KEY_ID not in log, log[-3000:]
        assert "loaded instance=guestbook plugin=testsink" in log, log[-3000:]
    finally:
        sqs.stop()


def position(text, line, value):
    """"line:column" of `value` on `line` of text."""
    return f"{text.count(chr(10), 0, text.index(line)) + 1}:{line.index(value) + 1}"


def test_check_refuses_a_secret_too_short():
    """Refused at the value's file:line:column, the value not shown."""
    line = '  t: { plugin: testsink, config: { file: x, secret_token: "s3cr" } }'
    text = CHECK_HEAD + "plugins:\n" + line + "\n"
    where = position(text, line, '"s3cr')
    with Host(text) as h:
        r = plexus("check", "-c", h.config)
        assert r.returncode == 78, (r.stdout, r.stderr)
        assert r.stderr.startswith(f"{h.config}:{where}: "), (where, r.stderr)
        assert "too short to be a secret" in r.stderr and "s3cr" not in r.stderr, r.stderr
        line = '  admin: { listen: null, token: "adm" }'
        text = CHECK_HEAD.replace("  admin: { listen: null }", line)
        where = position(text, line, '"adm')
        h.write_config(text)
        r = plexus("check", "-c", h.config)
        assert r.returncode == 78 and r.stderr.startswith(f"{h.config}:{where}: "), r.stderr
        assert "host.admin.token: too short to be a secret" in r.stderr, r.stderr


if __name__ == "__main__":
    run_all(globals())
