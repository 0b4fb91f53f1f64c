"""The webhook source end to end: answered only after the spool has the event, auth (bearer token,
HMAC-SHA256), malformed input, type/id/dedupe from the body, back-pressure, HTTP conformance on a
plugin route (keep-alive, pipelining, chunked bodies, limits, timeouts, connection cap, bad request
lines), and the default etc/plexus.yaml accepting a posted event into its file sink."""
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.request

from harness import Host, plexus, read_jsonl, run_all, scaled, wait_for, PLUGINS, SOURCE

BASE = """version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 2s
  http: { listen: "127.0.0.1:0" @HTTP@ }
"""


def config(plugins, http_extra=""):
    return BASE.replace("@HTTP@", http_extra) + plugins


def post(port, body, headers=None, path="/hook", method="POST", timeout=10):
    """One request on a new connection: (status, headers dict lowercased, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def read_responses(sock, n, timeout=15):
    """Reads n HTTP responses (Content-Length framed) from sock: [(status, headers, body)]."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        length = int(hdrs.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        out.append((status, hdrs, buf[:length]))
        buf = buf[length:]
    return out


def raw(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def request_bytes(body, path="/hook", extra=""):
    if isinstance(body, str):
        body = body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def events(h, name="out.jsonl"):
    return read_jsonl(h.path(name))


def serves_next_client(port, tag):
    st, _, body = post(port, {"next": tag})
    assert st == 202, (st, body)
    return json.loads(body)["id"]


SINKS = """
  out: { plugin: file, config: { path: "@TMP@/out.jsonl", fsync: never } }
"""


def test_answered_only_after_persist_and_survives_kill9():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook } }
  slow: { plugin: testsink, config: { file: "@TMP@/slow.jsonl", delay: 200ms } }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: [ { sink: out }, { sink: slow } ] }
""")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        ids = {}
        for i in range(40):
            st, hd, body = post(port, {"n": i, "who": "ana"}, {"X-Event-Type": "shop.order"})
            assert st == 202, (st, body)
            assert hd["content-type"] == "application/json"
            ids[json.loads(body)["id"]] = i
        # Every 2xx means the spool has it: a kill -9 right now loses none of them.
        h.kill9()
        h.start()
        wait_for(lambda: {e["id"] for e in events(h)} >= set(ids), what="all answered events")
        wait_for(lambda: len({x["event"] for x in read_jsonl(h.path("slow.jsonl"))
                              if x["outcome"] == "ok"}) == 40, what="the slow sink")
        assert h.stop() == 0
    for e in events(h):
        assert e["type"] == "shop.order" and e["source"] == "hook", e
        assert e["payload"] == {"n": ids[e["id"]], "who": "ana"}, e


def test_type_id_and_dedupe_from_body():
    cfg = config("""plugins:
  hook:
    plugin: webhook
    config: { path: /hook, type_pointer: /meta/kind, id_pointer: /id,
              dedupe_pointer: /id, type: fallback.type, status: 200,
              meta_headers: [X-Request-Id] }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        st, _, body = post(port, {"id": "ev-1", "meta": {"kind": "crm.lead"}},
                           {"X-Request-Id": "r1"})
        assert st == 200 and json.loads(body) == {"id": "ev-1"}, (st, body)
        st, _, body = post(port, {"id": "ev-1", "meta": {"kind": "crm.lead"}})
        assert st == 200, "a duplicate is acknowledged (and dropped)"
        st, _, body = post(port, {"id": 42, "x": [1, 2]})
        assert st == 200 and json.loads(body) == {"id": "42"}, body
        # The header wins over the pointer.
        st, _, body = post(port, {"id": "ev-3", "meta": {"kind": "crm.lead"}},
                           {"X-Event-Type": "from.header"})
        assert st == 200
        st, _, body = post(port, {"id": "ev-4"}, {"X-Event-Type": "bad type"})
        assert st == 400 and b"invalid event type" in body
        wait_for(lambda: len(events(h)) == 3, what="3 events")
        time.sleep(0.3)
        h.stop()
    got = {e["id"]: e for e in events(h)}
    assert set(got) == {"ev-1", "42", "ev-3"}, got
    assert got["ev-1"]["type"] == "crm.lead"
    assert got["42"]["type"] == "fallback.type" and got["42"]["payload"] == {"id": 42, "x": [1, 2]}
    assert got["ev-3"]["type"] == "from.header"


