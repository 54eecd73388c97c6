# SPDX-License-Identifier: Apache-2.0
"""Throwaway PKI and secrets of the local attestation stack.

``init_state(state_dir)`` creates, idempotently, every key, certificate and secret the stack
services and the C code under test need.  File names (all in ``state_dir``):

TLS (used by every stack service; RSA-2048 like an AWS ELB certificate)
    tls-ca.pem / tls-ca.key            "keygate local stack TLS CA" (self-signed)
    tls-server.pem / tls-server.key    CN=localhost, SAN IP:127.0.0.1 + DNS:localhost,
                                       EKU serverAuth

ITA token-signing PKI (RSA-3072, every certificate signed sha512WithRSAEncryption; modelled
field by field on the production chain in tests/vectors/ita-prod-jwks.json)
    ita-root-ca.pem / .key             "keygate local ITA Root CA" (self-signed; stable)
    ita-signing-ca.pem / .key          "keygate local ITA ATS Signing CA" (CA, pathlen 0)
    ita-leaf.pem / .key                "keygate local ITA Attestation Token Signing"
                                       (KeyUsage dS+nR+kE+dE, no EKU)
    ita-revoked-leaf.pem / .key        a second leaf of the same CA, listed in the ATS CRL
                                       (used by the ITA "revoked_leaf" fault)
    foreign-root-ca.pem / .key, foreign-signing-ca.pem / .key, foreign-leaf.pem / .key
                                       the same shape under an unrelated root ("foreign root" fault)

    The CRL distribution points contain the ITA service's URL, which is only known once it
    listens (port 0).  ``init_state`` therefore writes the signing CA and leaf certificates
    with the placeholder base ``PLACEHOLDER_BASE_URL``; the ITA service calls
    ``issue_ita_chain(state_dir, base_url)`` at start-up, which re-issues both certificates
    (same keys, new serials) with ``{base_url}/crl/root-ca-crl.der`` on the CA and
    ``{base_url}/crl/ats-ca-crl.der`` on the leaves (``{base_url}/crl/foreign/...`` for the
    foreign chain, so its CRLs verify against its own CAs).  Keys, and so the root, stay stable
    across restarts.

Simulated TDX PCK PKI (EC P-256, ecdsa-with-SHA256, modelled on Intel's SGX PCK chain)
    sim-sgx-root-ca.pem / .key         "keygate sim SGX Root CA"
    sim-pck-platform-ca.pem / .key     "keygate sim SGX PCK Platform CA" (CA, pathlen 0)
    sim-pck.pem / .key                 "keygate sim SGX PCK Certificate"
    sim-pck-chain.pem                  leaf, platform CA, root (PEM, in that order)

Secrets (mode 0600)
    ita-api-key                        URL-safe base64 API key
    kbs-admin.json                     {"username": ..., "password": ...}
    control-token                      authorizes the /_stack control API of every service

Every private key file is written with mode 0600; every write is atomic (tmp + rename).
"""

import base64
import datetime
import fcntl
import hashlib
import json
import os
import secrets
import ssl
from dataclasses import dataclass
from ipaddress import IPv4Address

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PLACEHOLDER_BASE_URL = "https://127.0.0.1"

TLS_CA = "tls-ca"
TLS_SERVER = "tls-server"
SIM_ROOT = "sim-sgx-root-ca"
SIM_PLATFORM_CA = "sim-pck-platform-ca"
SIM_PCK = "sim-pck"
SIM_PCK_CHAIN = "sim-pck-chain.pem"
API_KEY_FILE = "ita-api-key"
KBS_ADMIN_FILE = "kbs-admin.json"
CONTROL_TOKEN_FILE = "control-token"

# prefix -> (root CN, signing CA CN, leaf CN)
ITA_CHAIN_NAMES = {
    "ita": ("keygate local ITA Root CA", "keygate local ITA ATS Signing CA",
            "keygate local ITA Attestation Token Signing"),
    "foreign": ("keygate foreign ITA Root CA", "keygate foreign ITA ATS Signing CA",
                "keygate foreign ITA Attestation Token Signing"),
}

_ORG = "keygate local stack"
_SKEW = datetime.timedelta(hours=1)


# --------------------------------------------------------------------------- file helpers

