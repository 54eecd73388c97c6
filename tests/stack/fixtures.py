# SPDX-License-Identifier: Apache-2.0
"""Start, drive and stop local-stack services from tests.

    stack = LocalStack(state_dir).init()          # pki.init_state (idempotent)
    ita = stack.start_ita()                       # handle: .name .url .port .pid
    stack.set_faults("ita", [{"route": "/attest", "mode": "status", "status": 503}])
    stack.requests("ita")                         # the service's request log
    stack.stop_all()

Services run as ``/usr/bin/python3 -m <module> --state DIR ...`` with the repository root as
working directory; ``start`` waits for the ``{name}.json`` announce file.  Processes are stopped
by PID (SIGTERM, SIGKILL after 5 s).  A service's stdout/stderr go to ``{state_dir}/{name}.log``.
``copy_state(src, dest)`` clones an initialised state dir (no key generation) for isolated stacks.
"""

import fnmatch
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import pki
from .server import CONTROL_HEADER

PYTHON = "/usr/bin/python3"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass
class ServiceHandle:
    name: str
    url: str
    port: int
    pid: int
    process: subprocess.Popen


class LocalStack:
    def __init__(self, state_dir):
        self.state_dir = os.path.abspath(state_dir)
        self.services = {}

    def init(self):
        pki.init_state(self.state_dir)
        return self

    # ------------------------------------------------------------------ processes

    def start(self, name, module, *args):
        """Start `python3 -m module --state DIR *args`; wait for {name}.json; return a handle."""
        announce = os.path.join(self.state_dir, f"{name}.json")
        if os.path.exists(announce):
            os.unlink(announce)
        log = open(os.path.join(self.state_dir, f"{name}.log"), "ab")
        proc = subprocess.Popen([PYTHON, "-m", module, "--state", self.state_dir, *map(str, args)],
                                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            info = _read_announce(announce)
            if info and info.get("pid") == proc.pid:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} at start; "
                                   f"see {self.state_dir}/{name}.log")
            if time.monotonic() > deadline:
                self._stop(proc)
                raise RuntimeError(f"{name} did not announce itself within {START_TIMEOUT} s")
            time.sleep(0.05)
        handle = ServiceHandle(name, info["url"], info["port"], proc.pid, proc)
        self.services[name] = handle
        return handle

    def start_ita(self, name="ita", **opts):
        """Start the ITA service; opts become flags (trusted_root=[a, b] -> --trusted-root a
        --trusted-root b; a True value -> bare flag; faults=[...] -> --fault JSON each)."""
        args = []
        for key, value in opts.items():
            flag = "--" + ("fault" if key == "faults" else key.replace("_", "-"))
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if v is True:
                    args.append(flag)
                elif v is not False and v is not None:
                    args += [flag, json.dumps(v) if isinstance(v, dict) else str(v)]
        return self.start(name, "tests.stack.ita", *args)

    def stop(self, name):
        handle = self.services.pop(name)
        return self._stop(handle.process)

    def stop_all(self):
        for name in list(self.services):
            self.stop(name)

    @staticmethod
    def _stop(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    # ------------------------------------------------------------------ control API

    def control(self, name, method, path, body=None):
        """Call the control API of a service; returns the decoded JSON reply."""
        status, data = self.http(name, method, path, body,
                                 {CONTROL_HEADER: pki.control_token(self.state_dir)})
        if status != 200:
            raise RuntimeError(f"control {method} {path} on {name}: HTTP {status}: {data!r}")
        return json.loads(data)

    def set_faults(self, name, faults):
        return self.control(name, "PUT", "/_stack/faults", {"faults": faults})["faults"]

    def clear_faults(self, name):
        self.control(name, "DELETE", "/_stack/faults")

    def requests(self, name):
        return self.control(name, "GET", "/_stack/requests")["requests"]

    def clear_requests(self, name):
        self.control(name, "DELETE", "/_stack/requests")

    def set_latency(self, name, ms):
        """Added latency of a service: ms per request, 2 x ms per new connection (server.py)."""
        return self.control(name, "PUT", "/_stack/latency", {"ms": ms})["ms"]

    # ------------------------------------------------------------------ plain client

    def connection(self, name, timeout=30):
        """A fresh http.client connection to a service (TLS with the stack CA, or plain)."""
        u = urlsplit(self.services[name].url)
        if u.scheme == "https":
            return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                               context=pki.tls_client_context(self.state_dir))
        return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)

    def http(self, name, method, path, body=None, headers=None, timeout=30):
        """One request; body may be bytes, str or a JSON value. Returns (status, bytes)."""
        status, _, data = self.http_full(name, method, path, body, headers, timeout)
        return status, data

    def http_full(self, name, method, path, body=None, headers=None, timeout=30):
        """Like http() but returns (status, headers as http.client.HTTPMessage, bytes)."""
        headers = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        conn = self.connection(name, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


def copy_state(src, dest):
    """A LocalStack on a copy of an initialised state dir: same keys and secrets, none of
    the source's announce files (*.json except kbs-admin.json), logs or request logs."""
    def ignore(_, names):
        return [n for n in names
                if (n.endswith(".json") and n != pki.KBS_ADMIN_FILE)
                or any(fnmatch.fnmatch(n, p) for p in ("*.jsonl", "*.log", "*.tmp.*", ".*"))]
    shutil.copytree(src, dest, ignore=ignore)
    return LocalStack(str(dest))


def _read_announce(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
