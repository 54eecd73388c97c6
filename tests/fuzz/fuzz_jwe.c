/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trustee JWE (kg_jwe_decrypt): flattened JSON, protected header checks, ECDH-ES+A256KW (Concat
 * KDF, AES key unwrap) or RSA-OAEP-256, AES-256-GCM. The TEE keys are fixed (data/jwe-tee-ec.pem,
 * a P-256 key, and data/jwe-tee-rsa.pem, RSA-1024 only for speed: the code takes any RSA size).
 *
 * The first input byte picks the key and the mode (the rest is the payload):
 *   bit 0: 0 = the EC key, 1 = the RSA key;
 *   bit 1: 0 = the payload is the JWE JSON as received;
 *          1 = the payload is a protected header JSON text, a NUL, then a plaintext: the harness
 *              seals it correctly (base64url header as the GCM AAD, AES-256-GCM under the fixed
 *              CEK of data/jwe-seal.json, whose encrypted_key for each key was made by
 *              make-corpus.py with the Trustee stand-in's make_jwe), so that mutations of the
 *              header and plaintext get past GCM authentication. When the header in such an input
 *              is accepted, the plaintext returned must be the one sealed (an oracle).
 */
#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fuzz_common.h"
#include "kg_b64.h"
#include "kg_jwe.h"
#include "kg_libctx.h"

static EVP_PKEY *keys[2]; /* EC, RSA */
static uint8_t cek[32];
static char *encrypted_key_b64[2];

static EVP_PKEY *load_key(const char *name)
{
    BIO *b = BIO_new_file(fuzz_data_path(name), "r");
    EVP_PKEY *k;

    FUZZ_REQUIRE(b != NULL);
    k = PEM_read_bio_PrivateKey_ex(b, NULL, NULL, NULL, kg_libctx(), NULL);
    BIO_free(b);
    FUZZ_REQUIRE(k != NULL);
    return k;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s = calloc(1, 65536);
    size_t n;

    FUZZ_REQUIRE(f != NULL && s != NULL);
    n = fread(s, 1, 65535, f);
    fclose(f);
    FUZZ_REQUIRE(n > 0 && n < 65535);
    return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char *text;
    cJSON *seal;
    const cJSON *c;
    uint8_t *raw = NULL;
    size_t raw_len = 0;

    (void)argc;
    (void)argv;
    keys[0] = load_key("jwe-tee-ec.pem");
    keys[1] = load_key("jwe-tee-rsa.pem");
    text = read_text(fuzz_data_path("jwe-seal.json"));
    seal = cJSON_Parse(text);
    free(text);
    c = cJSON_GetObjectItemCaseSensitive(seal, "cek");
    FUZZ_REQUIRE(cJSON_IsString(c) &&
                 kg_b64url_decode(c->valuestring, strlen(c->valuestring), &raw, &raw_len) &&
                 raw_len == sizeof(cek));
    memcpy(cek, raw, sizeof(cek));
    free(raw);
    c = cJSON_GetObjectItemCaseSensitive(seal, "ec_encrypted_key");
    FUZZ_REQUIRE(cJSON_IsString(c) && (encrypted_key_b64[0] = strdup(c->valuestring)) != NULL);
    c = cJSON_GetObjectItemCaseSensitive(seal, "rsa_encrypted_key");
    FUZZ_REQUIRE(cJSON_IsString(c) && (encrypted_key_b64[1] = strdup(c->valuestring)) != NULL);
    cJSON_Delete(seal);
    return 0;
}

/* The flattened JWE of plain under header (header_len bytes) for key k, malloc'ed text. */
static char *seal(int k, const uint8_t *header, size_t header_len, const uint8_t *plain, size_t plain_len,
                  size_t *out_len)
{
    static const uint8_t iv[12] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t *ct = malloc(plain_len ? plain_len : 1), tag[16];
    char *protected_b64 = kg_b64url_encode(header, header_len), *iv_b64 = kg_b64url_encode(iv, sizeof(iv));
    char *ct_b64, *tag_b64, *out;
    int n = 0, f = 0;

    FUZZ_REQUIRE(c != NULL && ct != NULL && protected_b64 != NULL && iv_b64 != NULL);
    FUZZ_REQUIRE(EVP_EncryptInit_ex2(c, EVP_aes_256_gcm(), cek, iv, NULL) &&
                 EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)protected_b64, (int)strlen(protected_b64)) &&
                 EVP_EncryptUpdate(c, ct, &n, plain, (int)plain_len) && EVP_EncryptFinal_ex(c, ct + n, &f) &&
                 EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag));
    EVP_CIPHER_CTX_free(c);
    ct_b64 = kg_b64url_encode(ct, plain_len);
    tag_b64 = kg_b64url_encode(tag, sizeof(tag));
    FUZZ_REQUIRE(ct_b64 != NULL && tag_b64 != NULL);
    *out_len = strlen(protected_b64) + strlen(encrypted_key_b64[k]) + strlen(iv_b64) + strlen(ct_b64) +
               strlen(tag_b64) + 100;
    out = malloc(*out_len);
    FUZZ_REQUIRE(out != NULL);
    *out_len =
        (size_t)snprintf(out, *out_len,
                         "{\"protected\":\"%s\",\"encrypted_key\":\"%s\",\"iv\":\"%s\",\"ciphertext\":\"%s\","
                         "\"tag\":\"%s\"}",
                         protected_b64, encrypted_key_b64[k], iv_b64, ct_b64, tag_b64);
    free(ct);
    free(protected_b64);
    free(iv_b64);
    free(ct_b64);
    free(tag_b64);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int k, sealed;
    char *json;
    size_t json_len;
    const uint8_t *plain = NULL;
    size_t plain_len = 0;
    uint8_t *out = NULL;
    size_t out_len = 0;
    kg_err err;

    if (size < 1)
        return 0;
    k = data[0] & 1;
    sealed = (data[0] & 2) != 0;
    data++;
    size--;
    if (!sealed) {
        json_len = size;
        json = (char *)fuzz_dup(data, size);
    } else {
        const uint8_t *nul = memchr(data, '\0', size);
        size_t header_len = nul ? (size_t)(nul - data) : size;
        if (nul != NULL) {
            plain = nul + 1;
            plain_len = size - header_len - 1;
        }
        json = seal(k, data, header_len, plain, plain_len, &json_len);
    }
    if (kg_jwe_decrypt(json, json_len, keys[k], KG_STEP_TRANSFER, &out, &out_len, &err)) {
        fuzz_note("kg_jwe_decrypt", 1, NULL);
        FUZZ_REQUIRE(out != NULL && out[out_len] == '\0');
        if (sealed && (out_len != plain_len || (plain_len > 0 && memcmp(out, plain, plain_len) != 0))) {
            fprintf(stderr, "kg_jwe_decrypt: accepted a sealed JWE but returned another plaintext\n");
            abort();
        }
        OPENSSL_secure_clear_free(out, out_len + 1);
    } else {
        fuzz_note("kg_jwe_decrypt", 0, err.msg);
        FUZZ_REQUIRE(out == NULL && memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
    }
    free(json);
    fuzz_err_queue_empty();
    return 0;
}
