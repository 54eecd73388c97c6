/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_jcs.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jcs_buf {
    char *data;
    size_t len, cap;
    int oom;
} jcs_buf;

static void put(jcs_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if ((p = realloc(b->data, cap)) == NULL) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(jcs_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Decodes one UTF-8 scalar value (RFC 3629: shortest form, no surrogates, <= U+10FFFF).
 * Returns the number of bytes, or 0 when invalid. */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if (p[0] >= 0xC2 && p[0] <= 0xDF && (p[1] & 0xC0) == 0x80) {
        *cp = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
        return 2;
    }
    if ((p[0] & 0xF0) == 0xE0 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
        *cp = (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
        return (*cp >= 0x800 && (*cp < 0xD800 || *cp > 0xDFFF)) ? 3 : 0;
    }
    if (p[0] >= 0xF0 && p[0] <= 0xF4 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 &&
        (p[3] & 0xC0) == 0x80) {
        *cp = (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 |
              (p[3] & 0x3F);
        return (*cp >= 0x10000 && *cp <= 0x10FFFF) ? 4 : 0;
    }
    return 0;
}

static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;
    size_t n;
    while (*p != '\0') {
        if ((n = utf8_decode(p, &cp)) == 0)
            return 0;
        p += n;
    }
    return 1;
}

/* Walks a valid UTF-8 string as UTF-16 code units. */
typedef struct u16_iter {
    const unsigned char *p;
    uint16_t pending; /* low surrogate still to deliver, 0 = none */
} u16_iter;

/* Next unit, or -1 at the end. */
static int32_t u16_next(u16_iter *it)
{
    uint32_t cp;
    size_t n;
    if (it->pending != 0) {
        uint16_t u = it->pending;
        it->pending = 0;
        return u;
    }
    if (*it->p == '\0' || (n = utf8_decode(it->p, &cp)) == 0)
        return -1;
    it->p += n;
    if (cp < 0x10000)
        return (int32_t)cp;
    cp -= 0x10000;
    it->pending = (uint16_t)(0xDC00 | (cp & 0x3FF));
    return (int32_t)(0xD800 | (cp >> 10));
}

static int utf16_cmp(const char *a, const char *b)
{
    u16_iter x = {(const unsigned char *)a, 0}, y = {(const unsigned char *)b, 0};
    for (;;) {
        int32_t ua = u16_next(&x), ub = u16_next(&y);
        if (ua != ub)
            return ua < ub ? -1 : 1; /* -1 (end) sorts first: a prefix precedes */
        if (ua < 0)
            return 0;
    }
}

static int member_cmp(const void *a, const void *b)
{
    const cJSON *const *x = a, *const *y = b;
    return utf16_cmp((*x)->string, (*y)->string);
}

static void put_string(jcs_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *run = p;

    put(b, "\"", 1);
    for (; *p != '\0'; p++) {
        const char *esc = NULL;
        char u[7];
        if (*p >= 0x20 && *p != '"' && *p != '\\')
            continue;
        put(b, (const char *)run, (size_t)(p - run));
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\t': esc = "\\t"; break;
        case '\n': esc = "\\n"; break;
        case '\f': esc = "\\f"; break;
        case '\r': esc = "\\r"; break;
        default: snprintf(u, sizeof(u), "\\u00%c%c", hex[*p >> 4], hex[*p & 15]); esc = u;
        }
        puts_(b, esc);
        run = p + 1;
    }
    put(b, (const char *)run, (size_t)(p - run));
    put(b, "\"", 1);
}

int kg_jcs_number(double v, char *buf, size_t size)
{
    char tmp[40], digits[20], *e;
    int prec, exp10, k, n;
    size_t used = 0;

    if (!isfinite(v) || size < 32)
        return 0;
    if (v == 0) { /* also -0 */
        snprintf(buf, size, "0");
        return 1;
    }
    /* the shortest digit string that reads back as v: the first precision that round-trips
     * (printf rounds correctly, so it is also the closest such string) */
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* tmp = [-]d[.ddd]e[+-]xx */
    e = strchr(tmp, 'e');
    exp10 = atoi(e + 1);
    k = 0;
    for (const char *p = tmp; p < e; p++)
        if (*p >= '0' && *p <= '9')
            digits[k++] = *p;
    while (k > 1 && digits[k - 1] == '0')
        k--;
    digits[k] = '\0';
    n = exp10 + 1; /* v = 0.digits * 10^n */
    if (v < 0)
        buf[used++] = '-';
#define EMIT(...) used += (size_t)snprintf(buf + used, size - used, __VA_ARGS__)
    if (k <= n && n <= 21) {
        EMIT("%s", digits);
        for (int i = 0; i < n - k; i++)
            EMIT("0");
    } else if (0 < n && n <= 21) {
        EMIT("%.*s.%s", n, digits, digits + n);
    } else if (-6 < n && n <= 0) {
        EMIT("0.");
        for (int i = 0; i < -n; i++)
            EMIT("0");
        EMIT("%s", digits);
    } else {
        if (k == 1)
            EMIT("%c", digits[0]);
        else
            EMIT("%c.%s", digits[0], digits + 1);
        EMIT("e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
#undef EMIT
    return used < size;
}

static int serialize(jcs_buf *b, const cJSON *v, int depth, kg_step step, kg_err *err)
{
    char num[40];

    if (depth > KG_JCS_MAX_DEPTH)
        return kg_err_set(err, step, "canonical JSON: nesting deeper than %d", KG_JCS_MAX_DEPTH);
    switch (v->type & 0xFF) {
    case cJSON_NULL: puts_(b, "null"); return 1;
    case cJSON_True: puts_(b, "true"); return 1;
    case cJSON_False: puts_(b, "false"); return 1;
    case cJSON_Number:
        if (!kg_jcs_number(v->valuedouble, num, sizeof(num)))
            return kg_err_set(err, step, "canonical JSON: NaN or Infinity is not a JSON number");
        puts_(b, num);
        return 1;
    case cJSON_String:
        if (v->valuestring == NULL || !utf8_valid(v->valuestring))
            return kg_err_set(err, step, "canonical JSON: a string is not valid UTF-8");
        put_string(b, v->valuestring);
        return 1;
    case cJSON_Array: {
        const cJSON *item;
        int first = 1;
        put(b, "[", 1);
        cJSON_ArrayForEach(item, v)
        {
            if (!first)
                put(b, ",", 1);
            first = 0;
            if (!serialize(b, item, depth + 1, step, err))
                return 0;
        }
        put(b, "]", 1);
        return 1;
    }
    case cJSON_Object: {
        const cJSON *item, **members;
        size_t count = 0, i = 0;
        int ok = 1;
        cJSON_ArrayForEach(item, v) count++;
        if ((members = malloc((count ? count : 1) * sizeof(*members))) == NULL)
            return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        cJSON_ArrayForEach(item, v)
        {
            if (item->string == NULL || !utf8_valid(item->string)) {
                free(members);
                return kg_err_set(err, step, "canonical JSON: a member name is not valid UTF-8");
            }
            members[i++] = item;
        }
        qsort(members, count, sizeof(*members), member_cmp);
        put(b, "{", 1);
        for (i = 0; ok && i < count; i++) {
            if (i > 0 && utf16_cmp(members[i - 1]->string, members[i]->string) == 0) {
                ok = kg_err_set(err, step, "canonical JSON: duplicate member '%.40s'", members[i]->string);
                break;
            }
            if (i > 0)
                put(b, ",", 1);
            put_string(b, members[i]->string);
            put(b, ":", 1);
            ok = serialize(b, members[i], depth + 1, step, err);
        }
        put(b, "}", 1);
        free(members);
        return ok;
    }
    default: return kg_err_set(err, step, "canonical JSON: unsupported JSON node (raw or invalid)");
    }
}

int kg_jcs_serialize(const cJSON *value, kg_step step, char **out, size_t *out_len, kg_err *err)
{
    jcs_buf b = {NULL, 0, 0, 0};

    *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (value == NULL)
        return kg_err_set(err, step, "canonical JSON: no value");
    if (!serialize(&b, value, 0, step, err)) {
        free(b.data);
        return 0;
    }
    if (b.oom || b.data == NULL) {
        free(b.data);
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    }
    *out = b.data;
    if (out_len != NULL)
        *out_len = b.len;
    return 1;
}
