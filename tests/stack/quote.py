# SPDX-License-Identifier: Apache-2.0
"""TDX v4 and v5 quote parser and offline verifier (python-cryptography only).

Layout (docs/protocols/tdx-quote.md §2, §2.4, tests/vectors/README.md §2)::

    [0, 48)      header: version u16, att_key_type u16, tee_type u32, qe_svn u16, pce_svn u16,
                 qe_vendor_id 16, user_data 20
    v5 only:     [48, 54) body descriptor: u16 body type (2 TD report 1.0, 3 TD report 1.5),
                 u32 body size (584 or 648, exactly); the body then starts at 54
    [48, 632)    TD quote body (584 bytes: TEE_TCB_SVN ... REPORTDATA at 568..631); a TD report
                 1.5 adds TEE_TCB_SVN2 (16) and MRSERVICETD (48) at body offsets 584 and 600
    [632, 636)   u32 signature data length L;  [636, 636+L) signature data (v5: after the body):
                 quote signature r||s (64) | attestation public key x||y (64) |
                 u16 cert type 6 | u32 size | QE report (384) | QE report signature r||s (64) |
                 u16 auth data length | auth data | u16 cert type 5 | u32 size |
                 PCK chain PEM (leaf, platform CA, root), possibly NUL-terminated

Anything after 636+L (zero padding in real files) is ignored.

``verify_quote(quote, trusted_roots, now=None)`` checks: the quote signature (ECDSA P-256 /
SHA-256 over [0, 632), in v5 over header + descriptor + body) by the attestation key; the QE report signature by the PCK leaf key;
QE REPORTDATA[0:32] == SHA-256(attestation key || auth data) and [32:64] zero; the PCK chain
leaf -> platform CA -> root, where the root must be one of the PINNED roots (DER equality; an
embedded root is never trusted by itself), every signature and validity period at ``now``,
BasicConstraints of the CAs.  TCB status needs PCS collateral and is out of scope.
Failures raise ``QuoteError`` whose ``check`` names the failed check.
"""

import datetime
import hashlib
import struct
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

HEADER_LEN = 48
BODY_LEN = 584
SIGNED_LEN = HEADER_LEN + BODY_LEN          # 632 (v4)
BODY_DESC_LEN = 6                           # v5: u16 body type, u32 body size
BODY_SIZES = {2: 584, 3: 648}               # v5 body types: TD report 1.0, TD report 1.5
QE_REPORT_LEN = 384
TEE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# TD quote body: (name, offset in the body, size)
BODY_FIELDS = (
    ("tee_tcb_svn", 0, 16), ("mrseam", 16, 48), ("mrsignerseam", 64, 48),
    ("seam_attributes", 112, 8), ("td_attributes", 120, 8), ("xfam", 128, 8),
    ("mrtd", 136, 48), ("mrconfigid", 184, 48), ("mrowner", 232, 48),
    ("mrownerconfig", 280, 48), ("rtmr0", 328, 48), ("rtmr1", 376, 48),
    ("rtmr2", 424, 48), ("rtmr3", 472, 48), ("report_data", 520, 64),
)
# TD report 1.5 (v5 body type 3) only
BODY15_FIELDS = (("tee_tcb_svn2", 584, 16), ("mrservicetd", 600, 48))

# TDATTRIBUTES bits (u64 little-endian)
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
TD_ATTR_PKS = 1 << 30
TD_ATTR_KL = 1 << 31
TD_ATTR_PERFMON = 1 << 63


class QuoteError(Exception):
    """A quote failed to parse or verify; .check names the check that failed."""

    def __init__(self, check, message):
        super().__init__(f"{check}: {message}")
        self.check = check


