/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Intel KBS wrapped_key (kg_wrap_unwrap): LE32 iv_len, tag_len, ct_len header, IV,
 * AES-256-GCM ciphertext and tag, then the private-key parser of the plaintext (PKCS#8, PKCS#1,
 * SEC1: kg_wrap_parse_private_key).
 *
 * The first input byte picks the mode (the rest is the payload):
 *   bit 0 clear: the payload is wrapped_key as received (header checks, GCM authentication);
 *   bit 0 set:   the payload is the plaintext; the harness seals it correctly (header + GCM under
 *                the SWK) so that mutations reach the key parsers through the real unwrap path;
 *   bits 1-2:    the reference public key passed along (only its EC curve is used, by a SEC1 key
 *                without parameters): none, P-256, P-384, or an RSA key.
 * wrapped_swk is always a valid RSA-OAEP encryption of the fixed SWK. The wrapping key is
 * RSA-1024 here only for speed (the code takes any RSA key; production uses RSA-3072).
 */
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "fuzz_common.h"
#include "kg_libctx.h"
#include "kg_wrap.h"

static EVP_PKEY *wrapping, *references[4]; /* none, P-256, P-384, RSA */
static uint8_t swk[32], wrapped_swk[512];
static size_t wrapped_swk_len;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    EVP_PKEY_CTX *ctx;

    (void)argc;
    (void)argv;
    memset(swk, 0x5a, sizeof(swk));
    wrapping = EVP_PKEY_Q_keygen(kg_libctx(), NULL, "RSA", (size_t)1024);
    references[1] = EVP_PKEY_Q_keygen(kg_libctx(), NULL, "EC", "P-256");
    references[2] = EVP_PKEY_Q_keygen(kg_libctx(), NULL, "EC", "P-384");
    references[3] = wrapping;
    FUZZ_REQUIRE(wrapping != NULL && references[1] != NULL && references[2] != NULL);
    ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), wrapping, NULL);
    wrapped_swk_len = sizeof(wrapped_swk);
    FUZZ_REQUIRE(ctx != NULL && EVP_PKEY_encrypt_init(ctx) > 0 &&
                 EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
                 EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) > 0 &&
                 EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) > 0 &&
                 EVP_PKEY_encrypt(ctx, wrapped_swk, &wrapped_swk_len, swk, sizeof(swk)) > 0);
    EVP_PKEY_CTX_free(ctx);
    return 0;
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* header ‖ IV ‖ AES-256-GCM(plain) ‖ tag, malloc'ed; NULL if the plaintext is too large. */
static uint8_t *seal(const uint8_t *plain, size_t len, size_t *out_len)
{
    static const uint8_t iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    EVP_CIPHER_CTX *c;
    uint8_t *out;
    int n = 0, f = 0;

    if (len > 16 * 1024)
        return NULL;
    *out_len = 12 + 12 + len + 16;
    out = malloc(*out_len);
    c = EVP_CIPHER_CTX_new();
    FUZZ_REQUIRE(out != NULL && c != NULL);
    le32(out, 12);
    le32(out + 4, 16);
    le32(out + 8, (uint32_t)(len + 16));
    memcpy(out + 12, iv, 12);
    FUZZ_REQUIRE(EVP_EncryptInit_ex2(c, EVP_aes_256_gcm(), swk, iv, NULL) &&
                 EVP_EncryptUpdate(c, out + 24, &n, plain, (int)len) &&
                 EVP_EncryptFinal_ex(c, out + 24 + n, &f) &&
                 EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + 24 + len));
    EVP_CIPHER_CTX_free(c);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *wrapped;
    size_t wrapped_len;
    EVP_PKEY *key = NULL;
    kg_err err;

    if (size < 1)
        return 0;
    if ((data[0] & 1) == 0) {
        wrapped_len = size - 1;
        wrapped = fuzz_dup(data + 1, wrapped_len);
    } else if ((wrapped = seal(data + 1, size - 1, &wrapped_len)) == NULL) {
        return 0;
    }
    if (kg_wrap_unwrap(wrapping, wrapped, wrapped_len, wrapped_swk, wrapped_swk_len,
                       references[(data[0] >> 1) & 3], &key, &err)) {
        fuzz_note("kg_wrap_unwrap", 1, NULL);
        EVP_PKEY_free(key);
    } else {
        fuzz_note("kg_wrap_unwrap", 0, err.msg);
    }
    free(wrapped);
    fuzz_err_queue_empty();
    return 0;
}
