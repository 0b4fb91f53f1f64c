"""A fake amoCRM (API v4 + OAuth2) for integration tests, following amoCRM's documented behaviour:

- POST /oauth2/access_token: authorization_code and refresh_token grants; an authorization code
  works once; every refresh returns a new pair and the old refresh token stops working (a reused
  one is refused with 400 "Token has been revoked"); access tokens expire after `expires_in`.
- /api/v4/*: Bearer token required (401 problem+json when unknown or expired); a sliding
  one-second rate limit (429 with Retry-After past `rps`, body not JSON); lists paginated with
  page/limit, `_page` and `_links.self/next`, 204 when a page is empty.
- GET /api/v4/account, /users, /leads/pipelines (statuses embedded), /leads/pipelines/{id}/statuses,
  /{leads,contacts,companies,customers}/custom_fields and /tags.
- POST /api/v4/leads/complex: validated like amoCRM does (at most 50 leads, one contact and one
  company each, 40 custom field values per entity, known pipeline/status/user/field/enum/tag ids)
  with 400 problem+json "validation-errors" pointing at the offending path.

Control endpoints (no auth) under /_fake/: POST code (mint an authorization code), expire (all
access tokens), revoke (all refresh tokens), fail ({path, status, count, retry_after}, or
{path, delay, count} to answer late), config
({expires_in, rps, max_limit}), data (replace lists), GET state (leads, grants, request log,
and `per_second`: the most /api/v4 requests that arrived within one second, counted per
whole-second window of arrival time, 429s included; POST reset_rate starts it again).

Standard library only; threaded; binds 127.0.0.1 on port 0 unless told otherwise.
"""
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LEAD_KEYS = {"name", "price", "status_id", "pipeline_id", "created_by", "updated_by",
             "closed_at", "created_at", "updated_at", "loss_reason_id", "responsible_user_id",
             "custom_fields_values", "_embedded", "request_id"}
TRACKING_CODES = {"UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_TERM", "UTM_CONTENT",
                  "UTM_REFERRER", "GCLID", "FBCLID", "YCLID"}
MULTITEXT_ENUMS = {"WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER", "PRIV"}


def problem(status, title, detail, errors=None):
    body = {"title": title, "type": "https://httpstatus.es/%d" % status, "status": status,
            "detail": detail}
    if errors is not None:
        body["validation-errors"] = errors
    return body


