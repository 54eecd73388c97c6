/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ITA token claims: the v1 flat and v2 nested ("tdx": {...}) layouts normalized into one
 * struct, and the claim checks keygate applies after the signature (ita_verify.h) holds:
 * time (exp/nbf with leeway), iss/ver, nonce echo, binding of our user data, local policy.
 */
#ifndef KG_ITA_CLAIMS_H
#define KG_ITA_CLAIMS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ita_client.h"
#include "kg_err.h"

#define ITA_MAX_POLICY_IDS 16
#define ITA_MAX_ADVISORIES 32

typedef keygate_ita_claims ita_claims; /* keygate/ita.h */

/* Parses a verified payload into *out (caller clears with ita_claims_clear). Missing optional
 * claims are left zero; malformed ones (wrong type, bad hex/base64 length) fail with err naming
 * the claim. Returns 1/0. */
int ita_claims_parse(const cJSON *payload, ita_claims *out, kg_err *err);
void ita_claims_clear(ita_claims *c);

/* What the relying party expects of a token. Zero/NULL fields are not checked, except where
 * noted. */
typedef struct ita_expect {
    time_t now;               /* 0 = time(NULL) */
    long leeway_s;            /* exp/nbf leeway; negative = default 60 */
    const char *base_url;     /* also accepted as v2 iss (the local stack, private deployments) */
    const ita_nonce *nonce;   /* must equal verifier_nonce */
    const uint8_t *user_data; /* when check_binding: held data and REPORTDATA must bind it */
    size_t user_data_len;
    int check_binding;
    int allow_debug;              /* default 0: tdx_is_debuggable must be false (always checked) */
    const char *tcb_status_allow; /* comma list; NULL or "" = any */
    const char *mrtd_allow;       /* comma list of 96-hex values; NULL or "" = any */
    const char *rtmr_allow[4];
    const char (*required_policy_ids)[37];
    int required_policy_count;
    const char *attester_type; /* NULL = "TDX": attester_type (v1 top level, v2 in "tdx") must equal it */
} ita_expect;

/* Applies every check; returns 1, or 0 with err (step verify) naming the first failed check. */
int ita_claims_check(const ita_claims *c, const ita_expect *expect, kg_err *err);

/* The TD measurements the local policy judges, from a verified token's claims or from our own
 * quote (kbs_mode = background, where no token reaches keygate). Pointers are borrowed. */
typedef struct ita_td_values {
    int is_debuggable;      /* 1, 0, or -1 when unknown (refused unless allow_debug) */
    const uint8_t *mrtd;    /* 48 bytes */
    const uint8_t *rtmr[4]; /* 48 bytes each */
    int from_quote;         /* messages name the quote's fields instead of the token's claims */
} ita_td_values;

/* The debug, require_mrtd and require_rtmr0..3 part of the local policy (expect's allow_debug,
 * mrtd_allow, rtmr_allow; the rest of expect is ignored): what ita_claims_check applies to a
 * token. Returns 1, or 0 with err (step verify) naming the failed check. */
int ita_td_policy_check(const ita_td_values *v, const ita_expect *expect, kg_err *err);

#endif
