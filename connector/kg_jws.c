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

int kg_jws_header_rules(const cJSON *header, const char *what, kg_err *err)
{
    const cJSON *typ, *m1, *m2;

    if (!cJSON_IsObject(header))
        return kg_err_set(err, KG_STEP_VERIFY, "%s header is not a JSON object", what);
    if (cJSON_GetArraySize(header) > KG_JWS_HEADER_MAX_MEMBERS)
        return kg_err_set(err, KG_STEP_VERIFY, "%s header has more than %d members", what,
                          KG_JWS_HEADER_MAX_MEMBERS);
    cJSON_ArrayForEach(m1, header)
    {
        for (m2 = m1->next; m2 != NULL; m2 = m2->next)
            if (strcmp(m1->string, m2->string) == 0) {
                char name[33];
                size_t n = 0;
                for (const char *c = m1->string; *c != '\0' && n + 1 < sizeof(name); c++)
                    name[n++] = (*c >= 0x20 && *c < 0x7f) ? *c : '?'; /* untrusted text in a message */
                name[n] = '\0';
                return kg_err_set(err, KG_STEP_VERIFY, "%s header has a duplicate member '%s'", what, name);
            }
    }
    if (cJSON_GetObjectItemCaseSensitive(header, "crit") != NULL)
        return kg_err_set(err, KG_STEP_VERIFY, "%s header has \"crit\" (no extension is understood)", what);
    typ = cJSON_GetObjectItemCaseSensitive(header, "typ");
    if (typ != NULL && !(cJSON_IsString(typ) && strcmp(typ->valuestring, "JWT") == 0))
        return kg_err_set(err, KG_STEP_VERIFY, "%s header typ is not \"JWT\"", what);
    return 1;
}
