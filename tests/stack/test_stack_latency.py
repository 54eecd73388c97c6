# SPDX-License-Identifier: Apache-2.0
"""The stack's latency knob (server.py): per request one RTT, per new connection two more,
control requests never delayed, bad values refused. Lower bounds only (sleeps guarantee them)."""
import time

import pytest


def timed(stack, *args, **kw):
    t0 = time.monotonic()
    status, _ = stack.http("ita", *args, **kw)
    return status, time.monotonic() - t0


def test_latency_delays_requests_and_new_connections(local_stack):
    assert local_stack.control("ita", "GET", "/_stack/latency") == {"ms": 0.0}
    assert local_stack.set_latency("ita", 150) == 150.0
    status, dt = timed(local_stack, "GET", "/certs")   # new connection (2 RTT) + request (1 RTT)
    assert status == 200 and dt >= 0.45
    conn = local_stack.connection("ita")
    try:
        conn.request("GET", "/certs")
        conn.getresponse().read()
        t0 = time.monotonic()
        conn.request("GET", "/certs")                  # kept alive: one RTT only
        assert conn.getresponse().read()
        assert 0.15 <= time.monotonic() - t0
    finally:
        conn.close()
    assert local_stack.set_latency("ita", 0) == 0.0
    status, dt = timed(local_stack, "GET", "/certs")
    assert status == 200 and dt < 0.45


@pytest.mark.parametrize("body", [{"ms": -1}, {"ms": 20000}, {"ms": "x"}, {}])
def test_latency_refuses_bad_values(local_stack, body):
    from tests.stack import pki
    from tests.stack.server import CONTROL_HEADER
    status, _ = local_stack.http("ita", "PUT", "/_stack/latency", body,
                                 {CONTROL_HEADER: pki.control_token(local_stack.state_dir)})
    assert status == 400
    assert local_stack.control("ita", "GET", "/_stack/latency") == {"ms": 0.0}
