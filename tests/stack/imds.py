# SPDX-License-Identifier: Apache-2.0
"""Local stand-in for Azure IMDS's TD quote endpoint (plain HTTP on 127.0.0.1).

    /usr/bin/python3 -m tests.stack.imds --state DIR --http [--port N] [--fault JSON]...

    POST /acc/tdquote  {"report": base64 of a 1024-byte TD report}  ->  {"quote": base64url, unpadded}

Per docs/protocols/azure-tdx.md §3: the TD report (type 0x81) becomes a TDX v4 quote signed by the stack's
simulated PCK (simquote.py) carrying the report's REPORTDATA, TEE_TCB_SVN, MRSEAM, TD attributes,
XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG and RTMRs.  The report is accepted in standard or
URL-safe base64, padded or not (the clients differ).  A body that is not {"report": ...} with
1024 bytes of TD report is 400.  Faults are the base server's (e.g. {"mode": "status",
"status": 500}).
"""

import base64

from .ita import b64decode_any
from .server import BadRequest, StackService, json_response, main
from .simquote import make_sim_quote

TD_REPORT_LEN = 1024
# TD report offsets (TDX module ABI): TEE_TCB_INFO at 256, TDINFO at 512
TD_REPORT_FIELDS = {
    "tee_tcb_svn": (264, 16), "mrseam": (280, 48), "mrsignerseam": (328, 48),
    "seam_attributes": (376, 8), "td_attributes": (512, 8), "xfam": (520, 8),
    "mrtd": (528, 48), "mrconfigid": (576, 48), "mrowner": (624, 48),
    "mrownerconfig": (672, 48), "rtmr0": (720, 48), "rtmr1": (768, 48), "rtmr2": (816, 48),
    "rtmr3": (864, 48),
}


class ImdsService(StackService):
    max_body = 64 * 1024

    def __init__(self, state_dir):
        super().__init__("imds", state_dir)
        self.add_route("POST", r"/acc/tdquote", self.tdquote)

    def tdquote(self, req):
        req.attestation_type = "azure-tdx"
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("report"), str):
            raise BadRequest('body must be {"report": base64}')
        report = b64decode_any(body["report"], "report")
        if len(report) != TD_REPORT_LEN:
            raise BadRequest(f"report is {len(report)} bytes, not a {TD_REPORT_LEN}-byte TD report")
        if report[0] != 0x81:
            raise BadRequest("report is not a TDX TD report (type 0x81)")
        fields = {name: report[off:off + size] for name, (off, size) in TD_REPORT_FIELDS.items()}
        quote = make_sim_quote(self.state_dir, report[128:192], **fields)
        return json_response(200, {"quote": base64.urlsafe_b64encode(quote).rstrip(b"=").decode()})


def factory(args):
    return ImdsService(args.state)


if __name__ == "__main__":
    raise SystemExit(main(factory))
