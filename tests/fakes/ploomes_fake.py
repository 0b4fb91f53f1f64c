"""A fake of the Ploomes REST API for tests, following docs/plugins/ploomes.md's reference notes:
User-Key auth (401 without a known key), a per-account rate limit answered with 429 and
Retry-After, OData-style paths (/Contacts(123), /Deals(7)/Win), $top/$skip paging with the
{"value": [...]} envelope, webhook listing and creation, /Webhooks@Actions.

Usage: ploomes_fake.py --user-key KEY [--user-key KEY2 ...]; each key is its own account. It
listens on 127.0.0.1 on a free port and prints that port on the first line of stdout.

Control endpoints (no auth), for tests:
  GET  /_control/requests          every API request seen: method, path, query, headers, body,
                                   status answered, t (unix seconds)
  POST /_control/config            {"rate_limit": n, "window": seconds, "max_top": n,
                                   "delay": seconds every API answer waits (a slow API)}
  POST /_control/fail              {"status": 500, "count": 1, "method": "POST", "path": "/Deals",
                                   "retry_after": 1, "message": "..."}: the next matching
                                   requests get that answer ("path" exact, or a prefix ending
                                   in "*"; authentication and the rate limit come first)
  POST /_control/seed              {"key": KEY, "webhooks": [...], "contacts": [...],
                                   "deals": [...]}: preload an account
  GET  /_control/state             every account's data
  POST /_control/reset_log         forget the request log
Python standard library only."""
import argparse
import json
import math
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_PAYLOAD = 10 * 1000 * 1000
ACTIONS = [
    {"Id": 1, "Name": "Create"},
    {"Id": 2, "Name": "Update"},
    {"Id": 3, "Name": "Delete"},
    {"Id": 4, "Name": "Win"},
    {"Id": 5, "Name": "Lose"},
    {"Id": 6, "Name": "Reopen"},
    {"Id": 7, "Name": "Finish"},
]


