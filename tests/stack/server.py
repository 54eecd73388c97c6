# SPDX-License-Identifier: Apache-2.0
"""Shared base of every local-stack service: HTTPS server, routing, request log, faults.

A service is a ``StackService`` with routes::

    svc = StackService("ita", state_dir)

    @svc.route("GET", r"/certs")
    def certs(req):
        return json_response(200, {...})

    svc.serve()          # or: main(factory) for a command-line entry point

``serve()`` listens on 127.0.0.1 (port 0 = kernel-chosen), one thread per connection, with TLS
(tls-server.pem/.key of the state dir, TLS >= 1.2) or plain HTTP, speaks HTTP/1.1 keep-alive
with exact Content-Length, then
announces itself by writing ``{state_dir}/{name}.json`` = {"name", "pid", "port", "url"}
atomically, and serves until SIGTERM/SIGINT (exit status 0; the announce file is removed).

Request log: one JSON line per request in ``{state_dir}/{name}-requests.jsonl`` with
{"t", "method", "path", "status", "request_id", "has_api_key", "user_agent", "attestation_type", "fault",
"ms"} (``ms``: the time the service took, from the request read to its response, latency included).
Other header values, bodies, API keys, tokens and key bytes are never logged.  Handlers may set
``req.attestation_type``, and add non-secret fields to their record through ``req.log_extra``
(the ITA service logs a digest of each nonce it issues or consumes).

Faults: a fault is a dict {"route": regex searched in the path (default ".*"), "method":
optional, "mode": str, "count": N or null (null = every matching request), ...params}.  The
first matching fault is taken (its count decremented atomically; it is dropped at 0).
Generic modes, handled here:

    status          reply params.status (default 503) with params.body (str, or JSON value;
                    default {"error": "injected fault"}) and params.headers (e.g. Retry-After)
    delay           sleep params.seconds (default 1), then handle normally
    truncate        real response headers with the full Content-Length, half the body, close
    oversize        200 application/json streaming a JSON-looking body of params.bytes bytes
                    (default 64 MiB)
    malformed_json  200 application/json whose body is not JSON
    unknown_fields  handler runs; an unexpected top-level field is added to a JSON object body
    close           close the connection without any response
    html_error      400 text/html error page as an AWS ELB sends it (Server: awselb/2.0)

Any other mode is service specific: the handler sees it as ``req.fault``.  Faults are set per
run with ``--fault JSON`` (repeatable) or at runtime through the control API, authorized by the
header ``X-Stack-Control: <contents of control-token>``:

    PUT /_stack/faults {"faults": [...]}   replace the list       GET /_stack/faults
    DELETE /_stack/faults                  clear it
    GET /_stack/requests                   {"requests": [log records]}
    DELETE /_stack/requests                clear the in-memory log
    PUT /_stack/latency {"ms": N}          added network latency (GET reads it)

A service adds control endpoints of its own by overriding ``service_control(req)`` (None for a
path it does not know); the KBS's ``/_stack/transfer-cost`` is one.

Latency (``--latency-ms N`` or the control API) models a real network for benchmarks: every
request waits N ms (one round trip) before it is handled, and every new connection waits 2 N ms
once (the TCP and the TLS 1.3 handshake round trips), so keep-alive pays off as it would on a
WAN.  Control requests are never delayed.  Default 0.
"""

import argparse
import copy
import hmac
import http.server
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
from urllib.parse import parse_qs, urlsplit

from . import pki

CONTROL_HEADER = "X-Stack-Control"
DRAIN_MAX = 64 * 1024 * 1024
GENERIC_FAULTS = {"status", "delay", "truncate", "oversize", "malformed_json", "unknown_fields",
                  "close", "html_error"}
ELB_400_PAGE = (b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n"
                b"<center><h1>400 Bad Request</h1></center>\r\n</body>\r\n</html>\r\n")


