/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decoders for KEYGATE KEY REFERENCE files (docs/protocols/openssl-provider.md §2.2, §2.3):
 *
 *   level 1  "DER"  provider=keygate,input=pem
 *            our PEM label -> DATA = the DER body, structure "keygate-reference";
 *            any other label, or not PEM -> empty-handed (return 1, no callback)
 *   level 2  "RSA"/"EC"  provider=keygate,input=der,structure=keygate-reference
 *            parse, check the key type, selection guard, release when the private key is
 *            asked for (release = eager), emit an object reference for our keymgmt's load.
 *
 * Neither ever calls the passphrase callback: daemons must not block at startup.
 *
 * Errors. A decoder's errors survive only if it returns 0 from a decoding level that no caller
 * pops: libcrypto (OpenSSL 3.0 and 3.5 alike, crypto/encode_decode/decoder_lib.c) sets a mark
 * around each decoder, pops it when the decoder returns 1 and keeps it when it returns 0. On the
 * OSSL_STORE path (`openssl pkey -in REF`, apps' load_key) level 1 runs under the file: loader's
 * OSSL_DECODER_from_bio, but level 2 (where the release runs) runs inside the loader's result
 * handler, ossl_store_handle_load_result: try_key_value ignores OSSL_DECODER_from_data's failure
 * and the handler pops its mark, leaving only "ossl_store_handle_load_result:unsupported".
 * OpenSSL 3.5 keeps a keymgmt load's failure there (decoder_pkey.c marks it a hard error), but not
 * a decoder's, and 3.0 keeps neither; raising from our keymgmt load would not help on 3.0. So the
 * release error is kept per thread (prov_key.c) and level 1, which regains control outside those
 * marks, replaces what is left above its own mark with it and returns 0. On the
 * PEM_read_bio_PrivateKey path (nginx, haproxy) level 2's error would survive anyway; level 1's
 * replacement leaves exactly one error there too.
 */
#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "provider.h"

#define KG_REF_MAX_DER 8192

typedef struct kg_decoder_ctx {
    kg_provctx *provctx;
    int type; /* level 2: KG_KEY_TYPE_*; level 1: 0 */
} kg_decoder_ctx;

static OSSL_FUNC_decoder_newctx_fn kg_pem_newctx, kg_rsa_newctx, kg_ec_newctx;
static OSSL_FUNC_decoder_freectx_fn kg_decoder_freectx;
static OSSL_FUNC_decoder_decode_fn kg_pem_decode, kg_ref_decode;
static OSSL_FUNC_decoder_does_selection_fn kg_ref_does_selection;

static void *decoder_newctx(void *provctx, int type)
{
    kg_decoder_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx != NULL) {
        ctx->provctx = provctx;
        ctx->type = type;
    }
    return ctx;
}

static void *kg_pem_newctx(void *provctx)
{
    return decoder_newctx(provctx, 0);
}

static void *kg_rsa_newctx(void *provctx)
{
    return decoder_newctx(provctx, KG_KEY_TYPE_RSA);
}

static void *kg_ec_newctx(void *provctx)
{
    return decoder_newctx(provctx, KG_KEY_TYPE_EC);
}

static void kg_decoder_freectx(void *ctx)
{
    free(ctx);
}

static const char *type_name(int type)
{
    return type == KG_KEY_TYPE_RSA ? "RSA" : "EC";
}

static int kg_pem_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                         void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kg_decoder_ctx *ctx = vctx;
    BIO *bio = BIO_new_from_core_bio(ctx->provctx->corelibctx, cin);
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    kg_keyref ref;
    kg_err err;
    int ok = 1, read_ok;

    memset(&ref, 0, sizeof(ref));
    if (bio == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_INTERNAL, "keygate decoder: cannot read the input");
        return 0;
    }
    ERR_set_mark();
    read_ok = PEM_read_bio(bio, &name, &header, &data, &len);
    ERR_pop_to_mark();
    if (!read_ok || strcmp(name, KG_KEYREF_PEM_LABEL) != 0)
        goto end; /* not ours: empty-handed, not an error */
    if (!kg_keyref_from_der(data, (size_t)len, &ref, &err)) {
        KG_PROV_ERROR(ctx->provctx, KG_R_BAD_REFERENCE, "keygate: %s", err.msg);
        ok = 0;
        goto end;
    }
    kg_key_failure_begin();
    ERR_set_mark();
    {
        int object_type = OSSL_OBJECT_PKEY;
        /* the construct_ functions compute string lengths (the macros would send "") */
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type),
            OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                             (char *)type_name(kg_key_type_of(ref.pubkey)), 0),
            OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, (char *)KG_REF_STRUCTURE, 0),
            OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, data, (size_t)len), OSSL_PARAM_END};
        ok = data_cb(params, data_cbarg);
    }
    if (!ok && kg_key_failure_pending(ref.key_id)) {
        /* a release failed below (see the top): its error, in place of libcrypto's generic ones */
        ERR_pop_to_mark();
        kg_key_failure_reraise(ctx->provctx);
    } else {
        ERR_clear_last_mark();
    }
