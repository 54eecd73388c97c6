# SPDX-License-Identifier: Apache-2.0
"""Build TDX v4 or v5 quotes signed with the simulated PCK PKI of a stack state dir.

    quote = make_sim_quote(state_dir, report_data, mrtd=bytes(48), debug=False)
    quote = make_sim_quote(state_dir, report_data, version=5, body_type=3)   # TD report 1.5

The quote has the real layout (quote.py): header v4 or v5 (+ body descriptor) / ECDSA-P256 / TDX with Intel's QE vendor
id, a fresh attestation key, a QE report whose REPORTDATA binds that key and 32 bytes of auth
data (00..1f, as real QEs), signed by sim-pck.key, and sim-pck-chain.pem (NUL-terminated) as
type-5 certification data.  It verifies with quote.verify_quote pinned to sim-sgx-root-ca.pem.
"""

import hashlib
import os
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from . import pki
from .quote import (ATT_KEY_ECDSA_P256, BODY15_FIELDS, BODY_FIELDS, BODY_SIZES, CERT_TYPE_PCK_CHAIN,
                    CERT_TYPE_QE_REPORT, INTEL_QE_VENDOR_ID, QE_REPORT_LEN, TD_ATTR_DEBUG,
                    TD_ATTR_SEPT_VE_DISABLE, TEE_TDX)

# Defaults: a plausible TDX 1.5 module (values of the v2 sample token), everything else zero.
DEFAULTS = {
    "tee_tcb_svn": bytes.fromhex("0d010400000000000000000000000000"),
    "mrseam": bytes.fromhex("489e585f1c54bc5a02066c8c6ec21619ff0334ec6f21e07e2a35202c59183789"
                            "c8057e7d97dd591bb08314b185819e72"),
    "xfam": bytes.fromhex("e702060000000000"),
    "mrtd": hashlib.sha384(b"keygate sim TD").digest(),
}


def _raw_sig(key, data):
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def build_body(report_data, debug=False, body_type=2, **fields):
    """The TD quote body: 584 bytes (body type 2), or 648 (type 3: + TEE_TCB_SVN2, default the
    TEE_TCB_SVN, and MRSERVICETD, default zero). fields: any BODY_FIELDS (BODY15_FIELDS) name ->
    bytes (or hex str)."""
    values = dict(DEFAULTS)
    attrs = TD_ATTR_SEPT_VE_DISABLE | (TD_ATTR_DEBUG if debug else 0)
    values["td_attributes"] = attrs.to_bytes(8, "little")
    values.update({k: bytes.fromhex(v) if isinstance(v, str) else bytes(v)
                   for k, v in fields.items()})
    values["report_data"] = bytes(report_data)
    if body_type == 3:
        values.setdefault("tee_tcb_svn2", values["tee_tcb_svn"])
    body = bytearray(BODY_SIZES[body_type])
    sizes = {name: (off, size) for name, off, size in BODY_FIELDS + (BODY15_FIELDS if body_type == 3 else ())}
    for name, value in values.items():
        if name not in sizes:
            raise ValueError(f"unknown TD quote body field {name}")
        off, size = sizes[name]
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
        body[off:off + size] = value
    return bytes(body)


def make_sim_quote(state_dir, report_data, mrtd=None, debug=False, version=4, body_type=None, **fields):
    """A signed TDX quote with this REPORTDATA (64 bytes) and body fields: v4, or v5 with body
    type 3 (default) or 2; the v5 signature covers header + body descriptor + body."""
    if len(report_data) != 64:
        raise ValueError("report_data must be 64 bytes")
    if mrtd is not None:
        fields["mrtd"] = mrtd
    pck_key = pki.load_key(os.path.join(state_dir, pki.SIM_PCK + ".key"))
    with open(os.path.join(state_dir, pki.SIM_PCK_CHAIN), "rb") as f:
        chain_pem = f.read() + b"\0"
    att_key = ec.generate_private_key(ec.SECP256R1())
    att_pub = att_key.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)[1:]
    auth_data = bytes(range(32))
    qe_report = bytearray(QE_REPORT_LEN)
    struct.pack_into("<HH", qe_report, 256, 2, 4)                    # ISVPRODID 2, ISVSVN 4
    qe_report[320:352] = hashlib.sha256(att_pub + auth_data).digest()
    qe_report = bytes(qe_report)
    if version not in (4, 5):
        raise ValueError("version must be 4 or 5")
    body_type = 2 if version == 4 else (body_type or 3)
    header = (struct.pack("<HHIHH", version, ATT_KEY_ECDSA_P256, TEE_TDX, 0, 0)
              + INTEL_QE_VENDOR_ID + bytes(20))
    if version == 5:
        header += struct.pack("<HI", body_type, BODY_SIZES[body_type])
    signed = header + build_body(report_data, debug=debug, body_type=body_type, **fields)
    cert_data = (qe_report + _raw_sig(pck_key, qe_report)
                 + struct.pack("<H", len(auth_data)) + auth_data
                 + struct.pack("<HI", CERT_TYPE_PCK_CHAIN, len(chain_pem)) + chain_pem)
    sig_data = (_raw_sig(att_key, signed) + att_pub
                + struct.pack("<HI", CERT_TYPE_QE_REPORT, len(cert_data)) + cert_data)
    return signed + struct.pack("<I", len(sig_data)) + sig_data
