/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_ops: the keygate agent runs one decoded private-key request (SIGN, DECRYPT, DERIVE)
 * on a released key (docs/protocols/agent.md §4). OpenSSL's EVP_PKEY_sign/decrypt/derive do the
 * work; this file maps the protocol's schemes, digests, paddings and salt lengths onto their
 * parameters and turns failures into a protocol status.
 *
 * Ownership: key is borrowed. On KG_AGENT_OK, *out is a new buffer of *out_len bytes (possibly
 * 0 bytes, never NULL) that the caller frees with OPENSSL_clear_free (DECRYPT and DERIVE results
 * are secrets). Otherwise *out is NULL and err holds one line (step handover) for the reply's
 * MESSAGE and the agent's log: it never holds data or results, and a DECRYPT failure says nothing
 * of why (no padding oracle, §5).
 */
#ifndef KG_AGENT_OPS_H
#define KG_AGENT_OPS_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_agent_proto.h"
#include "kg_err.h"

/* req->op is SIGN, DECRYPT or DERIVE (anything else: KG_AGENT_INTERNAL). Returns the status. */
kg_agent_status kg_agent_op_run(EVP_PKEY *key, const kg_agent_req *req, uint8_t **out, size_t *out_len,
                                kg_err *err);

#endif