end:
    kg_keyref_clear(&ref);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(bio);
    return ok;
}

static int kg_ref_does_selection(void *provctx, int selection)
{
    /* 0 (the store path) and anything asking for the key; never bare domain parameters */
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

static int kg_ref_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                         void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kg_decoder_ctx *ctx = vctx;
    BIO *bio = BIO_new_from_core_bio(ctx->provctx->corelibctx, cin);
    unsigned char *der = malloc(KG_REF_MAX_DER + 1);
    kg_key_reference reference = {KG_KEY_MAGIC, 1, NULL};
    kg_keyref ref;
    kg_err err;
    int len, ok = 1;

    memset(&ref, 0, sizeof(ref));
    if (bio == NULL || der == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_INTERNAL, "keygate decoder: out of memory");
        ok = 0;
        goto end;
    }
    len = BIO_read(bio, der, KG_REF_MAX_DER + 1);
    /* other DER (an ordinary key, a certificate) reaches us too: pass quietly */
    if (len <= 0 || len > KG_REF_MAX_DER || !kg_keyref_from_der(der, (size_t)len, &ref, &err))
        goto end;
    KG_DEBUG("decoder %s: reference %s, selection 0x%x", type_name(ctx->type), ref.key_id, selection);
    if (kg_key_type_of(ref.pubkey) != ctx->type)
        goto end; /* the other type's decoder takes it, without a release */
    /* haproxy reads DH parameters from the same file with selection 0x4: never release then */
    if (selection != 0 && (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        goto end;
    if ((reference.key = kg_key_new(ctx->provctx, ctx->type)) == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_INTERNAL, "keygate decoder: out of memory");
        ok = 0;
        goto end;
    }
    reference.key->ref = ref;
    /* asked for the public key only (`openssl pkey -pubin`): a public key, never a release */
    reference.key->has_ref = selection == 0 || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
    memset(&ref, 0, sizeof(ref)); /* moved */
    /* release = eager: PEM_read_bio_PrivateKey (nginx, haproxy) asks for the private key, so
     * startup and `nginx -t` fail loudly when attestation fails. The store path (selection 0,
     * e.g. `openssl pkey -pubout`) defers the release to the first private operation. */
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !ctx->provctx->release_lazy &&
        ctx->provctx->agent != NULL) {
        /* backend = agent: no release here; the agent must hold this very key */
        if (!kg_key_agent_check(reference.key)) {
            ok = 0; /* raised, and kept for level 1 like a release failure */
            goto end;
        }
    } else if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !ctx->provctx->release_lazy) {
        EVP_PKEY *priv = kg_key_private_load(reference.key);

        if (priv == NULL) {
            ok = 0; /* kg_key_private_load raised the step's error */
            goto end;
        }
        EVP_PKEY_free(priv); /* the lease holds the key */
    }
    {
        int object_type = OSSL_OBJECT_PKEY;
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type),
            OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)type_name(ctx->type), 0),
            OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &reference, sizeof(reference)),
            OSSL_PARAM_END};
        ok = data_cb(params, data_cbarg);
        KG_DEBUG("decoder %s: object reference %s (%s)", type_name(ctx->type), ok ? "taken" : "refused",
                 reference.key == NULL ? "loaded" : "not loaded");
    }
end:
    kg_key_free(reference.key); /* NULL when our keymgmt's load took it */
    kg_keyref_clear(&ref);
    free(der);
    BIO_free(bio);
    return ok;
}

const OSSL_DISPATCH kg_pem_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))kg_pem_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))kg_decoder_freectx},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))kg_pem_decode},
    {0, NULL}};

const OSSL_DISPATCH kg_rsa_ref_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))kg_rsa_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))kg_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))kg_ref_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))kg_ref_decode},
    {0, NULL}};

const OSSL_DISPATCH kg_ec_ref_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))kg_ec_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))kg_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))kg_ref_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))kg_ref_decode},
    {0, NULL}};
