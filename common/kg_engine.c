/* SPDX-License-Identifier: Apache-2.0 */
/* Detects a process-wide ENGINE that OpenSSL 3.0 would put in front of keygate's crypto
 * (kg_libctx.h explains why a private OSSL_LIB_CTX does not keep it out). */
#define OPENSSL_SUPPRESS_DEPRECATED /* reading the ENGINE tables is the point */
#include "kg_libctx.h"

#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <stdio.h>
#ifndef OPENSSL_NO_ENGINE
#include <openssl/engine.h>
#endif

int kg_libctx_engine_check(char *engine_id, size_t len)
{
#ifndef OPENSSL_NO_ENGINE
    /* what keygate's pipeline, provider and module use: keys, digests and the unwrap cipher */
    static const int pkey_nids[] = {EVP_PKEY_EC, EVP_PKEY_RSA, EVP_PKEY_RSA_PSS};
    static const int md_nids[] = {NID_sha256, NID_sha384, NID_sha512};
    ENGINE *e = NULL;
    size_t i;

    for (i = 0; e == NULL && i < sizeof(pkey_nids) / sizeof(pkey_nids[0]); i++)
        e = ENGINE_get_pkey_meth_engine(pkey_nids[i]);
    for (i = 0; e == NULL && i < sizeof(md_nids) / sizeof(md_nids[0]); i++)
        e = ENGINE_get_digest_engine(md_nids[i]);
    if (e == NULL)
        e = ENGINE_get_cipher_engine(NID_aes_256_gcm);
    if (e != NULL) {
        if (engine_id != NULL && len > 0)
            snprintf(engine_id, len, "%s", ENGINE_get_id(e) != NULL ? ENGINE_get_id(e) : "?");
        ENGINE_finish(e); /* the lookups return a functional reference */
        return 0;
    }
#endif
    if (engine_id != NULL && len > 0)
        engine_id[0] = '\0';
    return 1;
}

void kg_libctx_engine_unregister_all(void)
{
#ifndef OPENSSL_NO_ENGINE
    ENGINE *e;

    /* exactly what ENGINE_register_complete() registers; ENGINE_get_next frees the previous */
    for (e = ENGINE_get_first(); e != NULL; e = ENGINE_get_next(e)) {
        ENGINE_unregister_pkey_meths(e);
        ENGINE_unregister_pkey_asn1_meths(e);
        ENGINE_unregister_digests(e);
        ENGINE_unregister_ciphers(e);
        ENGINE_unregister_RSA(e);
        ENGINE_unregister_EC(e);
        ENGINE_unregister_DSA(e);
        ENGINE_unregister_DH(e);
        ENGINE_unregister_RAND(e);
    }
#endif
}
