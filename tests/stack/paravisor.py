# SPDX-License-Identifier: Apache-2.0
"""Test helper playing the Azure paravisor (HCL) against a TPM such as swtpm.

    /usr/bin/python3 -m tests.stack.paravisor --tcti swtpm:host=127.0.0.1,port=P --state DIR
        [--mode normal|never|malformed] [--poll-ms 20] [--mrtd HEX]

On an Azure TDX CVM the paravisor answers a write of NV index 0x01400002 with a fresh HCL report
in NV index 0x01400001 (docs/protocols/azure-tdx.md §2).  This helper does the same from outside the TPM: it
defines 0x01400001 (owner read/write) holding an initial report whose user-data is 64 zero bytes,
polls 0x01400002 with tpm2-tools, and whenever its contents change writes a new report:

    [0, 32)       "HCLA", version 2, report size, request type 2 (TDX), status 0, reserved
    [32, 1056)    a 1024-byte TD report (type 0x81): REPORTDATA = SHA-256(runtime JSON) || 32
                  zero bytes at offset 128, TEE_TCB_INFO (TEE_TCB_SVN, MRSEAM) at 256, TDINFO
                  (attributes, XFAM, MRTD, ...) at 512 with the simulated TD's defaults
    [1216, 1236)  IGVM request data header: data_size, version 1, report_type 4 (TDX),
                  hash_type 1 (SHA-256), variable_data_size (= runtime JSON length)
    [1236, ...)   the runtime JSON, "user-data" = hex of 0x01400002 in UPPER case (so that the
                  consumer has to compare case-insensitively), zero padding to the index size

NV size: a real HCL report index holds 2600 bytes, but swtpm (libtpms) caps an NV index at
TPM2_PT_NV_INDEX_MAX = 2048 bytes.  The index is defined with min(2600, NV_INDEX_MAX) bytes and
the runtime JSON is kept compact (one RSA-2048 JWK, short vm-configuration) so that it fits.

Modes (fault knobs):
    normal     as above
    never      keep the initial report: our hash never appears
    malformed  answer with a report whose runtime JSON is not JSON (bound by REPORTDATA and
               with consistent lengths, so only the JSON itself is wrong)

Writes {state}/paravisor.json = {"pid", "index_size"} once 0x01400001 is defined; stops on
SIGTERM (exit 0, the announce file removed; NV indices are left as they are).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

from .simquote import DEFAULTS

NV_USER_DATA = 0x01400002
NV_HCL_REPORT = 0x01400001
REAL_HCL_REPORT_SIZE = 2600
TD_REPORT_LEN = 1024
IGVM_OFFSET = 1216
RUNTIME_OFFSET = 1236
# a fixed RSA-2048 modulus-shaped value: the helper never signs with it
AK_N = base64.urlsafe_b64encode(hashlib.shake_256(b"keygate HCLAkPub").digest(256)).rstrip(
    b"=").decode()


def tpm(tcti, *args, data=None, check=True):
    env = dict(os.environ, TPM2TOOLS_TCTI=tcti)
    r = subprocess.run(["tpm2_" + args[0], *args[1:]], env=env, input=data, capture_output=True,
                       timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"tpm2_{args[0]} failed: {r.stderr.decode(errors='replace').strip()}")
    return r


def nv_indices(tcti):
    out = tpm(tcti, "getcap", "handles-nv-index").stdout.decode()
    return {int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", out)}


def nv_index_max(tcti):
    out = tpm(tcti, "getcap", "properties-fixed").stdout.decode()
    m = re.search(r"TPM2_PT_NV_INDEX_MAX:\s*\n\s*raw:\s*(0x[0-9a-fA-F]+)", out)
    return int(m.group(1), 16) if m else 2048


def td_report(report_data, mrtd=None):
    """A 1024-byte TD report with this REPORTDATA and the simulated TD's measurements."""
    r = bytearray(TD_REPORT_LEN)
    r[0] = 0x81                                          # REPORTTYPE.TYPE = TDX
    r[128:192] = report_data                             # REPORTMACSTRUCT.REPORTDATA
    r[256] = 1                                           # TEE_TCB_INFO.VALID
    r[264:280] = DEFAULTS["tee_tcb_svn"]
    r[280:328] = DEFAULTS["mrseam"]
    r[512:520] = (1 << 28).to_bytes(8, "little")         # TDINFO.ATTRIBUTES: SEPT_VE_DISABLE
    r[520:528] = DEFAULTS["xfam"]
    r[528:576] = mrtd or DEFAULTS["mrtd"]
    return bytes(r)


def runtime_json(user_data_hex):
    """A compact Azure runtime JSON (field names and shape of the real one)."""
    obj = {"keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA", "e": "AQAB",
                     "n": AK_N}],
           "vm-configuration": {"console-enabled": True, "secure-boot": True,
                                "tpm-enabled": True, "tpm-persisted": True,
                                "vmUniqueId": "6E1C5F0B-0D7A-4B53-9A8E-2F4C1D3B5A69"},
           "user-data": user_data_hex}
    return json.dumps(obj, separators=(",", ":")).encode()


def hcl_report(user_data, size, mode="normal", mrtd=None):
    """The HCL report for the 64 bytes read from NV 0x01400002, padded to size bytes."""
    runtime = runtime_json(user_data.hex().upper())
    if mode == "malformed":
        runtime = runtime[:len(runtime) // 2] + b"]}"
    report = td_report(hashlib.sha256(runtime).digest() + bytes(32), mrtd)
    total = RUNTIME_OFFSET + len(runtime)
    if total > size:
        raise ValueError(f"HCL report of {total} bytes does not fit the {size}-byte index")
    header = b"HCLA" + struct.pack("<IIII", 2, total, 2, 0) + bytes(12)
    igvm = struct.pack("<IIIII", 20 + len(runtime), 1, 4, 1, len(runtime))
    blob = header + report + bytes(IGVM_OFFSET - 32 - TD_REPORT_LEN) + igvm + runtime
    return blob + bytes(size - len(blob))


def write_report(tcti, blob):
    tpm(tcti, "nvwrite", hex(NV_HCL_REPORT), "-C", "o", "-i", "-", data=blob)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--tcti", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--mode", choices=("normal", "never", "malformed"), default="normal")
    p.add_argument("--poll-ms", type=int, default=20)
    p.add_argument("--mrtd", help="MRTD hex (default: the simulated TD's)")
    args = p.parse_args(argv)
    mrtd = bytes.fromhex(args.mrtd) if args.mrtd else None
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    size = min(REAL_HCL_REPORT_SIZE, nv_index_max(args.tcti))
    if NV_HCL_REPORT not in nv_indices(args.tcti):
        tpm(args.tcti, "nvdefine", hex(NV_HCL_REPORT), "-C", "o", "-s", str(size), "-a",
            "ownerread|ownerwrite|authread|authwrite")
    write_report(args.tcti, hcl_report(bytes(64), size, mrtd=mrtd))
    announce = os.path.join(args.state, "paravisor.json")
    with open(announce + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "index_size": size}, f)
    os.replace(announce + ".tmp", announce)
    last = None
    try:
        while not stop:
            time.sleep(args.poll_ms / 1000)
            if args.mode == "never":
                continue
            r = tpm(args.tcti, "nvread", hex(NV_USER_DATA), "-C", "o", "-s", "64", check=False)
            if r.returncode != 0 or len(r.stdout) != 64 or r.stdout == last:
                continue
            last = r.stdout
            write_report(args.tcti, hcl_report(last, size, args.mode, mrtd))
    finally:
        if os.path.exists(announce):
            os.unlink(announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
