/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pipeline step 5: verify an ITA token with the configuration's trust anchor, CRL policy and
 * local policy (docs/design.md §1). Signature and chain: ita_verify.h; claims: ita_claims.h.
 */
#ifndef KG_VERIFY_H
#define KG_VERIFY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ita_claims.h"
#include "ita_verify.h"
#include "kg_config.h"
#include "kg_err.h"
#include "kg_evidence.h"

typedef struct kg_verify_opts {
    time_t at;                /* 0 = now; also judges certificate and CRL validity */
    const ita_nonce *nonce;   /* the nonce we fetched, or NULL (standalone verification) */
    const uint8_t *user_data; /* our bound user data, or NULL */
    size_t user_data_len;
    const char *jwks_file;        /* optional offline JWKS instead of {ita_base_url}/certs */
    const char *const *crl_files; /* optional preloaded CRLs */
    cJSON **payload;              /* optional: receives the verified payload (caller frees) */
    ita_verifier *verifier;       /* optional, borrowed: a long-lived verifier from kg_verifier_new (JWKS
                                     and CRLs stay cached across tokens); jwks_file and crl_files
                                     are then ignored */
    const char *attester_type;    /* NULL = "TDX": the token's attester_type must equal it */
} kg_verify_opts;

/* A verifier for cfg's trust anchor, base URL and CRL policy (caller frees with
 * ita_verifier_free). jwks_file and crl_files may be NULL. Returns NULL with err. */
ita_verifier *kg_verifier_new(const kg_config *cfg, const char *jwks_file, const char *const *crl_files,
                              kg_err *err);

/* Verifies token; on success fills *claims (caller clears). Returns 1 or 0 with err (verify). */
int kg_verify_token(const kg_config *cfg, const char *token, const kg_verify_opts *opts, ita_claims *claims,
                    kg_err *err);

/* kbs_mode = background: the local policy applied to our own evidence before it is sent, since
 * no token reaches keygate there: the DEBUG bit of TDATTRIBUTES (allow_debug_td), require_mrtd
 * and require_rtmr0..3, judged by ita_td_policy_check as a token's claims are. ev->quote is the
 * TDX quote ITA appraises (azure-tdx: the IMDS quote of our TD report). require_tcb_status cannot
 * be judged here (kg_config_check refuses it with background). Returns 1, or 0 with err (step
 * verify for a refusal, evidence when the quote does not parse). */
int kg_verify_evidence_policy(const kg_config *cfg, const kg_evidence *ev, kg_err *err);

#endif
