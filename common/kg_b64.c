/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_b64.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

char *kg_b64_encode(const unsigned char *in, size_t len)
{
    char *out;

    if (len > (size_t)1 << 30)
        return NULL;
    out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

char *kg_b64url_encode(const unsigned char *in, size_t len)
{
    char *out = kg_b64_encode(in, len);
    size_t n;

    if (out == NULL)
        return NULL;
    for (n = 0; out[n] != '\0'; n++) {
        if (out[n] == '+')
            out[n] = '-';
        else if (out[n] == '/')
            out[n] = '_';
    }
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    return out;
}

static int is_std_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : 63;
}

int kg_b64_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len)
{
    size_t pad = 0, i;
    unsigned char *buf;
    int n;

    *out = NULL;
    *out_len = 0;
    if (in_len % 4 != 0 || in_len > (size_t)1 << 30)
        return 0;
    if (in_len > 0 && in[in_len - 1] == '=')
        pad++;
    if (in_len > 1 && in[in_len - 2] == '=')
        pad++;
    for (i = 0; i < in_len - pad; i++)
        if (!is_std_b64_char(in[i]))
            return 0;
    /* Canonical only (RFC 4648 §3.5): the bits of the last character that carry no data must be
     * zero, else "QQ==", "QR==" ... all decode to "A" and a signed token string is malleable. */
    if ((pad == 1 && (b64_value(in[in_len - 2]) & 0x03) != 0) ||
        (pad == 2 && (b64_value(in[in_len - 3]) & 0x0f) != 0))
        return 0;
    buf = malloc(in_len / 4 * 3 + 1);
    if (buf == NULL)
        return 0;
    n = in_len == 0 ? 0 : EVP_DecodeBlock(buf, (const unsigned char *)in, (int)in_len);
    if (n < 0 || (size_t)n < pad) {
        free(buf);
        return 0;
    }
    *out = buf;
    *out_len = (size_t)n - pad;
    return 1;
}

int kg_b64url_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len)
{
    char *tmp;
    size_t i, padded;
    int ok;

    *out = NULL;
    *out_len = 0;
    if (in_len % 4 == 1 || in_len > (size_t)1 << 30)
        return 0;
    padded = (in_len + 3) / 4 * 4;
    tmp = malloc(padded + 1);
    if (tmp == NULL)
        return 0;
    for (i = 0; i < in_len; i++) {
        char c = in[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (c == '+' || c == '/' || c == '=') {
            free(tmp);
            return 0;
        }
        tmp[i] = c;
    }
    for (; i < padded; i++)
        tmp[i] = '=';
    tmp[padded] = '\0';
    ok = kg_b64_decode(tmp, padded, out, out_len);
    free(tmp);
    return ok;
}
