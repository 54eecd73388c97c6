/* SPDX-License-Identifier: Apache-2.0 */
/*
 * STORE loader for "keygate:<key-id>" URIs (docs/protocols/openssl-provider.md §3): `openssl pkey -in
 * keygate:ID`, `openssl storeutl keygate:ID`, OSSL_STORE_open in applications.
 *
 * A bare key id carries no public key, so load releases the key (attestation + transfer) and
 * takes the public key from the released one; the key then goes to our keymgmt as an object
 * reference, exactly as the level-2 decoder hands it over. One URI = one key object.
 * The passphrase callback is never called: daemons must not block on a prompt.
 *
 * Algorithm table entry for provider.c (OSSL_OP_STORE; the algorithm name is the URI scheme):
 *   {"keygate", "provider=keygate", kg_store_functions},
 */
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/store.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "kg_release.h"
#include "provider.h"

#define KG_STORE_SCHEME "keygate:"

typedef struct kg_store_ctx {
    kg_provctx *provctx;
    char key_id[256];
    int expect; /* OSSL_STORE_INFO_* the application asked for; 0 = anything */
    int eof;
} kg_store_ctx;

static OSSL_FUNC_store_open_fn kg_store_open;
static OSSL_FUNC_store_attach_fn kg_store_attach;
static OSSL_FUNC_store_settable_ctx_params_fn kg_store_settable_ctx_params;
static OSSL_FUNC_store_set_ctx_params_fn kg_store_set_ctx_params;
static OSSL_FUNC_store_load_fn kg_store_load;
static OSSL_FUNC_store_eof_fn kg_store_eof;
static OSSL_FUNC_store_close_fn kg_store_close;
static OSSL_FUNC_store_export_object_fn kg_store_export_object;

static const OSSL_PARAM kg_store_settable[] = {OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL), OSSL_PARAM_END};

/* Parses "keygate:<key-id>". The id must be a UUID (Intel KBS) or repo/type/tag (Trustee) and
 * fit the configured KBS; anything else (a path, "keygate://host/...", a query) is refused here,
 * before any network, with a message that says why. */
static void *kg_store_open(void *vprovctx, const char *uri)
{
    kg_provctx *provctx = vprovctx;
    kg_store_ctx *ctx = NULL;
    const char *id;
    kg_keyref probe;
    kg_err err;

    if (uri == NULL || OPENSSL_strncasecmp(uri, KG_STORE_SCHEME, strlen(KG_STORE_SCHEME)) != 0) {
        KG_PROV_ERROR(provctx, KG_R_BAD_REFERENCE, "keygate store: '%.80s' is not a keygate:<key-id> URI",
                      uri ? uri : "(null)");
        return NULL;
    }
    id = uri + strlen(KG_STORE_SCHEME);
    if (*id == '\0' || strlen(id) >= sizeof(ctx->key_id) ||
        (!kg_keyref_key_id_ok(id, "intel") && !kg_keyref_key_id_ok(id, "trustee"))) {
        KG_PROV_ERROR(provctx, KG_R_BAD_REFERENCE,
                      "keygate store: '%.80s': expected keygate:<key-id> with a key UUID (Intel KBS) or "
                      "repo/type/tag (Trustee)",
                      uri);
        return NULL;
    }
    /* the same check the release applies, against this provider's kbs_type */
    if (!kg_keyref_for_id(&provctx->cfg, id, NULL, &probe, &err)) {
        KG_PROV_ERROR(provctx, KG_R_BAD_REFERENCE, "keygate store: %s (kbs_type = %s)", err.msg,
                      provctx->cfg.kbs_type);
        return NULL;
    }
    kg_keyref_clear(&probe);
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
        KG_PROV_ERROR(provctx, KG_R_INTERNAL, "keygate store: out of memory");
        return NULL;
    }
    ctx->provctx = provctx;
    memcpy(ctx->key_id, id, strlen(id) + 1);
    KG_DEBUG("store: opened keygate:%s", ctx->key_id);
    return ctx;
}

/* Reading a key from an application's BIO is the decoder's job, not the store's. */
static void *kg_store_attach(void *provctx, OSSL_CORE_BIO *in)
{
    return NULL;
}

static const OSSL_PARAM *kg_store_settable_ctx_params(void *provctx)
{
    return kg_store_settable;
}

/* Only "expect" is understood; the other search criteria (subject, alias, ...) do not apply
 * to a URI that names exactly one key, and OSSL_STORE_supports_search sees they are absent. */
static int kg_store_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    kg_store_ctx *ctx = vctx;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);

    if (p != NULL && !OSSL_PARAM_get_int(p, &ctx->expect))
        return 0;
    return 1;
}

static const char *type_name(int type)
{
    return type == KG_KEY_TYPE_RSA ? "RSA" : "EC";
}

