#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from the test fixtures (the real payloads of the
seed documents), the example configurations and hand-written HTTP requests. Run from anywhere;
re-running rewrites the seeds (files named seed-*), leaving other corpus files alone.

Plugin targets take one selector byte before the body (see fuzz/targets/fuzz_plugin.c):
bit 0 = responses instead of a route call, bits 2-4 = which path or delivery."""
import glob
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def fixtures(name):
    out = []
    for p in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", name, "*.json"))):
        with open(p, "rb") as f:
            out.append((os.path.basename(p)[:-5], f.read()))
    return out


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def sel(responses=False, pick=0, status=0):
    return bytes([(1 if responses else 0) | (pick << 2) | (status << 5)])


def sqs_receive(bodies):
    return json.dumps({"Messages": [
        {"MessageId": f"m{i}", "ReceiptHandle": f"rh{i}", "MD5OfBody": "x", "Body": b.decode(),
         "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"}}
        for i, b in enumerate(bodies)]}).encode()


def main():
    # --- config
    for p in sorted(glob.glob(os.path.join(ROOT, "etc", "*.yaml")) +
                    glob.glob(os.path.join(ROOT, "etc", "examples", "*.yaml"))):
        with open(p, "rb") as f:
            write("fuzz_config", os.path.basename(p), f.read())
    write("fuzz_config", "options.yaml", """version: 1
host: { data_dir: /tmp/x, durability: fsync, dedupe_window: 1h, max_crashes: 2,
        http: { listen: "[::1]:0", max_body: 64KiB, max_connections: 3 },
        admin: { listen: "127.0.0.1:0", token: "${PX_FUZZ_SET}" } }
plugins:
  a: &a { plugin: x, max_inflight: 2, max_pending: 10, max_events_per_second: 1.5,
          config: { url: "u${PX_FUZZ_EMPTY:-d}", token: t, count: 3, ratio: 1, on: true,
                    wait: 1.5s, max: 1MiB, tags: [a, b], extra: { k: [1, {v: null}] } } }
  b: { <<: *a, config: { url: x, tags: one } }
pipelines:
  - name: p
    from: a
    when: { type: ["x.*", "y?"], match: { /a/b: 1, /c: { in: [1, 2] }, /d: { exists: true } } }
    to:
      - { sink: b, action: go, with: { x: "{{/a}}", y: "t {{/b?}} \\\\{{", z: [1, "{{}}"] } }
    retry: { attempts: 3, backoff: 1s, max_backoff: 1m, jitter: 0.1, timeout: 5s }
