/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_err.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *kg_step_name(kg_step step)
{
    switch (step) {
    case KG_STEP_NONE: return "ok";
    case KG_STEP_CONFIG: return "config";
    case KG_STEP_WRAPKEY: return "wrapping-key";
    case KG_STEP_NONCE: return "nonce";
    case KG_STEP_EVIDENCE: return "evidence";
    case KG_STEP_TOKEN: return "token";
    case KG_STEP_VERIFY: return "verify";
    case KG_STEP_TRANSFER: return "transfer";
    case KG_STEP_UNWRAP: return "unwrap";
    case KG_STEP_HANDOVER: return "handover";
    case KG_STEP_INTERNAL: return "internal";
    case KG_STEP_MATCH: return "match";
    }
    return "unknown";
}

void kg_err_clear(kg_err *err)
{
    if (err != NULL)
        memset(err, 0, sizeof(*err));
}

int kg_err_set(kg_err *err, kg_step step, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL)
        return 0;
    err->step = step;
    n = snprintf(err->msg, sizeof(err->msg), "%s: ", kg_step_name(step));
    if (n < 0 || (size_t)n >= sizeof(err->msg))
        return 0;
    va_start(ap, fmt);
    vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
    va_end(ap);
    /* one line, always */
    for (char *p = err->msg; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return 0;
}

void kg_err_add_openssl(kg_err *err)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256];
    size_t len;

    if (err != NULL && e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        len = strlen(err->msg);
        snprintf(err->msg + len, sizeof(err->msg) - len, " (%s)", buf);
    }
    ERR_clear_error();
}
