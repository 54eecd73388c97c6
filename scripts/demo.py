# SPDX-License-Identifier: Apache-2.0
"""Runs the keygate pipeline against the local stack and prints each step with its time.

Started by scripts/demo.sh after the build. Starts the ITA-compatible service (HTTPS on
127.0.0.1, a free port), writes a keygate.conf for the simulated TD, runs `keygate token`,
prints the steps and the token's claims, releases a key from the KBS-compatible service, then
serves HTTPS from that key with nginx through the keygate OpenSSL provider (fetched with curl),
and stops every process it started (by PID).
"""
import argparse
import base64
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from tests.stack.fixtures import LocalStack  # noqa: E402
from tests.stack.kbs_fixture import create_policy, kbs_admin_token, register_key, start_kbs  # noqa: E402

DEMO_MRTD = "a1" * 48


def line(step, result, ms, detail=""):
    print(f"  {step:<12} {result:<5} {ms:9.1f} ms  {detail}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kbs_user_data():
    """LE32(e) ‖ BE(n) of a fresh RSA-3072 public key: the Intel KBS wrapping-key layout."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pub = key.public_key().public_numbers()
    return pub.e.to_bytes(4, "little") + pub.n.to_bytes(384, "big")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--keep", action="store_true", help="keep the state directory")
    args = ap.parse_args()
    keygate = str((REPO / args.build / "cli" / "keygate").resolve())
    provider = (REPO / args.build / "provider" / "keygate.so").resolve()

    state = pathlib.Path(tempfile.mkdtemp(prefix="keygate-demo-"))
    stack = LocalStack(state)
    print("keygate demo: attested key release against the local stack (simulated TD)\n")
    nginx = None
    try:
        t0 = time.monotonic()
        stack.init()
        ita = stack.start_ita()
        line("stack", "ok", (time.monotonic() - t0) * 1e3, f"ITA-compatible service {ita.url} (pid {ita.pid})")

        conf = state / "keygate.conf"
        conf.write_text(
            "adapter = sim\n"
            f"ita_api_url = {ita.url}\n"
            f"ita_base_url = {ita.url}\n"
            f"ita_api_key_file = {state / 'ita-api-key'}\n"
            f"ita_trust_anchor = {state / 'ita-root-ca.pem'}\n"
            f"tls_ca_file = {state / 'tls-ca.pem'}\n"
            f"sim_pck_key = {state / 'sim-pck.key'}\n"
            f"sim_pck_chain = {state / 'sim-pck-chain.pem'}\n"
            f"sim_mrtd = {DEMO_MRTD}\n")
        conf.chmod(0o644)  # keygate refuses a keygate.conf others may write (a umask of 002)
        user_data = state / "wrapping-key.bin"
        t0 = time.monotonic()
        user_data.write_bytes(kbs_user_data())
        line("wrapping-key", "ok", (time.monotonic() - t0) * 1e3,
             "demo RSA-3072 public key as user data, LE32(e) || n (keygate release below makes its own)")

        r = subprocess.run([keygate, "--config", str(conf), "--json", "token", "--user-data-file",
                            str(user_data)], capture_output=True, text=True, timeout=120)
        sys.stderr.write("".join(l + "\n" for l in r.stderr.splitlines() if "simulated TD" in l)[:400])
        if r.returncode != 0:
            print(f"  keygate token failed (exit {r.returncode}): {r.stderr.strip()}")
            return 1
        out = json.loads(r.stdout)
        ms = out["steps_ms"]
        claims = out["claims"]
        line("nonce", "ok", ms["nonce"], f"GET {ita.url}/appraisal/v2/nonce")
        line("evidence", "ok", ms["evidence"], "simulated TD quote, REPORTDATA = SHA-512(val || iat || user data)")
        line("token", "ok", ms["token"], f"POST {ita.url}/appraisal/v1/attest -> {out['header']['alg']} JWT, "
                                          f"{len(out['token'])} bytes")
        line("verify", "ok" if out["verified"] else "FAIL", ms.get("verify", 0.0),
             "PS384/RS256 allow-list, JWKS (kid, alg), x5c to the pinned root, CRLs, claims, binding, policy")
        print("\ntoken header:", json.dumps(out["header"]))
        print("token claims (verified by keygate):")
        print(json.dumps(claims, indent=2))
        held = base64.b64decode(claims["attester_held_data"])
        assert held == user_data.read_bytes(), "attester_held_data is not our user data"
        assert claims["tdx_mrtd"] == DEMO_MRTD, "token MRTD is not the simulated TD's"
        print(f"\nattester_held_data == our wrapping key blob; tdx_mrtd == the simulated TD's; "
              f"tdx_is_debuggable = {claims['tdx_is_debuggable']}")

        print("\n== keygate release: the whole pipeline against the Intel-KBS-compatible service")
        t0 = time.monotonic()
        kbs = start_kbs(stack)
        admin = kbs_admin_token(kbs.url, str(state))
        policy = create_policy(kbs.url, admin, {"mrtd": [DEMO_MRTD]})
        site_key = ec.generate_private_key(ec.SECP256R1())
        key_id = register_key(kbs.url, admin, site_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), policy)
        line("kbs", "ok", (time.monotonic() - t0) * 1e3,
             f"{kbs.url} (pid {kbs.pid}): P-256 key {key_id} under a policy pinning the TD's MRTD")
        with open(conf, "a") as f:
            f.write(f"kbs_url = {kbs.url}\nkbs_type = intel\nkbs_mode = passport\n")
        r = subprocess.run([keygate, "--config", str(conf), "release", "--key-id", key_id, "-v"],
                           capture_output=True, text=True, timeout=120)
        for l in r.stderr.splitlines():
            if "simulated TD" not in l:
                print(l)
        if r.returncode != 0:
            print(f"  keygate release failed (exit {r.returncode})")
            return 1
        want = site_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        print("released public key (the private key stays in keygate's secure heap):")
        print(r.stdout, end="")
        assert r.stdout == want, "the released key is not the one the KBS holds"
        print("it is the public key of the key registered in the KBS")

        print("\n== nginx: HTTPS from the attested key, through the keygate OpenSSL provider")
        pub = state / "site.pub.pem"
        pub.write_text(r.stdout)
        ref = state / "site.ref.pem"
        t0 = time.monotonic()
        r = subprocess.run([keygate, "--config", str(conf), "ref", "create", "--key-id", key_id, "--pubkey", str(pub),
                            "-o", str(ref)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            print(f"  keygate ref create failed (exit {r.returncode}): {r.stderr.strip()}")
            return 1
        line("reference", "ok", (time.monotonic() - t0) * 1e3,
             f"{ref.name}: KEYGATE KEY REFERENCE for {key_id} (public key only, nothing secret)")
        cnf = state / "openssl.cnf"
        cnf.write_text(
            "openssl_conf = openssl_init\nconfig_diagnostics = 1\n"
            "[openssl_init]\nproviders = provider_sect\n"
            "[provider_sect]\ndefault = default_sect\nkeygate = keygate_sect\n"
            "[default_sect]\nactivate = 1\n"
            f"[keygate_sect]\nmodule = {provider}\nactivate = 1\nconfig = {conf}\n")
        env = dict(os.environ, OPENSSL_CONF=str(cnf))
        env.pop("KEYGATE_DEBUG", None)
        cert = state / "site.crt"
        t0 = time.monotonic()
        r = subprocess.run(["openssl", "req", "-new", "-x509", "-key", str(ref), "-subj", "/CN=localhost", "-days", "1",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-out", str(cert)],
                           env=env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            print(f"  openssl req failed (exit {r.returncode}): {r.stderr.strip()}")
            return 1
        line("certificate", "ok", (time.monotonic() - t0) * 1e3,
             "openssl req -new -x509 -key site.ref.pem: self-signed by the released key (attested in openssl)")

        pfx = state / "nginx"
        pfx.mkdir()
        port = free_port()
        nginx_conf = pfx / "nginx.conf"
        nginx_conf.write_text(
            f"daemon off;\nmaster_process on;\nworker_processes 1;\npid {pfx}/nginx.pid;\n"
            f"error_log {pfx}/error.log;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n  access_log {pfx}/access.log;\n"
            f"  client_body_temp_path {pfx}/body; proxy_temp_path {pfx}/proxy; fastcgi_temp_path {pfx}/fastcgi;\n"
            f"  uwsgi_temp_path {pfx}/uwsgi; scgi_temp_path {pfx}/scgi;\n"
            f"  server {{\n    listen 127.0.0.1:{port} ssl;\n"
            f"    ssl_certificate     {cert};\n    ssl_certificate_key {ref};\n"
            "    ssl_protocols       TLSv1.2 TLSv1.3;\n"
            "    location / { default_type text/plain;\n"
            "      return 200 \"hello from nginx: $ssl_protocol $ssl_cipher, key released by keygate\\n\"; }\n"
            "  }\n}\n")
        t0 = time.monotonic()
        with open(pfx / "stderr.log", "w") as errf:
            nginx = subprocess.Popen(["nginx", "-p", str(pfx), "-c", str(nginx_conf)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=errf)
        url = f"https://127.0.0.1:{port}/"
        curl = ["curl", "-sS", "--max-time", "10", "--cacert", str(cert), url]
        while True:
            r = subprocess.run(curl, capture_output=True, text=True, timeout=30)
            if r.returncode == 0 or nginx.poll() is not None or time.monotonic() - t0 > 30:
                break
            time.sleep(0.1)
        if r.returncode != 0:
            err = "".join((pfx / f).read_bytes().decode("utf-8", "replace")
                          for f in ("stderr.log", "error.log") if (pfx / f).exists())
            print(f"  nginx did not serve (exit {nginx.poll()}): {r.stderr.strip()}\n{err[-2000:]}")
            return 1
        line("nginx", "ok", (time.monotonic() - t0) * 1e3,
             f"{url} (pid {nginx.pid}): ssl_certificate_key {ref.name}, released in the master before the fork")
        t0 = time.monotonic()
        r = subprocess.run(curl, capture_output=True, text=True, timeout=30)
        line("curl", "ok" if r.returncode == 0 else "FAIL", (time.monotonic() - t0) * 1e3,
             f"curl --cacert site.crt {url}")
        if r.returncode != 0:
            print(f"  curl failed (exit {r.returncode}): {r.stderr.strip()}")
            return 1
        print("\n" + r.stdout, end="")
        print("nginx served HTTPS from an attested key")
        return 0
    finally:
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # by PID: the master we started
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        stack.stop_all()
        print("\nstopped every process the demo started")
        if not args.keep:
            subprocess.run(["rm", "-rf", str(state)])


if __name__ == "__main__":
    sys.exit(main())