def test_bearer_token():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook, token: "s3cr3t-t0ken" } }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        for hdrs in ({}, {"Authorization": "Bearer wrong"},
                     {"Authorization": "Basic s3cr3t-t0ken"},
                     {"Authorization": "Bearer s3cr3t-t0ke"},
                     {"Authorization": "Bearer s3cr3t-t0kenX"}):
            st, hd, _ = post(port, {"bad": 1}, hdrs)
            assert st == 401, (hdrs, st)
            assert hd.get("www-authenticate") == "Bearer"
        st, _, _ = post(port, {"good": 1}, {"Authorization": "Bearer s3cr3t-t0ken"})
        assert st == 202
        st, _, _ = post(port, {"good": 2}, {"Authorization": "bearer s3cr3t-t0ken"})
        assert st == 202, "the scheme is case-insensitive"
        wait_for(lambda: len(events(h)) == 2, what="2 events")
        h.stop()
        assert "s3cr3t-t0ken" not in h.log()
    assert sorted(e["payload"]["good"] for e in events(h)) == [1, 2]


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_hmac_body_signature():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook, hmac_secret: "hm4c-key", hmac_mode: hmac_body } }
  gh:
    plugin: webhook
    config: { path: /gh, hmac_secret: "k2-github-secret", hmac_mode: hmac_body,
              signature_header: X-Hub-Signature-256 }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
  - { name: q, from: gh, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        body = b'{"order": {"id": 7}}'
        st, _, _ = post(port, body, {"X-Signature-256": sign("hm4c-key", body)})
        assert st == 202
        st, _, _ = post(port, body, {"X-Signature-256": sign("hm4c-key", body).upper()
                                     .replace("SHA256=", "sha256=")})
        assert st == 202, "hex digits in either case"
        bad = [{}, {"X-Signature-256": sign("other", body)},
               {"X-Signature-256": sign("hm4c-key", body + b" ")},
               {"X-Signature-256": sign("hm4c-key", body)[7:]},
               {"X-Signature-256": sign("hm4c-key", body)[:-2]}]
        for hdrs in bad:
            st, _, _ = post(port, body, hdrs)
            assert st == 401, hdrs
        # Another instance with its own key and header, on its own path.
        st, _, _ = post(port, body, {"X-Hub-Signature-256": sign("k2-github-secret", body)}, path="/gh")
        assert st == 202
        st, _, _ = post(port, body, {"X-Signature-256": sign("k2-github-secret", body)}, path="/gh")
        assert st == 401
        wait_for(lambda: len(events(h)) == 3, what="3 events")
        h.stop()
        assert "hm4c-key" not in h.log()
    assert {e["source"] for e in events(h)} == {"hook", "gh"}


def sign_at(secret, ts, body):
    """The hmac mode's headers: the signature covers timestamp + "." + body."""
    msg = str(ts).encode() + b"." + body
    return {"X-Signature-Timestamp": str(ts),
            "X-Signature-256": "sha256=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()}


def refusal(st, resp):
    assert st == 401, (st, resp)
    return json.loads(resp)["reason"]


def test_hmac_signature_with_timestamp_refuses_replays():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook, hmac_secret: "t1me-key" } }
  slack:
    plugin: webhook
    config: { path: /slack, hmac_secret: "k3-slack-key", timestamp_header: X-Slack-Request-Timestamp,
              tolerance: 1m }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
  - { name: q, from: slack, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        body = b'{"order": {"id": 8}}'
        now = int(time.time())
        st, _, resp = post(port, body, sign_at("t1me-key", now, body))
        assert st == 202, resp
        # A request captured and sent again later: authentic, but outside the 5 minute default.
        old = sign_at("t1me-key", now - 301 - 60, body)
        st, hd, resp = post(port, body, old)
        why = refusal(st, resp)
        assert "old" in why and "tolerance of 300s" in why, why
        assert hd.get("www-authenticate") == "Signature"
        st, _, resp = post(port, body, sign_at("t1me-key", now + 3600, body))
        assert "in the future" in refusal(st, resp)
        # The old timestamp with a fresh one swapped in: the signature no longer holds.
        forged = dict(old, **{"X-Signature-Timestamp": str(now)})
        assert "does not match" in refusal(*post(port, body, forged)[::2])
        assert "does not match" in refusal(*post(port, body, sign_at("other", now, body))[::2])
        assert "does not match" in refusal(
            *post(port, body + b" ", sign_at("t1me-key", now, body))[::2])
        body_only = {"X-Signature-256": sign("t1me-key", body)}  # a body-only signer
        assert "timestamp" in refusal(*post(port, body, body_only)[::2])
        for ts in ("", "12ab", "-5", "1" * 13):
            hdrs = sign_at("t1me-key", now, body)
            hdrs["X-Signature-Timestamp"] = ts
            assert "unix seconds" in refusal(*post(port, body, hdrs)[::2]), ts
        assert "signature" in refusal(*post(port, body, {})[::2])
        # Another instance: its own timestamp header and a 1 minute tolerance.
        hdrs = sign_at("k3-slack-key", now, body)
        hdrs["X-Slack-Request-Timestamp"] = hdrs.pop("X-Signature-Timestamp")
        st, _, resp = post(port, body, hdrs, path="/slack")
        assert st == 202, resp
        hdrs = sign_at("k3-slack-key", now - 200, body)
        hdrs["X-Slack-Request-Timestamp"] = hdrs.pop("X-Signature-Timestamp")
        assert "tolerance of 60s" in refusal(*post(port, body, hdrs, path="/slack")[::2])
        wait_for(lambda: len(events(h)) == 2, what="2 events")
        h.stop()
        assert "t1me-key" not in h.log()
    assert sorted(e["source"] for e in events(h)) == ["hook", "slack"]


def test_hmac_mode_is_checked():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook, hmac_secret: "x-secret-key", hmac_mode: sha1 } }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start(wait=False)
        h.proc.wait(60)
        assert h.proc.returncode != 0
        assert "hmac_mode must be hmac" in h.log() and "not \\\"sha1\\\"" in h.log(), h.log()


