/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keymgmt for RSA and EC keygate keys. The public half comes from the key reference (no
 * attestation needed); the private half stays inside (kg_key_private). Export of anything
 * private is refused for every selection (docs/protocols/openssl-provider.md §1 rule 1); public export,
 * public import (certificate matching, ECDH peers) and match work.
 */
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_log.h"
#include "provider.h"

static OSSL_FUNC_keymgmt_new_fn kg_rsa_km_new, kg_ec_km_new;
static OSSL_FUNC_keymgmt_free_fn kg_km_free;
static OSSL_FUNC_keymgmt_load_fn kg_km_load;
static OSSL_FUNC_keymgmt_has_fn kg_km_has;
static OSSL_FUNC_keymgmt_match_fn kg_km_match;
static OSSL_FUNC_keymgmt_import_fn kg_rsa_km_import, kg_ec_km_import;
static OSSL_FUNC_keymgmt_import_types_fn kg_rsa_km_types, kg_ec_km_types;
static OSSL_FUNC_keymgmt_export_fn kg_km_export;
static OSSL_FUNC_keymgmt_get_params_fn kg_km_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn kg_rsa_km_gettable, kg_ec_km_gettable;
static OSSL_FUNC_keymgmt_query_operation_name_fn kg_rsa_km_opname, kg_ec_km_opname;

static void *kg_rsa_km_new(void *provctx)
{
    return kg_key_new(provctx, KG_KEY_TYPE_RSA);
}

static void *kg_ec_km_new(void *provctx)
{
    return kg_key_new(provctx, KG_KEY_TYPE_EC);
}

static void kg_km_free(void *keydata)
{
    kg_key_free(keydata);
}

/* Takes the key object out of our decoder's (or store's) reference. */
static void *kg_km_load(const void *reference, size_t reference_sz)
{
    kg_key *key = kg_key_reference_get(reference, reference_sz);

    KG_DEBUG("keymgmt load: reference of %zu bytes", reference_sz);
    if (key == NULL) {
        /* a load has no provctx: raised through the first provider instance (provider.c) */
        KG_PROV_ERROR(NULL, KG_R_BAD_REFERENCE, "keygate keymgmt: not a keygate object reference");
        return NULL;
    }
    ((kg_key_reference *)reference)->key = NULL; /* ours now: the decoder must not free it */
    return key;
}

static int kg_km_has(const void *keydata, int selection)
{
    const kg_key *key = keydata;

    if (key == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0 && key->ref.pubkey == NULL)
        return 0;
    /* a referenced key has its private half (released on first use) */
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !key->has_ref)
        return 0;
    return 1;
}

static int kg_km_match(const void *a, const void *b, int selection)
{
    const kg_key *k1 = a, *k2 = b;

    if (k1->ref.pubkey == NULL || k2->ref.pubkey == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0)
        return EVP_PKEY_eq(k1->ref.pubkey, k2->ref.pubkey) == 1;
    return EVP_PKEY_parameters_eq(k1->ref.pubkey, k2->ref.pubkey) == 1;
}

/* Public import only: libcrypto imports certificate keys (match) and ECDH peers this way. */
static int km_import(kg_key *key, const char *type, int selection, const OSSL_PARAM params[])
{
    EVP_PKEY_CTX *ctx;
    EVP_PKEY *pk = NULL;
    kg_err err;
    int ok = 0;

    /* libcrypto imports peers with every selection bit set: refuse only real private material */
    if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL ||
        OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL) {
        KG_PROV_ERROR(key->provctx, KG_R_NOT_AVAILABLE, "keygate: importing private keys is not supported");
        return 0;
    }
    kg_err_clear(&err);
    if ((ctx = kg_pkey_ctx_new_from_name(NULL, type)) != NULL && EVP_PKEY_fromdata_init(ctx) > 0 &&
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) > 0 &&
        kg_keyref_set_pubkey(&key->ref, pk, &err))
        ok = 1;
    else
        KG_PROV_ERROR(key->provctx, KG_R_OPERATION, "keygate keymgmt: cannot import the %s public key%s%s",
                      type, err.msg[0] ? ": " : "", err.msg);
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static int kg_rsa_km_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    return km_import(keydata, "RSA", selection, params);
}

static int kg_ec_km_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    return km_import(keydata, "EC", selection, params);
}

static const OSSL_PARAM kg_rsa_types[] = {OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
                                          OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0), OSSL_PARAM_END};
static const OSSL_PARAM kg_ec_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0), OSSL_PARAM_END};

static const OSSL_PARAM *kg_rsa_km_types(int selection)
{
    return kg_rsa_types;
}

static const OSSL_PARAM *kg_ec_km_types(int selection)
{
    return kg_ec_types;
}

static int kg_km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    kg_key *key = keydata;

    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
        /* never a public-only copy for a KEYPAIR request either: the caller would then sign
         * with a key that has no private half (tpm2-openssl #102) */
        KG_PROV_ERROR(key->provctx, KG_R_EXPORT_REFUSED,
                      "keygate: private key export refused (keygate keys never leave the provider)");
        return 0;
    }
    if (key->ref.pubkey == NULL) {
        KG_PROV_ERROR(key->provctx, KG_R_OPERATION, "keygate keymgmt: the key has no public key to export");
        return 0;
    }
    return EVP_PKEY_export(key->ref.pubkey, selection, cb, cbarg);
}

/* bits, security-bits, max-size, default digest, EC group, public key: the public key knows */
static int kg_km_get_params(void *keydata, OSSL_PARAM params[])
{
    kg_key *key = keydata;
    return key->ref.pubkey != NULL && EVP_PKEY_get_params(key->ref.pubkey, params);
}

static const OSSL_PARAM kg_rsa_gettable[] = {OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
                                             OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
                                             OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
                                             OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
                                             OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
                                             OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
                                             OSSL_PARAM_END};

static const OSSL_PARAM kg_ec_gettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *kg_rsa_km_gettable(void *provctx)
{
    return kg_rsa_gettable;
}

static const OSSL_PARAM *kg_ec_km_gettable(void *provctx)
{
    return kg_ec_gettable;
}

static const char *kg_rsa_km_opname(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? KG_RSA_SIG_NAME : "RSA";
}

static const char *kg_ec_km_opname(int operation_id)
{
    return operation_id == OSSL_OP_KEYEXCH ? "ECDH" : KG_ECDSA_SIG_NAME;
}

#define KG_KEYMGMT_COMMON                                                                                    \
    {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))kg_km_free},                                                    \
        {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))kg_km_load},                                                \
        {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))kg_km_has},                                                  \
        {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))kg_km_match},                                              \
        {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))kg_km_export},                                            \
    {                                                                                                        \
        OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))kg_km_get_params                                       \
    }

const OSSL_DISPATCH kg_rsa_keymgmt_functions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))kg_rsa_km_new},
    KG_KEYMGMT_COMMON,
    {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))kg_rsa_km_import},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))kg_rsa_km_types},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))kg_rsa_km_types},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))kg_rsa_km_gettable},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))kg_rsa_km_opname},
    {0, NULL}};

const OSSL_DISPATCH kg_ec_keymgmt_functions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))kg_ec_km_new},
    KG_KEYMGMT_COMMON,
    {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))kg_ec_km_import},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))kg_ec_km_types},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))kg_ec_km_types},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))kg_ec_km_gettable},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))kg_ec_km_opname},
    {0, NULL}};
