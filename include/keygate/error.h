/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate/error.h: the error every libkeygate call fills on failure.
 */
#ifndef KEYGATE_ERROR_H
#define KEYGATE_ERROR_H

/* Marks the functions libkeygate exports (everything else is built hidden). */
#ifndef KEYGATE_API
#define KEYGATE_API __attribute__((visibility("default")))
#endif

/* The failed step; the values are the keygate command's exit codes: 10 config, 11 wrapping key,
 * 12 nonce, 13 evidence, 14 token, 15 verify, 16 transfer, 17 unwrap, 18 handover, 19 internal,
 * 20 match (the KBS released another key than the reference names). The command's other codes
 * are no step: 0 ok, 1 usage, 21 a keygate doctor check failed (docs/cli.md). */
typedef struct keygate_error {
    int step;
    long http_status;     /* 0 when no HTTP exchange completed */
    char request_id[129]; /* request-id of the failed exchange, "" when none */
    char trace_id[129];   /* trace-id of the failed exchange, "" when none */
    char msg[768];        /* "<step>: <cause>", one line, never a secret */
} keygate_error;

#endif