@dataclass
class TdxQuote:
    """A parsed TDX v4 or v5 quote.  Byte fields are raw bytes; see BODY_FIELDS."""
    raw: bytes                      # the quote without trailing padding
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    header_user_data: bytes
    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    pck_chain: list = field(default_factory=list)
    body_type: int = 2                  # v4: the TD report 1.0 it carries, without descriptor
    signed_len: int = SIGNED_LEN        # what the quote signature covers
    tee_tcb_svn2: bytes = bytes(16)     # TD report 1.5 only
    mrservicetd: bytes = bytes(48)      # TD report 1.5 only

    @property
    def td_attributes_int(self):
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self):
        return bool(self.td_attributes_int & TD_ATTR_DEBUG)

    @property
    def septve_disable(self):
        return bool(self.td_attributes_int & TD_ATTR_SEPT_VE_DISABLE)

    @property
    def protection_keys(self):
        return bool(self.td_attributes_int & TD_ATTR_PKS)

    @property
    def key_locker(self):
        return bool(self.td_attributes_int & TD_ATTR_KL)

    @property
    def perfmon(self):
        return bool(self.td_attributes_int & TD_ATTR_PERFMON)

    @property
    def seamsvn(self):
        """TDX module SVN as ITA reports it (tdx_seamsvn): u16 LE of TEE_TCB_SVN[0:2]."""
        return int.from_bytes(self.tee_tcb_svn[:2], "little")

    @property
    def rtmrs(self):
        return [self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3]

    @property
    def qe_report_data(self):
        return self.qe_report[320:384]

    @property
    def signed_bytes(self):
        return self.raw[:self.signed_len]


class _Reader:
    def __init__(self, data, what):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n):
        if self.pos + n > len(self.data):
            raise QuoteError("parse", f"{self.what} truncated at offset {self.pos} (+{n})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]


def parse_quote(data):
    """Parse a TDX v4 or v5 (body type 2 or 3) quote (no verification). Trailing bytes after the
    signature data are ignored."""
    data = bytes(data)
    if len(data) < SIGNED_LEN + 4:
        raise QuoteError("parse", f"quote too short ({len(data)} bytes)")
    version, att_key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", data, 0)
    if version not in (4, 5):
        raise QuoteError("parse", f"unsupported quote version {version} (want 4 or 5)")
    if tee_type != TEE_TDX:
        raise QuoteError("parse", f"tee type {tee_type:#x} is not TDX (0x81)")
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise QuoteError("parse", f"attestation key type {att_key_type} is not ECDSA-P256 (2)")
    body_off, body_type = HEADER_LEN, 2
    if version == 5:
        body_type, body_size = struct.unpack_from("<HI", data, HEADER_LEN)
        if body_type not in BODY_SIZES:
            raise QuoteError("parse", f"v5 body type {body_type} is not a TD report (2 or 3)")
        if body_size != BODY_SIZES[body_type]:
            raise QuoteError("parse", f"v5 body size {body_size} is not {BODY_SIZES[body_type]}")
        body_off = HEADER_LEN + BODY_DESC_LEN
    signed_len = body_off + BODY_SIZES[body_type]
    if len(data) < signed_len + 4:
        raise QuoteError("parse", f"quote too short ({len(data)} bytes)")
    sig_len = struct.unpack_from("<I", data, signed_len)[0]
    end = signed_len + 4 + sig_len
    if end > len(data):
        raise QuoteError("parse", f"signature data length {sig_len} exceeds the quote")
    r = _Reader(data[signed_len + 4:end], "signature data")
    signature, att_key = r.take(64), r.take(64)
    if r.u16() != CERT_TYPE_QE_REPORT:
        raise QuoteError("parse", "outer certification data is not type 6 (QE report)")
    outer = _Reader(r.take(r.u32()), "QE report certification data")
    qe_report, qe_sig = outer.take(QE_REPORT_LEN), outer.take(64)
    auth = outer.take(outer.u16())
    if outer.u16() != CERT_TYPE_PCK_CHAIN:
        raise QuoteError("parse", "inner certification data is not type 5 (PCK chain)")
    chain_pem = outer.take(outer.u32()).rstrip(b"\0")
    body = {name: data[body_off + off:body_off + off + size]
            for name, off, size in BODY_FIELDS + (BODY15_FIELDS if body_type == 3 else ())}
    return TdxQuote(raw=data[:end], version=version, att_key_type=att_key_type,
                    body_type=body_type, signed_len=signed_len,
                    tee_type=tee_type, qe_svn=qe_svn, pce_svn=pce_svn,
                    qe_vendor_id=data[12:28], header_user_data=data[28:48], **body,
                    signature=signature, attestation_key=att_key, qe_report=qe_report,
                    qe_report_signature=qe_sig, qe_auth_data=auth, pck_chain_pem=chain_pem,
                    pck_chain=_load_pem_chain(chain_pem))


def _load_pem_chain(pem):
    marker = b"-----END CERTIFICATE-----"
    try:
        return [x509.load_pem_x509_certificate(part.strip() + b"\n" + marker)
                for part in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]
    except ValueError as e:
        raise QuoteError("parse", f"PCK chain PEM does not parse: {e}") from None


def _ecdsa_verify(pub, raw_sig, data, check):
    sig = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"),
                               int.from_bytes(raw_sig[32:], "big"))
    try:
        pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise QuoteError(check, "ECDSA signature does not verify") from None


