# SPDX-License-Identifier: Apache-2.0
"""Light CI variants of the soaks in bench/ (bench/soak-release, soak-tls, soak-reload; the full
runs and their figures are in bench/RESULTS.md "## Soak"): the same code with smaller counts."""
import shutil
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench" / "lib"))
import soak  # noqa: E402

needs_servers = pytest.mark.skipif(not all(shutil.which(p) for p in ("nginx", "haproxy", "h2load")),
                                   reason="nginx, haproxy and h2load are needed (scripts/setup.sh installs them)")


def test_fifty_concurrent_releases_all_succeed_with_distinct_nonces(session_kbs_stack, build_dir, tmp_path):
    site = soak.Site(build_dir, tmp_path, session_kbs_stack)
    site.add_key("site", "p256")
    r = soak.concurrent_releases(site, "site", 50)
    assert soak.check_releases(r) == [], r
    assert r["succeeded"] == 50 and r["ita_attest_nonces_distinct"] == 50


@needs_servers
@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_tls_handshakes_with_a_keygate_key(session_kbs_stack, build_dir, tmp_path, kind):
    """1000 new connections with full handshakes (2 workers / 2 threads), none failing, one release,
    RSS flat after the first half (2 MiB slack at this size)."""
    site = soak.Site(build_dir, tmp_path, session_kbs_stack)
    site.add_key("site", "p256")
    server = soak.Nginx(site, "site", workers=2) if kind == "nginx" else soak.Haproxy(site, "site", threads=2)
    try:
        res = soak.tls_soak(site, kind, server, 1000, 4, 16, 2048, print)
    finally:
        server.stop()
    assert res["problems"] == [], res
    assert res["succeeded"] == 1000 and res["failed_handshakes"] == 0


@needs_servers
def test_nginx_reloads_with_the_stack_up_and_down_keep_serving(kbs_stack, build_dir, tmp_path):
    """5 reloads with the stack up, 2 with the ITA and KBS stopped, a failing rotation to an
    unreleased key and a reload back: the client loop never fails."""
    site = soak.Site(build_dir, tmp_path, kbs_stack)
    res = soak.reload_soak(site, 5, 2, 2, "p256", print)
    assert res["problems"] == [], res
    assert res["client_ok"] > 0 and res["client_failures"] == []
