/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_evidence.h"

#include "kg_libctx.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

void kg_evidence_clear(kg_evidence *ev)
{
    if (ev == NULL)
        return;
    free(ev->quote);
    free(ev->runtime_data);
    free(ev->user_data);
    free(ev->event_log);
    memset(ev, 0, sizeof(*ev));
}

int kg_evidence_set_runtime_data(kg_evidence *ev, const uint8_t *data, size_t len, kg_err *err)
{
    if (len == 0)
        return 1;
    if ((ev->runtime_data = malloc(len)) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    memcpy(ev->runtime_data, data, len);
    ev->runtime_data_len = len;
    return 1;
}

int tdx_report_data_compute(const uint8_t *nonce_val, size_t val_len, const uint8_t *nonce_iat,
                            size_t iat_len, const uint8_t *user_data, size_t user_data_len, uint8_t out[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_MD *sha512 = EVP_MD_fetch(kg_libctx(), "SHA512", NULL); /* never the application's context */
    unsigned int n = 0;
    int ok = 0;

    if (md == NULL || sha512 == NULL)
        goto err;
    if (EVP_DigestInit_ex2(md, sha512, NULL) && (val_len == 0 || EVP_DigestUpdate(md, nonce_val, val_len)) &&
        (iat_len == 0 || EVP_DigestUpdate(md, nonce_iat, iat_len)) &&
        (user_data_len == 0 || EVP_DigestUpdate(md, user_data, user_data_len)) &&
        EVP_DigestFinal_ex(md, out, &n) && n == 64)
        ok = 1;
err:
    EVP_MD_CTX_free(md);
    EVP_MD_free(sha512);
    return ok;
}
