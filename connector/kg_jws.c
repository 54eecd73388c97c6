/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_jws.h"

#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"

static int decode_text(const char *p, size_t len, char **out)
{
    unsigned char *buf;
    size_t n;

    if (!kg_b64url_decode(p, len, &buf, &n))
        return 0;
    if (memchr(buf, '\0', n) != NULL) { /* JSON text never holds NUL */
        free(buf);
        return 0;
    }
    buf[n] = '\0'; /* kg_b64 buffers have room for one more byte */
    *out = (char *)buf;
    return 1;
}

int kg_jws_split(const char *compact, kg_jws *out, kg_err *err)
{
    const char *dot1, *dot2, *part;
    size_t len;

    memset(out, 0, sizeof(*out));
    len = strnlen(compact, KG_JWS_MAX_LEN + 1);
    if (len > KG_JWS_MAX_LEN)
        return kg_err_set(err, KG_STEP_VERIFY, "token longer than %d bytes", KG_JWS_MAX_LEN);
    dot1 = memchr(compact, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - compact)) : NULL;
    if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - compact)))
        return kg_err_set(err, KG_STEP_VERIFY, "token is not a compact JWS (three dot-separated parts)");
    part = "header";
    if (!decode_text(compact, (size_t)(dot1 - compact), &out->header_json))
        goto bad;
    part = "payload";
    if (!decode_text(dot1 + 1, (size_t)(dot2 - dot1 - 1), &out->payload_json))
        goto bad;
    part = "signature";
    if (!kg_b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - compact), &out->signature, &out->signature_len))
        goto bad;
    out->signing_input_len = (size_t)(dot2 - compact);
    return 1;
bad:
    kg_jws_clear(out);
    /* the signature is outside the signing input: a lenient decoder made the token malleable */
    return kg_err_set(err, KG_STEP_VERIFY,
                      "token %s is not canonical base64url (unpadded, unused trailing bits zero)%s", part,
                      part[0] == 's' ? "" : " or holds a NUL");
}

void kg_jws_clear(kg_jws *jws)
{
    if (jws == NULL)
        return;
    free(jws->header_json);
    free(jws->payload_json);
    free(jws->signature);
    memset(jws, 0, sizeof(*jws));
}