""")
    # --- mapping: templates against the fixtures
    templates = [
        {"name": "{{/data/name}} {{/data/surname?}}", "to": "{{/data/email}}",
         "all": "{{}}", "t": "{{/$event/type}}", "n": [1, "{{/maxTries}}"]},
        {"x": "\\{{literal}}", "y": "{{ /uuid }}", "z": {"k": "{{/data/~0a~1b?}}"}},
        "{{/New/Id}}", "Deal {{/New/Title?}} for {{/New/ContactId}}",
        {"detail": "{{/detail}}", "when": "{{/time}} {{/$event/time}} {{/$event/source}}"},
    ]
    payloads = [b for _, b in fixtures("ezzing")[:3] + fixtures("ploomes")[:2] +
                fixtures("notification")[:2]]
    for i, t in enumerate(templates):
        for j, p in enumerate(payloads):
            write("fuzz_mapping", f"t{i}-p{j}", json.dumps(t).encode() + b"\n%%\n" + p)
    # --- HTTP requests
    body = b'{"a": 1, "b": [true, null]}'
    reqs = {
        "post": b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        "chunked": b"POST /hook?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "pipelined": b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\nGET /api/exact HTTP/1.1\r\n"
                     b"Host: x\r\n\r\nPOST /hook HTTP/1.1\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}",
        "http10": b"GET /api/x HTTP/1.0\r\n\r\n",
        "head": b"HEAD /api/exact HTTP/1.1\r\nHost: x\r\n\r\n",
        "notfound": b"DELETE /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        "badline": b"GARBAGE\r\n\r\n",
        "expect": b"POST /hook HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "bigheader": b"GET /api/x HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
        "toolong": b"POST /hook HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nxx",
    }
    for k, v in reqs.items():
        write("fuzz_http", k, v)
    # --- Ezzing envelopes
    for name, b in fixtures("ezzing"):
        write("fuzz_ezzing_envelope", name, b)
        write("fuzz_plugin_ezzing", name, sel(True) + sqs_receive([b]))
    write("fuzz_plugin_ezzing", "batch", sel(True) + sqs_receive([b for _, b in
                                                                  fixtures("ezzing")[:4]]))
    write("fuzz_plugin_ezzing", "empty", sel(True) + b'{"Messages":[]}')
    write("fuzz_plugin_ezzing", "error", sel(True, status=3) +
          b'{"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"}')
    # --- EventBridge / notification
    for name, b in fixtures("notification"):
        write("fuzz_eventbridge", name, b)
        write("fuzz_plugin_notification", "route-" + name, sel(False) + b)
        write("fuzz_plugin_notification", "sqs-" + name, sel(True) + sqs_receive([b]))
    # --- Ploomes: webhooks in, API answers
    for name, b in fixtures("ploomes"):
        write("fuzz_plugin_ploomes", "hook-" + name, sel(False) + b)
    api = [b'{"value":[{"Id":1,"Name":"A"}]}', b'{"Id":5}',
           b'{"error":{"code":"x","message":"The field Name is required."}}',
           b'{"value":[{"Id":10,"Name":"Contact.Create","EntityId":1,"ActionId":1}],'
           b'"@odata.nextLink":"https://x/y?$skip=300"}', b"Invalid User-Key"]
    for pick in range(7):
        for i, b in enumerate(api):
            write("fuzz_plugin_ploomes", f"api-{pick}-{i}", sel(True, pick, i % 7) + b)
    # --- amoCRM: list answers and admin API bodies
    amo = os.path.join(ROOT, "tests", "fixtures", "amocrm", "amocrm_data.json")
    if os.path.exists(amo):
        with open(amo) as f:
            data = json.load(f)
        lists = {0: ("users", data.get("users", [])), 1: ("pipelines", data.get("pipelines", []))}
        for pick, (name, items) in lists.items():
            page = {"_page": 1, "_links": {"self": {"href": "x"}},
                    "_embedded": {name: items}}
            write("fuzz_plugin_amocrm", f"list-{name}", sel(True, pick) + json.dumps(page).encode())
        for k, v in data.get("custom_fields", {}).items():
            page = {"_page": 1, "_embedded": {"custom_fields": v}}
            write("fuzz_plugin_amocrm", f"fields-{k}", sel(True, 2) + json.dumps(page).encode())
        for k, v in data.get("tags", {}).items():
            page = {"_page": 1, "_embedded": {"tags": v}}
            write("fuzz_plugin_amocrm", f"tags-{k}", sel(True, 3) + json.dumps(page).encode())
    for name in ("rules_req", "quiz_result", "account"):
        p = os.path.join(ROOT, "tests", "fixtures", "amocrm", name + ".json")
        if os.path.exists(p):
            with open(p, "rb") as f:
                b = f.read()
            write("fuzz_plugin_amocrm", "rules-" + name, sel(False, 4) + b)
            write("fuzz_plugin_amocrm", "lead-" + name, sel(True, 0, 0) + b)
    write("fuzz_plugin_amocrm", "validation", sel(True, 0, 3) + json.dumps({
        "title": "Bad Request", "status": 400, "validation-errors": [
            {"request_id": "0", "errors": [{"code": "NotSupportedChoice", "path": "x",
                                            "detail": "d"}]}]}).encode())
    # --- webhook
    for name, b in fixtures("ezzing")[:3] + fixtures("ploomes")[:2]:
        write("fuzz_plugin_webhook", name, sel(False) + b)
    write("fuzz_plugin_webhook", "typed", sel(False) + b'{"type":"a.b","id":7,"key":"k"}')


if __name__ == "__main__":
    main()