/* A key object for the id, released, with its public key taken from the released key. */
static kg_key *store_key(kg_store_ctx *ctx)
{
    kg_key *key;
    EVP_PKEY *priv = NULL;
    kg_err err;

    if ((key = kg_key_new(ctx->provctx, 0)) == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_INTERNAL, "keygate store: out of memory");
        return NULL;
    }
    if (!kg_keyref_for_id(&ctx->provctx->cfg, ctx->key_id, NULL, &key->ref, &err)) {
        KG_PROV_ERROR(ctx->provctx, KG_R_BAD_REFERENCE, "keygate store: %s", err.msg);
        goto err;
    }
    key->has_ref = 1;
    /* no public key in a bare id: release now (also when only the public key is wanted) */
    if ((priv = kg_key_private_load(key)) == NULL)
        goto err; /* kg_key_private_load raised the error, naming the failed step */
    if ((key->type = kg_key_type_of(priv)) == 0) {
        KG_PROV_ERROR(ctx->provctx, KG_R_HANDOVER, "keygate store: key %s is neither RSA nor EC",
                      ctx->key_id);
        goto err;
    }
    if (!kg_keyref_set_pubkey(&key->ref, priv, &err)) {
        KG_PROV_STEP_ERROR(ctx->provctx, ctx->key_id, &err);
        goto err;
    }
    EVP_PKEY_free(priv);
    return key;
err:
    EVP_PKEY_free(priv);
    kg_key_free(key);
    return NULL;
}

static int kg_store_load(void *vctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
                         OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kg_store_ctx *ctx = vctx;
    kg_key_reference reference = {KG_KEY_MAGIC, 1, NULL};
    char desc[300];
    int object_type = OSSL_OBJECT_PKEY, ok = 0;

    if (ctx->eof)
        return 0;
    ctx->eof = 1; /* one object per URI, whatever happens below */
    /* a key is all we hold: asked for certificates, CRLs or parameters, we have nothing */
    if (ctx->expect != 0 && ctx->expect != OSSL_STORE_INFO_PKEY && ctx->expect != OSSL_STORE_INFO_PUBKEY)
        return 1;
    if ((reference.key = store_key(ctx)) == NULL)
        return 0;
    snprintf(desc, sizeof(desc), "keygate attested key %s", ctx->key_id);
    {
        OSSL_PARAM params[] = {
            OSSL_PARAM_int(OSSL_OBJECT_PARAM_TYPE, &object_type),
            OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)type_name(reference.key->type), 0),
            OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &reference, sizeof(reference)),
            OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DESC, desc, 0), OSSL_PARAM_END};
        ok = object_cb(params, object_cbarg);
    }
    kg_key_free(reference.key); /* NULL when our keymgmt's load took it */
    return ok;
}

static int kg_store_eof(void *vctx)
{
    kg_store_ctx *ctx = vctx;

    return ctx->eof;
}

static int kg_store_close(void *vctx)
{
    free(vctx);
    return 1;
}

/*
 * libcrypto calls this when the key type's keymgmt it fetched first belongs to another provider
 * (the default's "RSA", say), to move the object there; if nothing is exported it falls back to
 * our own keymgmt's load. A public-only copy of a private key in the default provider would be
 * a key that cannot sign (openssl-provider.md §1 rule 1), so export only when the application asked for a
 * public key; for anything else refuse, and libcrypto loads the key into our keymgmt.
 */
static int kg_store_export_object(void *vctx, const void *objref, size_t objref_sz, OSSL_CALLBACK *export_cb,
                                  void *export_cbarg)
{
    kg_store_ctx *ctx = vctx;
    const kg_key *key = kg_key_reference_get(objref, objref_sz);

    if (key == NULL || key->ref.pubkey == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_BAD_REFERENCE, "keygate store: not a keygate object reference");
        return 0;
    }
    if (ctx->expect != OSSL_STORE_INFO_PUBKEY) {
        KG_PROV_ERROR(ctx->provctx, KG_R_EXPORT_REFUSED,
                      "private key export refused: keygate keys never leave the provider");
        return 0;
    }
    /* the public key with its domain parameters (the EC group), nothing private */
    return EVP_PKEY_export(key->ref.pubkey,
                           OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_ALL_PARAMETERS, export_cb,
                           export_cbarg);
}

const OSSL_DISPATCH kg_store_functions[] = {
    {OSSL_FUNC_STORE_OPEN, (void (*)(void))kg_store_open},
    {OSSL_FUNC_STORE_ATTACH, (void (*)(void))kg_store_attach},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))kg_store_settable_ctx_params},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))kg_store_set_ctx_params},
    {OSSL_FUNC_STORE_LOAD, (void (*)(void))kg_store_load},
    {OSSL_FUNC_STORE_EOF, (void (*)(void))kg_store_eof},
    {OSSL_FUNC_STORE_CLOSE, (void (*)(void))kg_store_close},
    {OSSL_FUNC_STORE_EXPORT_OBJECT, (void (*)(void))kg_store_export_object},
    {0, NULL}};