def test_malformed_json_and_content_type():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook, require_json_content_type: true } }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
""")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        for body, why in (('{"a": 1', "expected"), ("", "empty body"), ("42", "expected"),
                          ('{"a":1,"a":2}', "duplicate"), ("{} trailing", "end of file")):
            st, _, resp = post(port, body)
            assert st == 400, (body, st)
            j = json.loads(resp)
            assert j["error"] == "malformed JSON" and why in j["reason"], (body, j)
        st, _, _ = post(port, '{"a":1}', {"Content-Type": "text/plain"})
        assert st == 415
        st, _, _ = post(port, '{"a":1}', {"Content-Type": "application/jsonx"})
        assert st == 415
        st, _, _ = post(port, '{"ok":1}', {"Content-Type": "application/json; charset=utf-8"})
        assert st == 202
        st, _, _ = post(port, '{"ok":2}', {"Content-Type": "application/cloudevents+json"})
        assert st == 202
        st, hd, _ = post(port, None, method="GET")
        assert st == 405 and "POST" in hd.get("allow", ""), (st, hd)
        wait_for(lambda: len(events(h)) == 2, what="2 events")
        h.stop()
    assert sorted(e["payload"]["ok"] for e in events(h)) == [1, 2]


def test_body_kept_as_text_until_a_pipeline_reads_it():
    # The body is only checked at the door; a condition or a mapping parses it when it reads it,
    # and the file sink writes the body's own text (its line breaks, whitespace between tokens,
    # turned into spaces) with no serialisation.
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook } }
""" + SINKS + """  big: { plugin: file, config: { path: "@TMP@/big.jsonl", fsync: never } }
  mapped: { plugin: file, config: { path: "@TMP@/mapped.jsonl", fsync: never } }
pipelines:
  - { name: all, from: hook, to: { sink: out } }
  - { name: big, from: hook, when: { match: { /n: { in: [2, 3] } } }, to: { sink: big } }
  - name: mapped
    from: hook
    to: { sink: mapped, with: { who: "{{/who/name}}", n: "{{/n}}" } }
""")
    bodies = ['{\n  "n": 1,\r\n  "who": {"name": "Ana \\u00e9\\n"},\t"x": [1.5e3, true, null]\n}\n',
              '{"n": 2, "who": {"name": "Bo"}}',
              '[{"n": 3}]']
    with Host(cfg) as h:
        h.start()
        port = h.http_port()
        for b in bodies:
            st, _, resp = post(port, b)
            assert st == 202, (b, st, resp)
        wait_for(lambda: len(events(h)) == 3, what="3 events in out")
        wait_for(lambda: len(events(h, "mapped.jsonl")) == 2, what="2 mapped")
        h.stop()
    with open(h.path("out.jsonl"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 3, lines
    for line, body in zip(lines, bodies):
        e = json.loads(line)
        assert e["payload"] == json.loads(body), (line, body)
    # byte for byte apart from the line breaks
    assert lines[0].endswith(',"payload":' + bodies[0].rstrip().replace("\r", " ")
                             .replace("\n", " ") + "}"), lines[0]
    # the condition read /n of the text bodies: only event 2 has n in [2, 3]
    assert [e["payload"]["n"] for e in events(h, "big.jsonl")] == [2]
    # the mapping read them too; the array body has no /who/name, so it is a dead letter
    assert sorted((m["who"], m["n"]) for m in events(h, "mapped.jsonl")) == \
        [("Ana \u00e9\n", 1), ("Bo", 2)]


def test_http_conformance_on_the_webhook_route():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook } }
""" + SINKS + """pipelines:
  - { name: p, from: hook, to: { sink: out } }