class ApiError(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Account:
    def __init__(self):
        self.contacts = {}
        self.deals = {}
        self.webhooks = {}
        self.next_id = 1000
        self.hits = []  # times of requests counted by the rate limiter

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def dump(self):
        return {"contacts": list(self.contacts.values()), "deals": list(self.deals.values()),
                "webhooks": list(self.webhooks.values())}


class State:
    def __init__(self, keys):
        self.lock = threading.Lock()
        self.accounts = {k: Account() for k in keys}
        self.requests = []
        self.rate_limit = 120
        self.window = 60.0
        self.max_top = 300
        self.delay = 0.0
        self.failures = []


STATE = None


def odata_page(items, query):
    try:
        top = int(query.get("$top", [str(STATE.max_top)])[0])
        skip = int(query.get("$skip", ["0"])[0])
    except ValueError:
        raise ApiError(400, "$top and $skip must be integers")
    if top < 0 or skip < 0:
        raise ApiError(400, "$top and $skip must not be negative")
    flt = query.get("$filter", [None])[0]
    if flt:
        m = re.fullmatch(r"\s*(\w+)\s+eq\s+(?:'((?:[^']|'')*)'|(-?\d+))\s*", flt)
        if not m:
            raise ApiError(400, "unsupported $filter: " + flt)
        field = m.group(1)
        want = m.group(2).replace("''", "'") if m.group(2) is not None else int(m.group(3))
        items = [x for x in items if x.get(field) == want]
    items = sorted(items, key=lambda x: x["Id"])
    return {"value": items[skip:skip + min(top, STATE.max_top)]}


def need(body, field, kind):
    v = body.get(field)
    if not isinstance(v, kind) or isinstance(v, bool):
        raise ApiError(400, f"The field {field} is required.")
    return v


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj, headers=None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_PAYLOAD:
            self.rfile.read(n)
            raise ApiError(413, "payload too large (10 MB max)")
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            raw = self.read_body()
        except ApiError as e:
            self.send_json(e.status, {"error": {"message": e.message}})
            return
        if path.startswith("/_control/"):
            self.control(path, raw)
            return
        rec = {"t": time.time(), "method": self.command, "path": path, "query": url.query,
               "params": {k: v[0] for k, v in query.items()},
               "headers": {k.lower(): v for k, v in self.headers.items()
                           if k.lower() in ("user-key", "content-type", "accept")},
               "body": None}
        if raw:
            try:
                rec["body"] = json.loads(raw)
            except ValueError:
                rec["body"] = raw.decode(errors="replace")
        status, obj, headers = 500, None, {}
        if STATE.delay:
            time.sleep(STATE.delay)  # outside the lock: requests overlap as on a slow API
        try:
            status, obj = self.api(path, query, raw, rec)
        except ApiError as e:
            status, obj, headers = e.status, {"error": {"message": e.message}}, e.headers
        rec["status"] = status
        with STATE.lock:
            STATE.requests.append(rec)
        self.send_json(status, obj, headers)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

    def control(self, path, raw):
        body = json.loads(raw) if raw else {}
        with STATE.lock:
            if path == "/_control/requests":
                self.send_json(200, STATE.requests)
            elif path == "/_control/state":
                self.send_json(200, {k: a.dump() for k, a in STATE.accounts.items()})
            elif path == "/_control/config":
                STATE.rate_limit = body.get("rate_limit", STATE.rate_limit)
                STATE.window = float(body.get("window", STATE.window))
                STATE.max_top = body.get("max_top", STATE.max_top)
                STATE.delay = float(body.get("delay", STATE.delay))
                self.send_json(200, {"ok": True})
            elif path == "/_control/fail":
                STATE.failures.append(dict(body, count=body.get("count", 1)))
                self.send_json(200, {"ok": True})
            elif path == "/_control/seed":
                acc = STATE.accounts[body["key"]]
                for kind in ("webhooks", "contacts", "deals"):
                    for item in body.get(kind, []):
                        item = dict(item)
                        item.setdefault("Id", acc.new_id())
                        getattr(acc, kind)[item["Id"]] = item
                self.send_json(200, {"ok": True})
            elif path == "/_control/reset_log":
                STATE.requests.clear()
                self.send_json(200, {"ok": True})
            else:
                self.send_json(404, {"error": {"message": "unknown control endpoint"}})

    def api(self, path, query, raw, rec):
        key = self.headers.get("User-Key")
        if not key:
            raise ApiError(401, "User-Key header is missing")
        with STATE.lock:
            acc = STATE.accounts.get(key)
            if acc is None:
                raise ApiError(401, "Invalid User-Key")
            now = time.time()
            acc.hits = [t for t in acc.hits if t > now - STATE.window]
            if len(acc.hits) >= STATE.rate_limit:
                wait = max(1, math.ceil(acc.hits[0] + STATE.window - now))
                raise ApiError(429, "Too many requests: limit is %d per %g s" %
                               (STATE.rate_limit, STATE.window), {"Retry-After": str(wait)})
            acc.hits.append(now)
            for f in STATE.failures:
                want = f.get("path", "*")
                hit = path == want or (want.endswith("*") and path.startswith(want[:-1]))
                if f["count"] > 0 and f.get("method", self.command) == self.command and hit:
                    f["count"] -= 1
                    headers = {}
                    if "retry_after" in f:
                        headers["Retry-After"] = str(f["retry_after"])
                    raise ApiError(f.get("status", 500), f.get("message", "injected failure"),
                                   headers)
            body = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "The request body is not valid JSON")
            if self.command in ("POST", "PATCH", "PUT") and body is not None and \
                    not isinstance(body, dict):
                raise ApiError(400, "The request body must be a JSON object")
            return self.route(acc, path, query, body or {})

    def route(self, acc, path, query, body):
        m = self.command
        if path == "/Webhooks@Actions" and m == "GET":
            return 200, {"value": ACTIONS}
        if path == "/Webhooks":
            if m == "GET":
                return 200, odata_page(list(acc.webhooks.values()), query)
            if m == "POST":
                hook = {"Id": acc.new_id(),
                        "EntityId": need(body, "EntityId", int),
                        "ActionId": need(body, "ActionId", int),
                        "CallbackUrl": need(body, "CallbackUrl", str),
                        "ValidationKey": need(body, "ValidationKey", str),
                        "Active": True}
                if hook["ActionId"] not in [a["Id"] for a in ACTIONS]:
                    raise ApiError(400, "Invalid ActionId %d" % hook["ActionId"])
                if not re.match(r"https?://", hook["CallbackUrl"]):
                    raise ApiError(400, "CallbackUrl must be an http(s) URL")
                acc.webhooks[hook["Id"]] = hook
                return 200, {"value": [hook]}
        mm = re.fullmatch(r"/Webhooks\((\d+)\)", path)
        if mm:
            hook = acc.webhooks.get(int(mm.group(1)))
            if hook is None:
                raise ApiError(404, "Webhook not found")
            if m == "GET":
                return 200, {"value": [hook]}
            if m == "PATCH":
                hook.update({k: v for k, v in body.items() if k != "Id"})
                return 200, {"value": [hook]}
            if m == "DELETE":
                del acc.webhooks[hook["Id"]]
                return 200, None
        mm = re.fullmatch(r"/(Contacts|Deals)", path)
        if mm:
            store = acc.contacts if mm.group(1) == "Contacts" else acc.deals
            if m == "GET":
                return 200, odata_page(list(store.values()), query)
            if m == "POST":
                item = dict(body)
                if store is acc.contacts:
                    need(body, "Name", str)
                else:
                    need(body, "Title", str)
                    cid = body.get("ContactId")
                    if cid is not None and cid not in acc.contacts:
                        raise ApiError(400, "ContactId %s does not exist" % cid)
                    item.setdefault("StatusId", 1)
                item["Id"] = acc.new_id()
                store[item["Id"]] = item
                return 200, {"value": [item]}
        mm = re.fullmatch(r"/(Contacts|Deals)\((\d+)\)(?:/(Win|Lose|Reopen))?", path)
        if mm:
            store = acc.contacts if mm.group(1) == "Contacts" else acc.deals
            item = store.get(int(mm.group(2)))
            if item is None:
                raise ApiError(404, "%s %s not found" % (mm.group(1)[:-1], mm.group(2)))
            op = mm.group(3)
            if op and m == "POST" and store is acc.deals:
                if op in ("Win", "Lose") and item.get("StatusId", 1) != 1:
                    raise ApiError(400, "Deal %d is not open" % item["Id"])
                if op == "Win":
                    item["StatusId"] = 2
                    if "WonAmount" in body:
                        item["Amount"] = body["WonAmount"]
                elif op == "Lose":
                    item["StatusId"] = 3
                    if "LossReasonId" in body:
                        item["LossReasonId"] = body["LossReasonId"]
                else:
                    item["StatusId"] = 1
                return 200, {"value": [item]}
            if not op and m == "GET":
                return 200, {"value": [item]}
            if not op and m == "PATCH":
                item.update({k: v for k, v in body.items() if k != "Id"})
                return 200, {"value": [item]}
            if not op and m == "DELETE":
                del store[item["Id"]]
                return 200, None
        raise ApiError(404, "No resource matches %s %s" % (m, path))


def main():
    global STATE
    ap = argparse.ArgumentParser()
    ap.add_argument("--user-key", action="append", default=[])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    STATE = State(args.user_key)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