def write_file(path, data, mode=0o644):
    """Atomically write bytes or str to path with the given permission bits."""
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_key(path, key):
    """Write a private key as unencrypted PKCS#8 PEM, mode 0600."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_file(path, pem, 0o600)


def write_cert(path, *certs):
    write_file(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def load_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def load_certs(path):
    """All PEM certificates of a file, in order."""
    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate(part + marker)
            for part in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]


def read_secret(state_dir, name):
    """Contents of a secret file of the state dir, stripped."""
    with open(os.path.join(state_dir, name)) as f:
        return f.read().strip()


def api_key(state_dir):
    return read_secret(state_dir, API_KEY_FILE)


def control_token(state_dir):
    return read_secret(state_dir, CONTROL_TOKEN_FILE)


def kbs_admin(state_dir):
    """{"username": ..., "password": ...} of the KBS administrator."""
    return json.loads(read_secret(state_dir, KBS_ADMIN_FILE))


def tls_client_context(state_dir):
    """An ssl client context trusting only the stack's TLS CA (hostname checking on)."""
    ctx = ssl.create_default_context(cafile=os.path.join(state_dir, TLS_CA + ".pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# --------------------------------------------------------------------------- certificates

def kid(cert):
    """ITA key id: lowercase hex SHA-384 of the leaf certificate DER."""
    return hashlib.sha384(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def new_rsa(bits=3072):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_ec():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _sign_hash(key):
    return hashes.SHA256() if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA512()


_CA_USAGE = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                 encipher_only=False, decipher_only=False)
_ATS_LEAF_USAGE = dict(_CA_USAGE, digital_signature=True, content_commitment=True,
                       key_encipherment=True, data_encipherment=True, key_cert_sign=False,
                       crl_sign=False)
_SIGNING_LEAF_USAGE = dict(_CA_USAGE, digital_signature=True, key_cert_sign=False, crl_sign=False)
_TLS_LEAF_USAGE = dict(_SIGNING_LEAF_USAGE, key_encipherment=True)


def issue_cert(cn, key, issuer=None, issuer_key=None, *, ca=False, path_length=None,
               usage=None, usage_critical=None, days=365, cdp=None, san=None, eku=None,
               sign_hash=None):
    """Issue a certificate for key.public_key(); self-signed when issuer is None.

    usage is a KeyUsage keyword dict (defaults: CA usage for CAs, digitalSignature for leaves),
    critical when usage_critical (default: for CAs only, as the ITA chain), cdp a CRL distribution point URL, san a list of GeneralName, eku a list of OIDs.
    Signature hash: SHA-512 for RSA issuers (as ITA), SHA-256 for EC issuers (as Intel PCS).
    """
    issuer_key = issuer_key or key
    issuer_name = issuer.subject if issuer is not None else _name(cn)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
        if issuer is not None else
        x509.AuthorityKeyIdentifier(ski.digest, None, None))
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - _SKEW).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca, path_length if ca else None), critical=True)
         .add_extension(ski, critical=False)
         .add_extension(aki, critical=False)
         .add_extension(x509.KeyUsage(**(usage or (_CA_USAGE if ca else _SIGNING_LEAF_USAGE))),
                        critical=ca if usage_critical is None else usage_critical))
    if cdp:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(cdp)], None, None, None)]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, sign_hash or _sign_hash(issuer_key))


def make_crl(issuer, issuer_key, revoked_serials=(), *, days=30, crl_number=1):
    """DER CRL signed by (issuer, issuer_key) listing revoked_serials; nextUpdate now+days."""
    now = _now()
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(issuer.subject)
         .last_update(now - _SKEW).next_update(now + datetime.timedelta(days=days))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
             issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value),
             critical=False)
         .add_extension(x509.CRLNumber(crl_number), critical=False))
    for serial in revoked_serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(serial).revocation_date(now - _SKEW).build())
    return b.sign(issuer_key, _sign_hash(issuer_key)).public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- ITA chain

@dataclass
class ItaChain:
    """A token-signing chain: leaf -> ATS signing CA -> root, with the keys."""
    root: x509.Certificate
    root_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    leaf: x509.Certificate
    leaf_key: rsa.RSAPrivateKey
    revoked_leaf: x509.Certificate = None       # only the "ita" chain: a leaf its CA revoked
    revoked_leaf_key: rsa.RSAPrivateKey = None


def _chain_paths(state_dir, prefix):
    roles = ("root-ca", "signing-ca", "leaf") + (("revoked-leaf",) if prefix == "ita" else ())
    return {role: os.path.join(state_dir, f"{prefix}-{role}") for role in roles}


def crl_path(prefix, which):
    """URL path of a chain's CRL: which is "ats-ca" or "root-ca"."""
    return f"/crl/{'' if prefix == 'ita' else prefix + '/'}{which}-crl.der"


def load_ita_chain(state_dir, prefix="ita"):
    p = _chain_paths(state_dir, prefix)
    pairs = {r: (load_cert(path + ".pem"), load_key(path + ".key")) for r, path in p.items()}
    return ItaChain(*pairs["root-ca"], *pairs["signing-ca"], *pairs["leaf"],
                    *pairs.get("revoked-leaf", (None, None)))