class AmoFake:
    def __init__(self, data, client_id, client_secret, redirect_uri, port=0):
        self.lock = threading.RLock()
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.data = json.loads(json.dumps(data))
        self.expires_in = 86400
        self.rps = 7
        self.max_limit = 250
        self.codes = {}          # code -> issued at
        self.access = {}         # token -> expires at
        self.refresh = set()     # refresh tokens that still work
        self.grants = {"authorization_code": 0, "refresh_token": 0, "refused": 0}
        self.window = []         # times of recent API requests
        self.per_second = {}     # whole second of arrival -> /api/v4 requests that arrived
        self.fails = []          # forced answers
        self.log = []            # (time, method, path, status)
        self.leads, self.contacts, self.companies = [], [], []
        self.next_id = 9000001
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self, "GET")

            def do_POST(self):
                fake.handle(self, "POST")

            def do_PATCH(self):
                fake.handle(self, "PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # --- plumbing -----------------------------------------------------------------------------

    def send(self, h, status, body=None, ctype="application/json", headers=None):
        raw = b""
        if body is not None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        if status != 204:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(raw)))
        h.send_header("X-Request-Id", secrets.token_hex(6))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if raw:
            h.wfile.write(raw)
        with self.lock:
            self.log.append((time.time(), h.command, h.path, status))

    def handle(self, h, method):
        u = urlparse(h.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        try:
            if u.path.startswith("/_fake/"):
                return self.control(h, method, u.path[len("/_fake/"):], raw)
            if u.path == "/oauth2/access_token" and method == "POST":
                return self.token(h, raw)
            if u.path.startswith("/api/v4/"):
                return self.api(h, method, u.path, q, raw)
            self.send(h, 404, problem(404, "Not Found", "no such endpoint"))
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client gave up (a cancelled call): like amoCRM,
            # whatever the request did stays done
        except Exception as e:  # a bug in the fake must show, not hang the plugin
            try:
                self.send(h, 500, problem(500, "Internal Server Error", repr(e)))
            except OSError:
                h.close_connection = True

    # --- control ------------------------------------------------------------------------------

    def control(self, h, method, what, raw):
        body = json.loads(raw) if raw else {}
        with self.lock:
            if what == "code":
                code = "code-" + secrets.token_hex(8)
                self.codes[code] = time.time()
                return self.send(h, 200, {"code": code})
            if what == "expire":
                for t in self.access:
                    self.access[t] = 0
                return self.send(h, 200, {"expired": len(self.access)})
            if what == "revoke":
                n = len(self.refresh)
                self.refresh.clear()
                return self.send(h, 200, {"revoked": n})
            if what == "fail":
                self.fails.append(dict(body))
                return self.send(h, 200, {"queued": len(self.fails)})
            if what == "config":
                for k in ("expires_in", "rps", "max_limit"):
                    if k in body:
                        setattr(self, k, body[k])
                return self.send(h, 200, {})
            if what == "reset_rate":
                self.per_second = {}
                return self.send(h, 200, {})
            if what == "data":
                self.data.update(body)
                return self.send(h, 200, {})
            if what == "state":
                return self.send(h, 200, {
                    "leads": self.leads, "contacts": self.contacts, "companies": self.companies,
                    "grants": self.grants, "log": self.log,
                    "per_second": max(self.per_second.values(), default=0),
                    "count": {str(s): sum(1 for x in self.log if x[3] == s)
                              for s in {x[3] for x in self.log}}})
        self.send(h, 404, problem(404, "Not Found", "unknown control " + what))

    # --- OAuth2 -------------------------------------------------------------------------------

    def issue(self):
        access = "acc-" + secrets.token_hex(16)
        refresh = "ref-" + secrets.token_hex(16)
        self.access[access] = time.time() + self.expires_in
        self.refresh.add(refresh)
        return {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": access,
                "refresh_token": refresh, "server_time": int(time.time())}

    def token(self, h, raw):
        try:
            b = json.loads(raw)
        except ValueError:
            return self.send(h, 400, problem(400, "Bad Request", "body is not JSON"))
        with self.lock:
            if b.get("client_id") != self.client_id or \
                    b.get("client_secret") != self.client_secret:
                self.grants["refused"] += 1
                return self.send(h, 401, dict(problem(401, "Unauthorized", "client"),
                                              hint="Client authentication failed"))
            if b.get("redirect_uri") != self.redirect_uri:
                self.grants["refused"] += 1
                return self.send(h, 400, dict(problem(400, "Bad Request", "redirect_uri"),
                                              hint="redirect_uri mismatch"))
            grant = b.get("grant_type")
            if grant == "authorization_code":
                at = self.codes.pop(b.get("code"), None)
                if at is None or time.time() - at > 20 * 60:
                    self.grants["refused"] += 1
                    return self.send(h, 400, dict(problem(400, "Bad Request", "code"),
                                                  hint="Authorization code has been revoked"))
            elif grant == "refresh_token":
                rt = b.get("refresh_token")
                if rt not in self.refresh:
                    self.grants["refused"] += 1
                    return self.send(h, 400, dict(problem(400, "Bad Request", "refresh_token"),
                                                  hint="Token has been revoked"))
                self.refresh.discard(rt)  # single use
            else:
                return self.send(h, 400, problem(400, "Bad Request", "grant_type"))
            self.grants[grant] += 1
            return self.send(h, 200, self.issue())

    # --- API ----------------------------------------------------------------------------------

    def api(self, h, method, path, q, raw):
        delay = 0
        with self.lock:
            for f in self.fails:
                if "delay" in f and path.startswith(f.get("path", "/")) and f.get("count", 1) > 0:
                    f["count"] = f.get("count", 1) - 1
                    delay = f["delay"]
        if delay:
            time.sleep(delay)  # a slow amoCRM: answer late, outside the lock
        with self.lock:
            sec = int(time.time())
            self.per_second[sec] = self.per_second.get(sec, 0) + 1
            auth = h.headers.get("Authorization", "")
            tok = auth[7:] if auth.startswith("Bearer ") else None
            if not tok or self.access.get(tok, 0) <= time.time():
                return self.send(h, 401, problem(401, "Unauthorized", "token expired or invalid"),
                                 ctype="application/problem+json")
            for f in self.fails:
                if "delay" not in f and path.startswith(f.get("path", "/")) and \
                        f.get("count", 1) > 0:
                    f["count"] = f.get("count", 1) - 1
                    st = f.get("status", 500)
                    hdrs = {"Retry-After": str(f["retry_after"])} if "retry_after" in f else {}
                    if st == 429:
                        return self.send(h, 429, b"Too Many Requests", ctype="text/plain",
                                         headers=hdrs)
                    return self.send(h, st, problem(st, "Forced", "forced failure"),
                                     ctype="application/problem+json", headers=hdrs)
            now = time.time()
            self.window = [t for t in self.window if now - t < 1.0]
            if len(self.window) >= self.rps:
                return self.send(h, 429, b"Too Many Requests", ctype="text/plain",
                                 headers={"Retry-After": "1"})
            self.window.append(now)
            d = self.data
            if method == "GET":
                if path == "/api/v4/account":
                    acc = dict(d["account"])
                    if "drive_url" not in q.get("with", ""):
                        acc.pop("drive_url", None)
                    return self.send(h, 200, acc, ctype="application/hal+json")
                if path == "/api/v4/users":
                    return self.page(h, path, q, "users", d["users"])
                if path == "/api/v4/leads/pipelines":
                    return self.page(h, path, q, "pipelines", d["pipelines"])
                m = re.fullmatch(r"/api/v4/leads/pipelines/(\d+)/statuses", path)
                if m:
                    p = [x for x in d["pipelines"] if x["id"] == int(m.group(1))]
                    if not p:
                        return self.send(h, 404, problem(404, "Not Found", "pipeline"))
                    return self.page(h, path, q, "statuses", p[0]["_embedded"]["statuses"])
                m = re.fullmatch(r"/api/v4/(leads|contacts|companies|customers)/"
                                 r"(custom_fields|tags)", path)
                if m:
                    src = d["custom_fields" if m.group(2) == "custom_fields" else "tags"]
                    return self.page(h, path, q, m.group(2), src.get(m.group(1), []))
            if method == "POST" and path == "/api/v4/leads/complex":
                return self.complex(h, raw)
            return self.send(h, 404, problem(404, "Not Found", "no such endpoint"))

    def page(self, h, path, q, name, items):
        try:
            page = int(q.get("page", 1))
            limit = int(q.get("limit", 50))
        except ValueError:
            return self.send(h, 400, problem(400, "Bad Request", "page/limit"))
        if page < 1 or limit < 1:
            return self.send(h, 400, problem(400, "Bad Request", "page/limit"))
        limit = min(limit, self.max_limit, 250)
        chunk = items[(page - 1) * limit: page * limit]
        if not chunk:
            return self.send(h, 204)
        base = "%s%s?limit=%d" % (self.url, path, limit)
        links = {"self": {"href": "%s&page=%d" % (base, page)}}
        if page * limit < len(items):
            links["next"] = {"href": "%s&page=%d" % (base, page + 1)}
        return self.send(h, 200, {"_page": page, "_links": links, "_embedded": {name: chunk}},
                         ctype="application/hal+json")

    # --- leads/complex ------------------------------------------------------------------------

    def check_cfv(self, entity, cfv, path, errs, codes):
        if not isinstance(cfv, list):
            errs.append(("InvalidType", path, "This value should be of type array."))
            return
        if len(cfv) > 40:
            errs.append(("TooMany", path, "This collection should contain 40 elements or less."))
        fields = {f["id"]: f for f in self.data["custom_fields"].get(entity, [])}
        for i, cf in enumerate(cfv):
            p = "%s.%d" % (path, i)
            f = None
            if "field_id" in cf:
                f = fields.get(cf["field_id"])
                if f is None:
                    errs.append(("NotSupportedChoice", p + ".field_id",
                                 "The value you selected is not a valid choice."))
                    continue
            elif cf.get("field_code") not in codes:
                errs.append(("NotSupportedChoice", p + ".field_code",
                             "The value you selected is not a valid choice."))
                continue
            vals = cf.get("values")
            if not isinstance(vals, list) or not vals:
                errs.append(("NotBlank", p + ".values", "This value should not be blank."))
                continue
            ftype = f["type"] if f else "multitext" if cf["field_code"] in (
                "PHONE", "EMAIL") else "text"
            for j, v in enumerate(vals):
                vp = "%s.values.%d" % (p, j)
                if ftype in ("select", "multiselect", "radiobutton"):
                    enums = {e["id"]: e["value"] for e in f.get("enums", [])}
                    if "enum_id" in v:
                        if v["enum_id"] not in enums:
                            errs.append(("NotSupportedChoice", vp + ".enum_id",
                                         "The value you selected is not a valid choice."))
                    elif v.get("value") not in enums.values():
                        errs.append(("NotSupportedChoice", vp + ".value",
                                     "The value you selected is not a valid choice."))
                elif ftype == "checkbox":
                    if not isinstance(v.get("value"), bool):
                        errs.append(("InvalidType", vp + ".value",
                                     "This value should be of type bool."))
                elif ftype == "numeric":
                    try:
                        float(v.get("value"))
                    except (TypeError, ValueError):
                        errs.append(("InvalidType", vp + ".value",
                                     "This value should be of type numeric."))
                elif ftype == "multitext":
                    if not isinstance(v.get("value"), str) or not v["value"]:
                        errs.append(("NotBlank", vp + ".value", "This value should not be blank."))
                    if v.get("enum_code", "WORK") not in MULTITEXT_ENUMS:
                        errs.append(("NotSupportedChoice", vp + ".enum_code",
                                     "The value you selected is not a valid choice."))
                elif not isinstance(v.get("value"), (str, int, float)):
                    errs.append(("InvalidType", vp + ".value",
                                 "This value should be of type string."))

    def check_tags(self, entity, tags, path, errs):
        known = {t["id"] for t in self.data["tags"].get(entity, [])}
        for i, t in enumerate(tags or []):
            if "id" in t and t["id"] not in known:
                errs.append(("NotSupportedChoice", "%s.%d.id" % (path, i),
                             "The value you selected is not a valid choice."))
            elif "id" not in t and not t.get("name"):
                errs.append(("NotBlank", "%s.%d.name" % (path, i),
                             "This value should not be blank."))

    def complex(self, h, raw):
        try:
            body = json.loads(raw)
        except ValueError:
            return self.send(h, 400, problem(400, "Bad Request", "Request body is not JSON"),
                             ctype="application/problem+json")
        errs_all = []
        if not isinstance(body, list) or not body or len(body) > 50:
            errs_all.append({"request_id": "0", "errors": [
                {"code": "InvalidCount", "path": "",
                 "detail": "This collection should contain 1 to 50 elements."}]})
            body = []
        users = {u["id"] for u in self.data["users"]}
        pipes = {p["id"]: p for p in self.data["pipelines"]}
        main = next((p for p in self.data["pipelines"] if p.get("is_main")), None)
        for idx, lead in enumerate(body):
            errs = []
            if not isinstance(lead, dict):
                errs.append(("InvalidType", "", "This value should be of type object."))
            else:
                for k in lead:
                    if k not in LEAD_KEYS:
                        errs.append(("NotSupportedField", k, "This field is not supported."))
                pipe = pipes.get(lead.get("pipeline_id")) if "pipeline_id" in lead else main
                if pipe is None:
                    errs.append(("NotSupportedChoice", "pipeline_id",
                                 "The value you selected is not a valid choice."))
                elif "status_id" in lead and lead["status_id"] not in \
                        {s["id"] for s in pipe["_embedded"]["statuses"]}:
                    errs.append(("NotSupportedChoice", "status_id",
                                 "The value you selected is not a valid choice."))
                if "responsible_user_id" in lead and lead["responsible_user_id"] not in users:
                    errs.append(("NotSupportedChoice", "responsible_user_id",
                                 "The value you selected is not a valid choice."))
                if "price" in lead and not isinstance(lead["price"], int):
                    errs.append(("InvalidType", "price", "This value should be of type int."))
                if "custom_fields_values" in lead:
                    self.check_cfv("leads", lead["custom_fields_values"], "custom_fields_values",
                                   errs, TRACKING_CODES)
                emb = lead.get("_embedded", {})
                self.check_tags("leads", emb.get("tags"), "_embedded.tags", errs)
                for kind, ent, codes in (("contacts", "contacts", {"PHONE", "EMAIL"}),
                                         ("companies", "companies", {"PHONE", "EMAIL"})):
                    lst = emb.get(kind, [])
                    if len(lst) > 1:
                        errs.append(("TooMany", "_embedded.%s" % kind,
                                     "This collection should contain 1 element or less."))
                    for i, c in enumerate(lst):
                        p = "_embedded.%s.%d" % (kind, i)
                        if "custom_fields_values" in c:
                            self.check_cfv(ent, c["custom_fields_values"],
                                           p + ".custom_fields_values", errs, codes)
                        self.check_tags(ent, c.get("_embedded", {}).get("tags"),
                                        p + "._embedded.tags", errs)
                        if "responsible_user_id" in c and c["responsible_user_id"] not in users:
                            errs.append(("NotSupportedChoice", p + ".responsible_user_id",
                                         "The value you selected is not a valid choice."))
            if errs:
                errs_all.append({"request_id": str(idx), "errors": [
                    {"code": c, "path": p, "detail": d} for c, p, d in errs]})
        if errs_all:
            return self.send(h, 400, problem(400, "Bad Request", "Request validation failed",
                                             errs_all), ctype="application/problem+json")
        out = []
        for idx, lead in enumerate(body):
            emb = lead.get("_embedded", {})
            lid = self.next_id
            self.next_id += 1
            cid = mid = None
            if emb.get("contacts"):
                cid = self.next_id
                self.next_id += 1
                self.contacts.append(dict(emb["contacts"][0], id=cid))
            if emb.get("companies"):
                mid = self.next_id
                self.next_id += 1
                self.companies.append(dict(emb["companies"][0], id=mid))
            self.leads.append(dict(lead, id=lid))
            out.append({"id": lid, "contact_id": cid, "company_id": mid,
                        "request_id": [str(lead.get("request_id", idx))], "merged": False})
        return self.send(h, 200, out, ctype="application/hal+json")


def main():
    """Standalone: python3 amocrm_fake.py DATA.json CLIENT_ID SECRET REDIRECT_URI [PORT]"""
    with open(sys.argv[1]) as f:
        data = json.load(f)
    port = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    fake = AmoFake(data, sys.argv[2], sys.argv[3], sys.argv[4], port)
    print(fake.port, flush=True)
    fake.server.serve_forever()


if __name__ == "__main__":
    main()