class HttpError(Exception):
    """Raised by handlers: becomes a JSON error response with this status."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BadRequest(HttpError):
    def __init__(self, message):
        super().__init__(400, message)


class Request:
    """One parsed request as seen by a handler."""

    def __init__(self, method, target, headers, body):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.query = parse_qs(parts.query)
        self.headers = headers          # email.message.Message: case-insensitive get()
        self.body = body
        self.match = None
        self.fault = None
        self.attestation_type = None
        self.log_extra = {}             # extra non-secret fields for this request's log record
        self.t_start = time.monotonic()

    def json(self):
        """The body parsed as JSON; BadRequest if it is not valid JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from None


class Response:
    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = dict(headers or {})


def json_response(status, obj, headers=None):
    return Response(status, json.dumps(obj).encode(),
                    {"Content-Type": "application/json", **(headers or {})})


def text_response(status, text):
    return Response(status, text, {"Content-Type": "text/plain; charset=utf-8"})


def error_response(status, message, headers=None):
    return json_response(status, {"error": message}, headers)


class StackService:
    """Routes, faults and request log of one service; serve() runs it."""

    max_body = 16 * 1024 * 1024      # larger request bodies are drained and get 413

    def __init__(self, name, state_dir):
        self.name = name
        self.state_dir = os.path.abspath(state_dir)
        self.routes = []
        self.url = None
        self.port = None
        self._faults = []
        self._log = []
        self._lock = threading.Lock()
        self._log_path = os.path.join(self.state_dir, f"{name}-requests.jsonl")
        self._control_token = pki.control_token(self.state_dir)
        self.latency_ms = 0.0

    # ------------------------------------------------------------------ routing

    def add_route(self, method, regex, fn):
        self.routes.append((method.upper(), re.compile(regex), fn))

    def route(self, method, regex):
        def deco(fn):
            self.add_route(method, regex, fn)
            return fn
        return deco

    def dispatch(self, req):
        """Run the matching handler; HttpError and crashes become error responses."""
        allowed = False
        for method, rx, fn in self.routes:
            m = rx.fullmatch(req.path)
            if not m:
                continue
            allowed = True
            if method != req.method:
                continue
            req.match = m
            try:
                return fn(req)
            except HttpError as e:
                return error_response(e.status, e.message, e.headers)
            except Exception:  # a handler bug must still produce a response
                traceback.print_exc()
                return error_response(500, "internal error")
        return error_response(405 if allowed else 404,
                              "method not allowed" if allowed else "not found")

    # ------------------------------------------------------------------ faults

    def set_faults(self, faults):
        for f in faults:
            if not isinstance(f, dict) or not isinstance(f.get("mode"), str):
                raise ValueError(f"fault must be an object with a string mode: {f!r}")
            re.compile(f.get("route", ".*"))
        with self._lock:
            self._faults = [dict(f) for f in faults]

    def faults(self):
        with self._lock:
            return copy.deepcopy(self._faults)

    def take_fault(self, method, path):
        """The first fault matching this request (a copy), decrementing its count."""
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.get("method") and f["method"].upper() != method:
                    continue
                if not re.search(f.get("route", ".*"), path):
                    continue
                if f.get("count") is not None:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        del self._faults[i]
                return dict(f)
        return None

    def active_fault_modes(self):
        """Modes of the faults currently set."""
        with self._lock:
            return {f["mode"] for f in self._faults}

    # ------------------------------------------------------------------ request log

    def log_request(self, req, status, fault):
        rec = {"t": round(time.time(), 3), "method": req.method, "path": req.path,
               "status": status, "request_id": req.headers.get("request-id"),
               "has_api_key": req.headers.get("x-api-key") is not None,
               "user_agent": req.headers.get("user-agent"),
               "attestation_type": req.attestation_type,
               "fault": fault.get("mode") if fault else None,
               "ms": round((time.monotonic() - req.t_start) * 1000, 1), **req.log_extra}
        line = json.dumps(rec) + "\n"
        with self._lock:
            self._log.append(rec)
            with open(self._log_path, "a") as f:
                f.write(line)

    def requests(self):
        with self._lock:
            return list(self._log)

    def clear_requests(self):
        with self._lock:
            self._log = []

    # ------------------------------------------------------------------ control API

    def control(self, req):
        token = req.headers.get(CONTROL_HEADER) or ""
        if not hmac.compare_digest(token.encode(), self._control_token.encode()):
            return error_response(401, "bad or missing " + CONTROL_HEADER)
        key = (req.method, req.path)
        if key == ("GET", "/_stack/faults"):
            return json_response(200, {"faults": self.faults()})
        if key == ("PUT", "/_stack/faults"):
            try:
                self.set_faults(req.json().get("faults", []))
            except (HttpError, ValueError, AttributeError, re.error) as e:
                return error_response(400, str(e))
            return json_response(200, {"faults": self.faults()})
        if key == ("DELETE", "/_stack/faults"):
            self.set_faults([])
            return json_response(200, {"faults": []})
        if key == ("GET", "/_stack/requests"):
            return json_response(200, {"requests": self.requests()})
        if key == ("DELETE", "/_stack/requests"):
            self.clear_requests()
            return json_response(200, {"requests": []})
        if key == ("GET", "/_stack/latency"):
            return json_response(200, {"ms": self.latency_ms})
        if key == ("PUT", "/_stack/latency"):
            try:
                ms = float(req.json().get("ms"))
            except (HttpError, ValueError, TypeError, AttributeError) as e:
                return error_response(400, f"latency needs {{\"ms\": number}}: {e}")
            if not 0 <= ms <= 10000:
                return error_response(400, "latency ms must be in [0, 10000]")
            self.latency_ms = ms
            return json_response(200, {"ms": self.latency_ms})
        return self.service_control(req) or error_response(404, "unknown control endpoint")

    def service_control(self, req):
        """A service's own control endpoints (authorized already): a Response, or None."""
        return None

    # ------------------------------------------------------------------ serving

    def on_listen(self):
        """Hook run once the socket is bound (self.url known), before the announce file."""

    def serve(self, host="127.0.0.1", port=0, tls=True):
        handler = type("Handler", (_Handler,), {"service": self})
        httpd = _Server((host, port), handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(os.path.join(self.state_dir, pki.TLS_SERVER + ".pem"),
                                os.path.join(self.state_dir, pki.TLS_SERVER + ".key"))
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                           do_handshake_on_connect=False)
        self.port = httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.on_listen()
        announce = os.path.join(self.state_dir, f"{self.name}.json")

        def stop(signum, frame):
            threading.Thread(target=httpd.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        pki.write_file(announce, json.dumps({"name": self.name, "pid": os.getpid(),
                                             "port": self.port, "url": self.url}))
        try:
            httpd.serve_forever(poll_interval=0.2)
        finally:
            httpd.server_close()
            if os.path.exists(announce):
                os.unlink(announce)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a client's parallel workers connecting at once
    # overflow it, and each dropped SYN costs the client a one-second retransmit
    request_queue_size = 128

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ssl.SSLError, ConnectionError, socket.timeout, OSError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keygate-stack"
    sys_version = ""
    timeout = 60
    service = None          # set by StackService.serve
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body
    # until the client's delayed ACK (40 ms on Linux), a stall no real service has
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        if self.service.latency_ms > 0:     # TCP + TLS handshake round trips of a new connection
            time.sleep(2 * self.service.latency_ms / 1000)

    def version_string(self):
        return self.server_version

    def _read_body(self):
        """Request body (Content-Length or chunked); None if larger than service.max_body."""
        limit = self.service.max_body
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self._drain(length)
            return None
        return self.rfile.read(length) if length else b""

    def _drain(self, length):
        """Read and drop an over-limit body (up to DRAIN_MAX) so the client sees the 413."""
        left = min(length, DRAIN_MAX)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)

    def _handle(self):
        svc = self.service
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(error_response(400, "bad request framing"))
            return
        req = Request(self.command, self.path, self.headers, body or b"")
        if req.path.startswith("/_stack/"):
            self._send(svc.control(req))
            return
        if svc.latency_ms > 0:              # one round trip per request
            time.sleep(svc.latency_ms / 1000)
        fault = svc.take_fault(req.method, req.path)
        req.fault = fault
        mode = fault["mode"] if fault else None
        if body is None:
            self.close_connection = True
            resp = error_response(413, "request body too large")
        elif mode == "close":
            svc.log_request(req, 0, fault)
            self.close_connection = True
            self._abort()
            return
        elif mode == "status":
            resp = _status_fault(fault)
        elif mode == "html_error":
            resp = Response(400, ELB_400_PAGE, {"Content-Type": "text/html",
                                                "Server": "awselb/2.0"})
        elif mode == "malformed_json":
            resp = Response(200, b'{"token": "eyJhbGciOiJQUzM4NCJ9.',
                            {"Content-Type": "application/json"})
        elif mode == "oversize":
            svc.log_request(req, 200, fault)
            self._stream_oversize(int(fault.get("bytes", 64 * 1024 * 1024)))
            return
        else:
            if mode == "delay":
                time.sleep(float(fault.get("seconds", 1)))
            resp = svc.dispatch(req)
            if mode == "unknown_fields":
                resp = _add_unknown_field(resp)
        svc.log_request(req, resp.status, fault)
        if mode == "truncate":
            self._send(resp, truncate=True)
        else:
            self._send(resp)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def _send(self, resp, truncate=False):
        self.send_response_only(resp.status)
        headers = {"Server": self.version_string(), "Date": self.date_time_string(),
                   "Content-Type": "application/json", **resp.headers}
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(resp.body)))
        if self.close_connection or truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if truncate:
            self.wfile.write(resp.body[:len(resp.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self._abort()
        else:
            self.wfile.write(resp.body)

    def _stream_oversize(self, size):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        head, tail = b'{"token": "', b'"}'
        chunk = b"A" * 65536
        try:
            self.wfile.write(head)
            left = size - len(head) - len(tail)
            while left > 0:
                n = min(left, len(chunk))
                self.wfile.write(chunk[:n])
                left -= n
            self.wfile.write(tail)
        except (ConnectionError, ssl.SSLError, OSError):
            pass

    def _abort(self):
        """Drop the connection without a TLS close_notify or any further bytes."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _status_fault(fault):
    body = fault.get("body", {"error": "injected fault"})
    headers = dict(fault.get("headers") or {})
    if isinstance(body, str):
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return Response(int(fault.get("status", 503)), body, headers)
    return json_response(int(fault.get("status", 503)), body, headers)


def _add_unknown_field(resp):
    try:
        obj = json.loads(resp.body)
    except ValueError:
        return resp
    if not isinstance(obj, dict):
        return resp
    obj["x_unexpected_field"] = {"injected": True}
    return Response(resp.status, json.dumps(obj).encode(), resp.headers)


def _parse_fault(text):
    try:
        fault = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--fault is not JSON: {e}")
    if not isinstance(fault, dict) or "mode" not in fault:
        raise argparse.ArgumentTypeError("--fault must be a JSON object with a mode")
    return fault


def main(service_factory, add_arguments=None, argv=None):
    """Command-line entry: --state DIR --port N --fault JSON (repeatable) --http.

    The state dir is initialised first if needed (pki.init_state is idempotent).
    add_arguments(parser) may add service options; service_factory(args) returns the
    StackService to run (args.state is the state dir).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True, help="stack state directory")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = kernel-chosen)")
    parser.add_argument("--fault", type=_parse_fault, action="append", default=[],
                        help="fault JSON object, active from start-up (repeatable)")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of TLS")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="added latency per request (and 2x per new connection), ms")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    pki.init_state(args.state)
    service = service_factory(args)
    service.set_faults(args.fault)
    service.latency_ms = args.latency_ms
    service.serve(port=args.port, tls=not args.http)
    return 0