""", ", max_body: 1000, max_connections: 4")
    with Host(cfg) as h:
        h.start()
        port = h.http_port()

        # Keep-alive: several requests on one connection.
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(5):
            c.request("POST", "/hook", body=json.dumps({"ka": i}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            assert r.status == 202 and r.getheader("Connection", "").lower() != "close"
            r.read()
        c.close()

        # Pipelined: three requests in one write, answered in order.
        s = raw(port)
        s.sendall(b"".join(request_bytes(json.dumps({"pipe": i})) for i in range(3)))
        rs = read_responses(s, 3)
        s.close()
        assert [r[0] for r in rs] == [202, 202, 202], rs
        pipe_ids = [json.loads(r[2])["id"] for r in rs]

        # Chunked body.
        s = raw(port)
        s.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n"
                  b"7\r\n{\"chunk\r\n" b"7\r\ned\": 1}\r\n" b"0\r\n\r\n")
        (st, _, body), = read_responses(s, 1)
        s.close()
        assert st == 202, (st, body)
        chunk_id = json.loads(body)["id"]

        # Body at the limit passes; one byte over -> 413.
        def sized(n):
            pad = n - len('{"pad":""}')
            return '{"pad":"' + "x" * pad + '"}'
        assert len(sized(1000)) == 1000
        st, _, _ = post(port, sized(1000))
        assert st == 202
        s = raw(port)
        s.sendall(request_bytes(sized(1001)))
        (st, _, _), = read_responses(s, 1)
        s.close()
        assert st == 413
        serves_next_client(port, "after-413")

        # Malformed request line -> 400.
        for bad in (b"POST\r\n\r\n", b"GARBAGE /hook HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /hook HTTP/9\r\n\r\n"):
            s = raw(port)
            s.sendall(bad)
            rs = read_responses(s, 1)
            s.close()
            assert rs and rs[0][0] == 400, (bad, rs)
        serves_next_client(port, "after-400")

        # Connection cap: 4 open (each answered once, so surely accepted, then idle on
        # keep-alive), the 5th gets 503, then the next client is served once they close.
        # Connections of the steps above may still be closing (the server waits briefly for the
        # client's FIN after an error answer), so take each of the 4 slots as it frees up.
        held = []

        def hold(i):
            x = raw(port)
            x.sendall(request_bytes(json.dumps({"held": i})))
            status = read_responses(x, 1)[0][0]
            if status == 202:
                held.append(x)
                return True
            x.close()
            assert status == 503, status
            return False

        for i in range(4):
            wait_for(lambda: hold(i), timeout=10, interval=0.1, what=f"connection slot {i}")
        s = raw(port)
        s.sendall(request_bytes('{"over":1}'))
        rs = read_responses(s, 1)
        s.close()
        assert rs and rs[0][0] == 503, rs
        for x in held:
            x.close()
        wait_for(lambda: _try_post(port), timeout=10, what="service after the cap")

        # Headers sent slowly: 408 after the header timeout, then the next client is served.
        s = raw(port)
        s.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + scaled(15)
        got = b""
        s.settimeout(1)
        while time.monotonic() < deadline and b"\r\n\r\n" not in got:
            try:
                s.sendall(b"X-Slow: y\r\n")  # keeps trickling, never finishes
            except OSError:
                break
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            except socket.timeout:
                pass
        s.close()
        assert got.startswith(b"HTTP/1.1 408"), got
        serves_next_client(port, "after-408")

        wait_for(lambda: len(events(h)) == 5 + 3 + 1 + 1 + 1 + 1 + 4 + 1 + 1,
                 what="every accepted event")
        assert h.proc.poll() is None
        h.stop()
    ev = events(h)
    ids = {e["id"] for e in ev}
    assert set(pipe_ids) <= ids and chunk_id in ids
    by_id = {e["id"]: e for e in ev}
    assert [by_id[i]["payload"]["pipe"] for i in pipe_ids] == [0, 1, 2], "answered in order"
    assert any(e["payload"] == {"chunked": 1} for e in ev)
    assert not any("over" in e["payload"] for e in ev)


def _try_post(port):
    try:
        return post(port, {"next": "cap"})[0] == 202
    except OSError:
        return False


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


def test_full_spool_answers_503_with_retry_after():
    cfg = config("""plugins:
  hook: { plugin: webhook, config: { path: /hook, retry_after: 3s } }
  out:
    plugin: testsink
    config: { file: "@TMP@/out.jsonl", fail: retry, down_file: "@TMP@/down" }