def issue_ita_chain(state_dir, base_url, prefix="ita"):
    """(Re)issue signing CA and leaf certificates with CDPs under base_url; keys unchanged.

    CDPs: ``{base_url}/crl/root-ca-crl.der`` on the CA, ``{base_url}/crl/ats-ca-crl.der`` on
    the leaves (``/crl/foreign/...`` for the foreign chain).  The "ita" chain also gets
    ita-revoked-leaf.pem, a second leaf meant to be listed in the ATS CRL.
    """
    p = _chain_paths(state_dir, prefix)
    _, ca_cn, leaf_cn = ITA_CHAIN_NAMES[prefix]
    root, root_key = load_cert(p["root-ca"] + ".pem"), load_key(p["root-ca"] + ".key")
    ca_key = load_key(p["signing-ca"] + ".key")
    base = base_url.rstrip("/")
    ca = issue_cert(ca_cn, ca_key, root, root_key, ca=True, path_length=0, days=3650,
                    cdp=base + crl_path(prefix, "root-ca"))
    write_cert(p["signing-ca"] + ".pem", ca)
    leaves = {}
    for role in [r for r in p if r.endswith("leaf")]:
        key = load_key(p[role] + ".key")
        leaves[role] = (issue_cert(leaf_cn, key, ca, ca_key, usage=_ATS_LEAF_USAGE, days=365,
                                   cdp=base + crl_path(prefix, "ats-ca")), key)
        write_cert(p[role] + ".pem", leaves[role][0])
    return ItaChain(root, root_key, ca, ca_key, *leaves["leaf"],
                    *leaves.get("revoked-leaf", (None, None)))


def _ensure_ita_chain(state_dir, prefix):
    p = _chain_paths(state_dir, prefix)
    if all(os.path.exists(p[r] + ext) for r in p for ext in (".pem", ".key")):
        return
    root_cn = ITA_CHAIN_NAMES[prefix][0]
    root_key = new_rsa()
    write_key(p["root-ca"] + ".key", root_key)
    write_cert(p["root-ca"] + ".pem", issue_cert(root_cn, root_key, ca=True, days=9000))
    for role in [r for r in p if r != "root-ca"]:
        write_key(p[role] + ".key", new_rsa())
    issue_ita_chain(state_dir, PLACEHOLDER_BASE_URL, prefix)


# --------------------------------------------------------------------------- other PKIs

def _ensure_tls(state_dir):
    ca_path, srv_path = (os.path.join(state_dir, n) for n in (TLS_CA, TLS_SERVER))
    if all(os.path.exists(p + ext) for p in (ca_path, srv_path) for ext in (".pem", ".key")):
        return
    ca_key, srv_key = new_rsa(2048), new_rsa(2048)
    ca = issue_cert("keygate local stack TLS CA", ca_key, ca=True, days=3650,
                    sign_hash=hashes.SHA256())
    srv = issue_cert("localhost", srv_key, ca, ca_key, usage=_TLS_LEAF_USAGE, days=3650,
                     san=[x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")],
                     eku=[ExtendedKeyUsageOID.SERVER_AUTH], sign_hash=hashes.SHA256())
    write_key(ca_path + ".key", ca_key)
    write_cert(ca_path + ".pem", ca)
    write_key(srv_path + ".key", srv_key)
    write_cert(srv_path + ".pem", srv)


def _ensure_sim_pck(state_dir):
    paths = [os.path.join(state_dir, n) for n in (SIM_ROOT, SIM_PLATFORM_CA, SIM_PCK)]
    chain_path = os.path.join(state_dir, SIM_PCK_CHAIN)
    if os.path.exists(chain_path) and all(
            os.path.exists(p + ext) for p in paths for ext in (".pem", ".key")):
        return
    root_key, ca_key, pck_key = new_ec(), new_ec(), new_ec()
    root = issue_cert("keygate sim SGX Root CA", root_key, ca=True, days=9000)
    ca = issue_cert("keygate sim SGX PCK Platform CA", ca_key, root, root_key, ca=True,
                    path_length=0, days=9000)
    pck = issue_cert("keygate sim SGX PCK Certificate", pck_key, ca, ca_key, days=2555,
                     usage=dict(_SIGNING_LEAF_USAGE, content_commitment=True),
                     usage_critical=True)
    for path, key, cert in zip(paths, (root_key, ca_key, pck_key), (root, ca, pck)):
        write_key(path + ".key", key)
        write_cert(path + ".pem", cert)
    write_cert(chain_path, pck, ca, root)


def _ensure_secret(state_dir, name, make):
    path = os.path.join(state_dir, name)
    if not os.path.exists(path):
        write_file(path, make(), 0o600)


def init_state(state_dir):
    """Create (idempotently) all keys, certificates and secrets; returns state_dir."""
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, ".pki.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_tls(state_dir)
        _ensure_ita_chain(state_dir, "ita")
        _ensure_ita_chain(state_dir, "foreign")
        _ensure_sim_pck(state_dir)
        _ensure_secret(state_dir, API_KEY_FILE,
                       lambda: base64.urlsafe_b64encode(secrets.token_bytes(36)).decode() + "\n")
        _ensure_secret(state_dir, KBS_ADMIN_FILE, lambda: json.dumps(
            {"username": "admin", "password": secrets.token_urlsafe(18)}) + "\n")
        _ensure_secret(state_dir, CONTROL_TOKEN_FILE, lambda: secrets.token_urlsafe(32) + "\n")
    return state_dir
