/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_err: one structured error per failed call.
 *
 * Every library function that can fail returns 1 on success and 0 on failure and, on failure,
 * fills a caller-owned kg_err. The message is one line: "<step>: <cause>". HTTP details
 * (status, request-id, trace-id) travel as separate fields so callers can act on them.
 * No secret may ever be formatted into a kg_err.
 */
#ifndef KG_ERR_H
#define KG_ERR_H

#include <stddef.h>

#include "keygate/error.h"

/* The pipeline step that failed (docs/design.md §1). Values are stable: scripts see them as exit codes. */
typedef enum kg_step {
    KG_STEP_NONE = 0,
    KG_STEP_CONFIG = 10,   /* keygate.conf, key references, command line */
    KG_STEP_WRAPKEY = 11,  /* 1. wrapping key */
    KG_STEP_NONCE = 12,    /* 2. nonce */
    KG_STEP_EVIDENCE = 13, /* 3. evidence (adapters) */
    KG_STEP_TOKEN = 14,    /* 4. token (attest) */
    KG_STEP_VERIFY = 15,   /* 5. verify */
    KG_STEP_TRANSFER = 16, /* 6. transfer */
    KG_STEP_UNWRAP = 17,   /* 7. unwrap + check */
    KG_STEP_HANDOVER = 18, /* 8. hand over */
    KG_STEP_INTERNAL = 19, /* out of memory, library misuse */
    KG_STEP_MATCH = 20     /* 7b. the released public key must be the reference's */
} kg_step;

/* The public keygate_error (keygate/error.h); step holds a kg_step. */
typedef keygate_error kg_err;

/* Clears all fields. Accepts NULL. */
void kg_err_clear(kg_err *err);

/* Sets step and message (the step name is prefixed). Accepts err == NULL. Always returns 0 so
 * that "return kg_err_set(...)" reads naturally in functions that return 1/0. */
int kg_err_set(kg_err *err, kg_step step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Appends the first queued OpenSSL error (reason text) to the message and clears the queue. */
void kg_err_add_openssl(kg_err *err);

/* Stable lower-case name of a step, e.g. "nonce". */
const char *kg_step_name(kg_step step);

#endif