pipelines:
  - name: p
    from: hook
    to: { sink: out }
    retry: { attempts: 1000, backoff: 100ms, max_backoff: 200ms }
""", ", max_body: 64KiB").replace("data_dir: @TMP@/var", "data_dir: @TMP@/small")
    h = Host(cfg)
    small = h.path("small")
    if os.geteuid() != 0 or not _mount_tmpfs(small, "2m"):
        raise AssertionError("this test needs root to mount a small tmpfs")
    try:
        open(h.path("down"), "w").close()
        h.start()
        port = h.http_port()
        blob = {"blob": "y" * 30000}
        accepted = []
        busy = None
        for i in range(200):
            st, hd, body = post(port, dict(blob, n=i))
            if st == 503:
                busy = hd
                break
            assert st == 202, (st, body)
            accepted.append(i)
        assert busy is not None, "never refused on a full spool"
        assert busy.get("retry-after") == "3", busy
        assert h.proc.poll() is None, "host died on a full disk"
        # Space returns: accepted again, and every 2xx-answered event is delivered.
        subprocess.run(["mount", "-o", "remount,size=64m", small], check=True)
        os.unlink(h.path("down"))

        def accepts():
            st = post(port, dict(blob, n=1000))[0]
            if st == 202:
                accepted.append(1000)
                return True
            return False
        wait_for(accepts, timeout=30, interval=0.3, what="2xx after space returned")
        wait_for(lambda: len({x["event"] for x in read_jsonl(h.path("out.jsonl"))
                      if x["outcome"] == "ok"}) == len(accepted),
                 timeout=60, what="every accepted event delivered")
        h.stop()
    finally:
        if h.proc:
            h.proc.kill()
            h.proc.wait()
        subprocess.run(["umount", "-l", small], capture_output=True)


def test_default_config_accepts_a_posted_event():
    with open(os.path.join(SOURCE, "etc", "plexus.yaml")) as f:
        text = f.read()
    assert "127.0.0.1:8080" in text and "./var" in text
    h = Host("")
    text = text.replace("127.0.0.1:8080", "127.0.0.1:0").replace("./var", h.path("var"))
    h.write_config(text)
    env = {"PLEXUS_PLUGIN_PATH": PLUGINS}
    r = plexus("check", "-c", h.config, env=env)
    assert r.returncode == 0, r.stderr
    with h:
        h.start(env=env)
        port = h.http_port()
        rq = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=b'{"hello":1}',
                                    method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(rq, timeout=10) as resp:
            assert resp.status in (200, 202)
            eid = json.loads(resp.read())["id"]
        out = h.path("var", "events.jsonl")
        wait_for(lambda: any(e["id"] == eid for e in read_jsonl(out)), what="the archived event")
        assert h.stop() == 0
    (e,) = read_jsonl(out)
    assert e["payload"] == {"hello": 1}, e
    assert e["type"] == "webhook.event" and e["source"] == "webhook", e


def test_example_configs_pass_check():
    examples = os.path.join(SOURCE, "etc", "examples")
    names = [n for n in sorted(os.listdir(examples)) if n.startswith("webhook")]
    assert names, "no etc/examples/webhook*.yaml"
    for n in names:
        r = plexus("check", "-c", os.path.join(examples, n), env={"PLEXUS_PLUGIN_PATH": PLUGINS})
        assert r.returncode == 0, (n, r.stderr)


if __name__ == "__main__":
    run_all(globals())