def _cert_signed_by(cert, issuer):
    """True if issuer's key verifies cert's signature."""
    pub = issuer.public_key()
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def _is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_validity(cert, now, check):
    if not cert.not_valid_before <= now <= cert.not_valid_after:
        raise QuoteError(check, f"{cert.subject.rfc4514_string()} not valid at {now} "
                                f"({cert.not_valid_before} .. {cert.not_valid_after})")


def load_roots(trusted_roots):
    """PEM bytes/str, or x509.Certificate objects -> list of certificates."""
    out = []
    for r in trusted_roots:
        if isinstance(r, x509.Certificate):
            out.append(r)
        else:
            out.extend(_load_pem_chain(r.encode() if isinstance(r, str) else bytes(r)))
    return out


def verify_pck_chain(chain, trusted_roots, now):
    """Chain-build from chain[0] to a pinned root; returns [leaf, ..., pinned root]."""
    if not chain:
        raise QuoteError("pck_chain", "no PCK certificates in the quote")
    pinned = {_der(r): r for r in trusted_roots}
    path = [chain[0]]
    for _ in range(4):
        cur = path[-1]
        _check_validity(cur, now, "pck_chain")
        for root in pinned.values():
            if root.subject == cur.issuer and _cert_signed_by(cur, root):
                _check_validity(root, now, "pck_chain")
                return path + ([] if _der(cur) == _der(root) else [root])
        issuers = [c for c in chain if c.subject == cur.issuer and _der(c) != _der(cur)
                   and _der(c) not in {_der(p) for p in path}]
        issuer = next((c for c in issuers if _is_ca(c) and _cert_signed_by(cur, c)), None)
        if issuer is None:
            raise QuoteError("pck_chain", f"no trusted issuer for "
                                          f"{cur.subject.rfc4514_string()} (root not pinned)")
        path.append(issuer)
    raise QuoteError("pck_chain", "chain too long")


def verify_quote(quote_bytes, trusted_roots, now=None):
    """Parse and verify a TDX v4 or v5 quote against PINNED roots; returns the TdxQuote."""
    q = parse_quote(quote_bytes)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is not None:          # cryptography 38 certificate dates are naive UTC
        now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    try:
        att_pub = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + q.attestation_key)
    except ValueError:
        raise QuoteError("attestation_key", "not a valid P-256 point") from None
    _ecdsa_verify(att_pub, q.signature, q.signed_bytes, "quote_signature")
    expect = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest()
    if q.qe_report_data[:32] != expect or any(q.qe_report_data[32:]):
        raise QuoteError("qe_report_data",
                         "QE REPORTDATA != SHA-256(attestation key || auth data) || zeros")
    path = verify_pck_chain(q.pck_chain, load_roots(trusted_roots), now)
    leaf_pub = path[0].public_key()
    if not isinstance(leaf_pub, ec.EllipticCurvePublicKey):
        raise QuoteError("qe_report_signature", "PCK leaf key is not EC")
    _ecdsa_verify(leaf_pub, q.qe_report_signature, q.qe_report, "qe_report_signature")
    return q
