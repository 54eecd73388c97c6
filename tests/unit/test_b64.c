/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_test.h"

#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"

static void roundtrip_all_lengths(void **state)
{
    unsigned char in[64];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof(in); len++) {
        char *s = kg_b64_encode(in, len), *u = kg_b64url_encode(in, len);
        unsigned char *out;
        size_t out_len;
        assert_non_null(s);
        assert_non_null(u);
        assert_int_equal(kg_b64_decode(s, strlen(s), &out, &out_len), 1);
        assert_int_equal(out_len, len);
        assert_memory_equal(out, in, len);
        free(out);
        assert_null(strchr(u, '='));
        assert_int_equal(kg_b64url_decode(u, strlen(u), &out, &out_len), 1);
        assert_int_equal(out_len, len);
        assert_memory_equal(out, in, len);
        free(out);
        free(s);
        free(u);
    }
}

static void known_values(void **state)
{
    unsigned char *out;
    size_t n;
    char *s = kg_b64_encode((const unsigned char *)"\xfb\xff", 2);
    assert_string_equal(s, "+/8=");
    free(s);
    s = kg_b64url_encode((const unsigned char *)"\xfb\xff", 2);
    assert_string_equal(s, "-_8");
    free(s);
    assert_int_equal(kg_b64_decode("Zm9vYg==", 8, &out, &n), 1);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "foob", 4);
    free(out);
}

static void rejects_malformed(void **state)
{
    static const char *bad_std[] = {"Zm9", "Zm9v\n", "Zm-_", "Z===", "Zm9vY===", "Zm9v YQ==", "=Zm9"};
    static const char *bad_url[] = {"Zm9v+", "Zm9v/", "Zm9vYg==", "Z"};
    unsigned char *out = (unsigned char *)"x";
    size_t n = 99;
    for (size_t i = 0; i < sizeof(bad_std) / sizeof(bad_std[0]); i++) {
        assert_int_equal(kg_b64_decode(bad_std[i], strlen(bad_std[i]), &out, &n), 0);
        assert_null(out);
        assert_int_equal(n, 0);
    }
    for (size_t i = 0; i < sizeof(bad_url) / sizeof(bad_url[0]); i++)
        assert_int_equal(kg_b64url_decode(bad_url[i], strlen(bad_url[i]), &out, &n), 0);
}

/* RFC 4648 §3.5: the unused bits of the last character must be zero, so every byte string has
 * exactly one encoding (issue 17 finding 8: "QQ", "QR" and "QX" all decoded to "A"). */
static void rejects_non_canonical(void **state)
{
    static const char *bad_url[] = {"QR", "QX", "Qf", "QUJ", "QUL", "QUP", "Zm9vYm", "Zm9vYh"};
    static const char *bad_std[] = {"QR==", "QX==", "QUJ=", "QUP=", "Zm9vYh=="};
    unsigned char *out = (unsigned char *)"x";
    size_t n = 99;

    for (size_t i = 0; i < sizeof(bad_url) / sizeof(bad_url[0]); i++) {
        if (kg_b64url_decode(bad_url[i], strlen(bad_url[i]), &out, &n) != 0)
            fail_msg("base64url '%s' decoded", bad_url[i]);
        assert_null(out);
        assert_int_equal(n, 0);
    }
    for (size_t i = 0; i < sizeof(bad_std) / sizeof(bad_std[0]); i++) {
        if (kg_b64_decode(bad_std[i], strlen(bad_std[i]), &out, &n) != 0)
            fail_msg("base64 '%s' decoded", bad_std[i]);
        assert_null(out);
    }
    /* the canonical encodings still decode */
    assert_int_equal(kg_b64url_decode("QQ", 2, &out, &n), 1);
    assert_int_equal(n, 1);
    assert_memory_equal(out, "A", 1);
    free(out);
    assert_int_equal(kg_b64url_decode("QUI", 3, &out, &n), 1);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "AB", 2);
    free(out);
    assert_int_equal(kg_b64_decode("QQ==", 4, &out, &n), 1);
    assert_int_equal(n, 1);
    free(out);
    assert_int_equal(kg_b64_decode("QUI=", 4, &out, &n), 1);
    assert_int_equal(n, 2);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_all_lengths),
        cmocka_unit_test(known_values),
        cmocka_unit_test(rejects_malformed),
        cmocka_unit_test(rejects_non_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
