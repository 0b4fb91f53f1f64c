#!/usr/bin/env python3
"""Test peer: an HTTP/1.1 server on 127.0.0.1 that checks AWS Signature Version 4.

It recomputes the signature of every request from the request it received (method, path, query,
the signed headers, the body) and the secret it was given, following the published SigV4
algorithm, and answers 200 "signature ok" when it matches, 403 with the reason otherwise.

Usage: sigv4_peer.py --key AKID --secret SECRET --region us-east-1 --service sqs
                     [--tls-cert CERT --tls-key KEY]
With --tls-cert it speaks HTTPS. GET /ping answers 200 "pong" without any check (for TLS tests).
Prints "port=N" on stdout once listening. Exits when stdin reaches end of file (the test that
started it has gone) or on SIGTERM.
"""
import argparse
import datetime
import hashlib
import hmac
import os
import re
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALGORITHM = "AWS4-HMAC-SHA256"
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})$"
)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def hmac_sha256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def uri_encode(s, keep_slash):
    return urllib.parse.quote(s, safe="-_.~" + ("/" if keep_slash else ""))


def canonical_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    enc = sorted((uri_encode(k, False), uri_encode(v, False)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def canonical_header_value(values):
    return ",".join(" ".join(v.strip().split()) for v in values)


def verify(method, target, headers, body, cfg):
    """Returns None when the signature is right, else the reason it is not."""
    auth = headers.get("Authorization")
    if not auth:
        return "missing authorization"
    m = AUTH_RE.match(auth.strip())
    if not m:
        return "malformed authorization"
    key, date, region, service, signed, signature = m.groups()
    if key != cfg.key:
        return "unknown access key"
    if region != cfg.region or service != cfg.service:
        return "wrong scope"
    amz_date = headers.get("X-Amz-Date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return "bad x-amz-date"
    when = when.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    if abs((now - when).total_seconds()) > 15 * 60:
        return "x-amz-date too far from now"
    if amz_date[:8] != date:
        return "scope date differs from x-amz-date"
    names = signed.split(";")
    if names != sorted(names) or "host" not in names or "x-amz-date" not in names:
        return "bad signed headers"

    payload_hash = sha256_hex(body)
    declared = headers.get("X-Amz-Content-Sha256")
    if declared is not None and declared != payload_hash:
        return "x-amz-content-sha256 does not match the body"

    split = urllib.parse.urlsplit(target)
    canon_headers = ""
    for name in names:
        values = headers.get_all(name)
        if values is None:
            return f"signed header {name} missing"
        canon_headers += f"{name}:{canonical_header_value(values)}\n"
    canonical = "\n".join([
        method,
        uri_encode(split.path or "/", True),
        canonical_query(split.query),
        canon_headers,
        signed,
        payload_hash,
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, sha256_hex(canonical.encode())])
    k = hmac_sha256(("AWS4" + cfg.secret).encode(), date)
    k = hmac_sha256(k, region)
    k = hmac_sha256(k, service)
    k = hmac_sha256(k, "aws4_request")
    expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "signature mismatch"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cfg = None

    def log_message(self, fmt, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/ping":
            status, text = 200, "pong"
        else:
            reason = verify(self.command, self.path, self.headers, body, self.cfg)
            status, text = (200, "signature ok") if reason is None else (403, reason)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--region", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    cfg = ap.parse_args()
    Handler.cfg = cfg
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # e.g. a client refusing our cert
    if cfg.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        # Handshakes happen in the handler threads, so a failed one never stalls the server.
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)

    def watch_stdin():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"port={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
