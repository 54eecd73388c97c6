/* SPDX-License-Identifier: Apache-2.0 */
/* Common includes for cmocka unit tests (cmocka.h needs these first). */
#ifndef KG_TEST_H
#define KG_TEST_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

/* The whole of the (non-empty) file at path in a malloc'ed buffer of exactly *len bytes, so that
 * a read past the end is an ASan report. The caller frees. */
static inline uint8_t *kg_test_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long n;

    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    n = ftell(fp);
    assert_true(n > 0);
    rewind(fp);
    buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

/* The file at path as a malloc'ed NUL-terminated string; *len (if len is not NULL) excludes the
 * NUL. The caller frees. */
static inline char *kg_test_read_text(const char *path, size_t *len)
{
    size_t n;
    uint8_t *data = kg_test_read_file(path, &n);
    char *text = realloc(data, n + 1);

    assert_non_null(text);
    text[n] = '\0';
    if (len != NULL)
        *len = n;
    return text;
}

/* KG_VECTORS_DIR/name (tests/vectors by default), in one of 8 static buffers used in turn. */
static inline const char *kg_test_vector(const char *name)
{
    static char paths[8][1024];
    static unsigned next;
    char *p = paths[next++ % 8];

    snprintf(p, sizeof(paths[0]), "%s/%s", KG_VECTORS_DIR, name);
    return p;
}
#endif
