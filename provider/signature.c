/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signature for keygate keys (RSA: PKCS#1 v1.5 and PSS; ECDSA), forwarding to OpenSSL's own
 * implementation in kg_libctx() on the released key (sign) or the reference's public key
 * (verify). Parameters (padding, PSS salt length, MGF1 digest, ...) pass straight through, so
 * TLS 1.2/1.3 sigalgs work; dupctx is a cheap copy of the inner contexts.
 *
 * Prepared contexts (issue 21): the inner sign init (fetches, a new EVP_PKEY_CTX, ECDSA's and
 * RSA's digest setup) cost a P-256 signature about 8% over a PEM key's. It runs once per key and
 * kind (digest name, or raw) and each operation copies the result; the prepared context lives in
 * the key's lease (kg_lease_prep_*), which frees it before the key on a refresh, a wipe or the
 * lease's end, so it never keeps a wiped key alive nor serves a replaced one. A copy holds its own
 * key reference, like the key reference an operation held before. Inits with parameters (TLS
 * passes none: it sets padding and salt length afterwards, on the copy) take the plain path.
 */
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "provider.h"

typedef struct kg_sig_ctx {
    kg_provctx *provctx;
    const char *alg; /* "RSA" | "ECDSA": the inner implementation */
    kg_key *key;
    EVP_PKEY_CTX *pctx; /* raw sign/verify; or the digest context's own pctx (not owned) */
    EVP_MD_CTX *mdctx;  /* digest sign/verify */
    int pctx_owned;
    int spent; /* a digest signature was made: the inner context (FINALISE) cannot go on */
    int agent; /* backend = agent, signing: pctx is a verify context on the public key that holds
                  the parameters, mdctx (digest sign) a plain digest; the agent signs */
} kg_sig_ctx;

static OSSL_FUNC_signature_newctx_fn kg_rsa_sig_newctx, kg_ecdsa_sig_newctx;
static OSSL_FUNC_signature_freectx_fn kg_sig_freectx;
static OSSL_FUNC_signature_dupctx_fn kg_sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn kg_sig_sign_init;
static OSSL_FUNC_signature_sign_fn kg_sig_sign;
static OSSL_FUNC_signature_verify_init_fn kg_sig_verify_init;
static OSSL_FUNC_signature_verify_fn kg_sig_verify;
static OSSL_FUNC_signature_digest_sign_init_fn kg_sig_digest_sign_init;
static OSSL_FUNC_signature_digest_sign_update_fn kg_sig_digest_update;
static OSSL_FUNC_signature_digest_sign_final_fn kg_sig_digest_sign_final;
static OSSL_FUNC_signature_digest_verify_init_fn kg_sig_digest_verify_init;
static OSSL_FUNC_signature_digest_verify_final_fn kg_sig_digest_verify_final;
static OSSL_FUNC_signature_get_ctx_params_fn kg_sig_get_ctx_params;
static OSSL_FUNC_signature_set_ctx_params_fn kg_sig_set_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn kg_rsa_sig_gettable, kg_ecdsa_sig_gettable;
static OSSL_FUNC_signature_settable_ctx_params_fn kg_rsa_sig_settable, kg_ecdsa_sig_settable;

static void *sig_newctx(void *provctx, const char *alg)
{
    kg_sig_ctx *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL) {
        KG_PROV_ERROR(provctx, KG_R_INTERNAL, "keygate %s signature: out of memory", alg);
        return NULL;
    }
    ctx->provctx = provctx;
    ctx->alg = alg;
    return ctx;
}

static void *kg_rsa_sig_newctx(void *provctx, const char *propq)
{
    return sig_newctx(provctx, "RSA");
}

static void *kg_ecdsa_sig_newctx(void *provctx, const char *propq)
{
    return sig_newctx(provctx, "ECDSA");
}

static void sig_reset(kg_sig_ctx *ctx)
{
    EVP_MD_CTX_free(ctx->mdctx);
    if (ctx->pctx_owned)
        EVP_PKEY_CTX_free(ctx->pctx);
    ctx->mdctx = NULL;
    ctx->pctx = NULL;
    ctx->pctx_owned = 0;
    ctx->spent = 0;
    ctx->agent = 0;
}

static void kg_sig_freectx(void *vctx)
{
    kg_sig_ctx *ctx = vctx;
    if (ctx == NULL)
        return;
    sig_reset(ctx);
    free(ctx);
}

static void *kg_sig_dupctx(void *vctx)
{
    kg_sig_ctx *src = vctx, *dst = calloc(1, sizeof(*dst));

    if (dst == NULL) {
        KG_PROV_ERROR(src->provctx, KG_R_INTERNAL, "keygate %s signature: out of memory", src->alg);
        return NULL;
    }
    *dst = *src;
    dst->pctx = NULL;
    dst->mdctx = NULL;
    dst->pctx_owned = 0;
    if (src->agent) { /* the digest and the parameters' context, apart */
        if (src->mdctx != NULL &&
            ((dst->mdctx = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(dst->mdctx, src->mdctx)))
            goto err;
        if (src->pctx != NULL && (dst->pctx = EVP_PKEY_CTX_dup(src->pctx)) == NULL)
            goto err;
        dst->pctx_owned = dst->pctx != NULL;
    } else if (src->mdctx != NULL) {
        if ((dst->mdctx = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(dst->mdctx, src->mdctx))
            goto err;
        dst->pctx = EVP_MD_CTX_get_pkey_ctx(dst->mdctx);
    } else if (src->pctx != NULL) {
        if ((dst->pctx = EVP_PKEY_CTX_dup(src->pctx)) == NULL)
            goto err;
        dst->pctx_owned = 1;
    }
    return dst;
err:
    kg_sig_freectx(dst);
    KG_PROV_ERROR(src->provctx, KG_R_OPERATION, "keygate %s signature: cannot duplicate the context",
                  src->alg);
    return NULL;
}

/* The key a direction needs: the released private key to sign, the public key to verify. A new
 * reference either way (a lease may wipe the private key while we sign): free with EVP_PKEY_free.
 * tag != NULL (sign only): *prep gets the key's prepared context of that tag, if published. */
static EVP_PKEY *sig_key(kg_sig_ctx *ctx, void *keydata, int sign, const char *tag, kg_lease_prep **prep)
{
    kg_key *key = kg_key_cast(keydata, 0);
    EVP_PKEY *pub;

    if (key == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: not a keygate key", ctx->alg);
        return NULL;
    }
    ctx->key = key;
    if (sign && tag != NULL)
        return kg_key_private_prep(key, tag, prep); /* raises the release's error itself */
    if (sign)
        return kg_key_private(key);
    if ((pub = key->ref.pubkey) == NULL || !EVP_PKEY_up_ref(pub)) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: the key has no public key",
                      ctx->alg);
        return NULL;
    }
    return pub;
}

static void prep_free_md(void *obj)
{
    EVP_MD_CTX_free(obj);
}

static void prep_free_pkey_ctx(void *obj)
{
    EVP_PKEY_CTX_free(obj);
}

/* Offers obj (a copy of a freshly initialised context, owned) as the key's prepared context of tag.
 * Best effort: unpublished (out of memory, the key refreshed meanwhile, the tag taken by a
 * racing operation), it is freed, and a later operation prepares again. */
static void prep_offer(kg_sig_ctx *ctx, EVP_PKEY *pk, const char *tag, void *obj, void (*free_obj)(void *))
{
    kg_lease_prep *prep;

    if (obj == NULL)
        return;
    if ((prep = kg_lease_prep_new(tag, obj, free_obj)) == NULL) {
        free_obj(obj);
        return;
    }
    kg_key_prep_publish(ctx->key, pk, prep);
    kg_lease_prep_free(prep); /* the lease's reference, if published, keeps it */
}

static int no_params(const OSSL_PARAM params[])
{
    return params == NULL || params[0].key == NULL;
}

/* ---- backend = agent ---- */

/* Sign init in agent mode: no private key here. A verify context on the reference's public key
 * takes and answers the parameters (padding, PSS salt length, MGF1 digest, algorithm id) as
 * OpenSSL's own implementation does; mdname != NULL (digest sign): mdctx hashes locally. */
static int agent_init(kg_sig_ctx *ctx, void *keydata, const char *mdname, int digest,
                      const OSSL_PARAM params[])
{
    kg_key *key = kg_key_cast(keydata, 0);
    EVP_MD *md = NULL;

    sig_reset(ctx);
    if (key == NULL || key->ref.pubkey == NULL || !key->has_ref) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: not a keygate key reference",
                      ctx->alg);
        return 0;
    }
    ctx->key = key;
    ctx->agent = 1;
    ctx->pctx_owned = 1;
    if ((ctx->pctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), key->ref.pubkey, NULL)) == NULL ||
        EVP_PKEY_verify_init_ex(ctx->pctx, NULL) <= 0)
        goto err;
    if (digest) {
        /* RSA and ECDSA keys' default digest, as EVP_DigestSignInit picks without one */
        if ((md = EVP_MD_fetch(kg_libctx(), mdname != NULL && *mdname ? mdname : "SHA256", NULL)) == NULL ||
            (ctx->mdctx = EVP_MD_CTX_new()) == NULL || !EVP_DigestInit_ex2(ctx->mdctx, md, NULL) ||
            EVP_PKEY_CTX_set_signature_md(ctx->pctx, md) <= 0)
            goto err;
        EVP_MD_free(md);
        md = NULL;
    }
    if (!no_params(params) && EVP_PKEY_CTX_set_params(ctx->pctx, params) <= 0)
        goto err;
    return 1;
err:
    EVP_MD_free(md);
    sig_reset(ctx);
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: %ssign init failed (%s)", ctx->alg,
                  digest ? "digest " : "", mdname != NULL ? mdname : "default digest");
    return 0;
}

/* OpenSSL's PSS salt length (sign side) as the protocol's; 1 when it has one. */
static int agent_salt(int saltlen, int32_t *out)
{
    switch (saltlen) {
    case RSA_PSS_SALTLEN_DIGEST: *out = KG_AGENT_SALT_DIGEST; return 1;
    case RSA_PSS_SALTLEN_AUTO: /* signing: the maximum */
    case RSA_PSS_SALTLEN_MAX: *out = KG_AGENT_SALT_MAX; return 1;
#ifdef RSA_PSS_SALTLEN_AUTO_DIGEST_MAX
    case RSA_PSS_SALTLEN_AUTO_DIGEST_MAX: *out = KG_AGENT_SALT_DIGEST_MAX; return 1;
#endif
    default:
        if (saltlen < 0 || saltlen > KG_AGENT_MAX_SALT)
            return 0;
        *out = saltlen;
        return 1;
    }
}

/* The agent signs tbs (a digest; with RSA PKCS#1 and no digest, the bytes to pad) with the
 * scheme the context's parameters say. md: the digest sign's digest, NULL for a raw sign. */
static int agent_sign(kg_sig_ctx *ctx, const EVP_MD *md, unsigned char *sig, size_t *siglen, size_t sigsize,
                      const unsigned char *tbs, size_t tbslen)
{
    kg_agent_req req;
    char mdname[64] = "", mgf1[64] = "";
    int pad = 0, saltlen = 0;
    OSSL_PARAM params[] = {OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &pad),
                           OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, mdname, sizeof(mdname)),
                           OSSL_PARAM_END};

    if (sig == NULL) { /* the size: a DER ECDSA signature's maximum, or the modulus */
        *siglen = (size_t)EVP_PKEY_get_size(ctx->key->ref.pubkey);
        return 1;
    }
    memset(&req, 0, sizeof(req));
    req.op = KG_AGENT_OP_SIGN;
    req.data = tbs;
    req.data_len = tbslen;
    if (strcmp(ctx->alg, "ECDSA") == 0) {
        req.scheme = KG_AGENT_SCHEME_ECDSA;
    } else {
        if (EVP_PKEY_CTX_get_params(ctx->pctx, params) <= 0)
            goto unsupported;
        req.digest = md != NULL  ? kg_agent_digest_of(md)
                     : mdname[0] ? kg_agent_digest_named(mdname)
                                 : KG_AGENT_DIGEST_NONE;
        if (req.digest == 0)
            goto unsupported;
        if (pad == RSA_PKCS1_PADDING) {
            req.scheme = KG_AGENT_SCHEME_RSA_PKCS1;
        } else if (pad == RSA_PKCS1_PSS_PADDING && req.digest != KG_AGENT_DIGEST_NONE) {
            OSSL_PARAM pss[] = {OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, mgf1, sizeof(mgf1)),
                                OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &saltlen), OSSL_PARAM_END};
            req.scheme = KG_AGENT_SCHEME_RSA_PSS;
            if (EVP_PKEY_CTX_get_params(ctx->pctx, pss) <= 0 || !agent_salt(saltlen, &req.salt_len))
                goto unsupported;
            req.mgf1_digest = mgf1[0] ? kg_agent_digest_named(mgf1) : req.digest;
            if (req.mgf1_digest == 0)
                goto unsupported;
        } else {
            goto unsupported;
        }
    }
    return kg_key_agent_call(ctx->key, &req, sig, sigsize, siglen); /* raises the failure */
unsupported:
    KG_PROV_ERROR(ctx->provctx, KG_R_NOT_AVAILABLE,
                  "keygate %s signature: backend = agent signs ECDSA, RSA PKCS#1 v1.5 and PSS with SHA-1 "
                  "or SHA-2 only (padding %d, digest %s, MGF1 %s, salt length %d)",
                  ctx->alg, pad,
                  mdname[0]    ? mdname
                  : md != NULL ? EVP_MD_get0_name(md)
                               : "none",
                  mgf1[0] ? mgf1 : "default", saltlen);
    return 0;
}

static int raw_init(kg_sig_ctx *ctx, void *keydata, const OSSL_PARAM params[], int sign)
{
    const char *tag = sign && no_params(params) ? "raw" : NULL;
    kg_lease_prep *prep = NULL;
    EVP_PKEY *pk;

    if (sign && ctx->provctx->agent != NULL)
        return agent_init(ctx, keydata, NULL, 0, params);
    sig_reset(ctx);
    if ((pk = sig_key(ctx, keydata, sign, tag, &prep)) == NULL)
        return 0;
    if (prep != NULL) { /* EVP_PKEY_CTX_dup: the implementation's dupctx, no fetch, no init */
        ctx->pctx = EVP_PKEY_CTX_dup(kg_lease_prep_obj(prep));
        kg_lease_prep_free(prep);
        EVP_PKEY_free(pk);
        if (ctx->pctx == NULL)
            goto err;
        ctx->pctx_owned = 1;
        return 1;
    }
    ctx->pctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), pk, NULL); /* holds its own reference */
    if (ctx->pctx == NULL)
        goto err_key;
    ctx->pctx_owned = 1;
    if ((sign ? EVP_PKEY_sign_init_ex(ctx->pctx, params) : EVP_PKEY_verify_init_ex(ctx->pctx, params)) <= 0)
        goto err_key;
    if (tag != NULL)
        prep_offer(ctx, pk, tag, EVP_PKEY_CTX_dup(ctx->pctx), prep_free_pkey_ctx);
    EVP_PKEY_free(pk);
    return 1;
err_key:
    EVP_PKEY_free(pk);
err:
    sig_reset(ctx);
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: %s init failed", ctx->alg,
                  sign ? "sign" : "verify");
    return 0;
}

static int kg_sig_sign_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
    return raw_init(vctx, keydata, params, 1);
}

static int kg_sig_verify_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
    return raw_init(vctx, keydata, params, 0);
}

/* A signature that does not verify is an answer, not an error: only the rest raises. */
static int not_ready(const kg_sig_ctx *ctx)
{
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: not initialised", ctx->alg);
    return 0;
}

static int kg_sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                       const unsigned char *tbs, size_t tbslen)
{
    kg_sig_ctx *ctx = vctx;

    if (ctx->pctx == NULL)
        return not_ready(ctx);
    if (ctx->agent)
        return agent_sign(ctx, NULL, sig, siglen, sigsize, tbs, tbslen);
    *siglen = sigsize;
    if (EVP_PKEY_sign(ctx->pctx, sig, siglen, tbs, tbslen) > 0)
        return 1;
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: signing failed", ctx->alg);
    return 0;
}

static int kg_sig_verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                         size_t tbslen)
{
    kg_sig_ctx *ctx = vctx;

    if (ctx->pctx == NULL)
        return not_ready(ctx);
    return EVP_PKEY_verify(ctx->pctx, sig, siglen, tbs, tbslen) > 0;
}

static int digest_init(kg_sig_ctx *ctx, const char *mdname, void *keydata, const OSSL_PARAM params[],
                       int sign)
{
    char tag[KG_LEASE_PREP_TAG];
    int prepare = sign && no_params(params) &&
                  (size_t)snprintf(tag, sizeof(tag), "md:%s", mdname != NULL ? mdname : "") < sizeof(tag);
    kg_lease_prep *prep = NULL;
    EVP_PKEY *pk;
    EVP_MD_CTX *copy = NULL;
    int ok, prepared;

    if (sign && ctx->provctx->agent != NULL)
        return agent_init(ctx, keydata, mdname, 1, params);
    sig_reset(ctx);
    if ((pk = sig_key(ctx, keydata, sign, prepare ? tag : NULL, &prep)) == NULL)
        return 0;
    if ((ctx->mdctx = EVP_MD_CTX_new()) == NULL)
        ok = 0;
    else if (prep != NULL) /* a copy of the prepared context: its flags too */
        ok = EVP_MD_CTX_copy_ex(ctx->mdctx, kg_lease_prep_obj(prep));
    else
        ok = (sign ? EVP_DigestSignInit_ex(ctx->mdctx, NULL, mdname, kg_libctx(), NULL, pk, params)
                   : EVP_DigestVerifyInit_ex(ctx->mdctx, NULL, mdname, kg_libctx(), NULL, pk, params)) > 0;
    prepared = prep != NULL;
    kg_lease_prep_free(prep);
    if (!ok) {
        EVP_PKEY_free(pk);
        sig_reset(ctx);
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: digest %s init failed (%s)",
                      ctx->alg, sign ? "sign" : "verify", mdname != NULL ? mdname : "default digest");
        return 0;
    }
    ctx->pctx = EVP_MD_CTX_get_pkey_ctx(ctx->mdctx); /* owned by mdctx */
    if (sign && !prepared) {
        /* libcrypto calls our final on a copy of the outer context (or once, when the
         * application set FINALISE on it): the inner final needs no copy of its own */
        EVP_MD_CTX_set_flags(ctx->mdctx, EVP_MD_CTX_FLAG_FINALISE);
        if (prepare && (copy = EVP_MD_CTX_new()) != NULL && !EVP_MD_CTX_copy_ex(copy, ctx->mdctx)) {
            EVP_MD_CTX_free(copy);
            copy = NULL;
        }
        if (copy != NULL)
            prep_offer(ctx, pk, tag, copy, prep_free_md);
    }
    EVP_PKEY_free(pk); /* the inner context holds its own reference */
    return 1;
}

static int kg_sig_digest_sign_init(void *vctx, const char *mdname, void *keydata, const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, keydata, params, 1);
}

static int kg_sig_digest_verify_init(void *vctx, const char *mdname, void *keydata, const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, keydata, params, 0);
}

static int kg_sig_digest_update(void *vctx, const unsigned char *data, size_t datalen)
{
    kg_sig_ctx *ctx = vctx;

    if (ctx->mdctx == NULL || ctx->spent)
        return not_ready(ctx);
    /* EVP_DigestSignUpdate and EVP_DigestVerifyUpdate are the same digest update */
    return EVP_DigestUpdate(ctx->mdctx, data, datalen) > 0;
}

/* Agent mode: the digest of what was hashed so far (on a copy: libcrypto may go on), signed by
 * the agent. */
static int agent_digest_sign_final(kg_sig_ctx *ctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *copy;
    int ok;

    if (sig == NULL)
        return agent_sign(ctx, NULL, NULL, siglen, sigsize, NULL, 0);
    if ((copy = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(copy, ctx->mdctx) ||
        !EVP_DigestFinal_ex(copy, dgst, &dlen)) {
        EVP_MD_CTX_free(copy);
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: digest failed", ctx->alg);
        return 0;
    }
    EVP_MD_CTX_free(copy);
    ok = agent_sign(ctx, EVP_MD_CTX_get0_md(ctx->mdctx), sig, siglen, sigsize, dgst, dlen);
    ctx->spent = ok;
    return ok;
}

static int kg_sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    kg_sig_ctx *ctx = vctx;

    if (ctx->mdctx == NULL || ctx->spent)
        return not_ready(ctx);
    if (ctx->agent)
        return agent_digest_sign_final(ctx, sig, siglen, sigsize);
    *siglen = sigsize;
    /* with a buffer, the inner final ends the inner context (FINALISE): libcrypto calls this on
     * a copy of ours, or once when the application set FINALISE on its own context */
    if (EVP_DigestSignFinal(ctx->mdctx, sig, siglen) > 0) {
        ctx->spent = sig != NULL;
        return 1;
    }
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate %s signature: signing failed", ctx->alg);
    return 0;
}

static int kg_sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    kg_sig_ctx *ctx = vctx;

    if (ctx->mdctx == NULL)
        return not_ready(ctx);
    return EVP_DigestVerifyFinal(ctx->mdctx, sig, siglen) > 0;
}

static int kg_sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    kg_sig_ctx *ctx = vctx;
    return ctx->pctx != NULL && EVP_PKEY_CTX_get_params(ctx->pctx, params) > 0;
}

static int kg_sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    kg_sig_ctx *ctx = vctx;
    if (params == NULL || params[0].key == NULL)
        return 1;
    return ctx->pctx != NULL && EVP_PKEY_CTX_set_params(ctx->pctx, params) > 0;
}

/* The parameter lists are those of OpenSSL's own implementation, fetched once. */
static pthread_once_t sig_once = PTHREAD_ONCE_INIT;
static EVP_SIGNATURE *inner_rsa, *inner_ecdsa;

static void sig_fetch(void)
{
    inner_rsa = EVP_SIGNATURE_fetch(kg_libctx(), "RSA", NULL);
    inner_ecdsa = EVP_SIGNATURE_fetch(kg_libctx(), "ECDSA", NULL);
}

void kg_signature_cleanup(void)
{
    EVP_SIGNATURE_free(inner_rsa);
    EVP_SIGNATURE_free(inner_ecdsa);
    inner_rsa = inner_ecdsa = NULL;
    sig_once = (pthread_once_t)PTHREAD_ONCE_INIT;
}

static const OSSL_PARAM *kg_rsa_sig_gettable(void *vctx, void *provctx)
{
    pthread_once(&sig_once, sig_fetch);
    return inner_rsa ? EVP_SIGNATURE_gettable_ctx_params(inner_rsa) : NULL;
}

static const OSSL_PARAM *kg_rsa_sig_settable(void *vctx, void *provctx)
{
    pthread_once(&sig_once, sig_fetch);
    return inner_rsa ? EVP_SIGNATURE_settable_ctx_params(inner_rsa) : NULL;
}

static const OSSL_PARAM *kg_ecdsa_sig_gettable(void *vctx, void *provctx)
{
    pthread_once(&sig_once, sig_fetch);
    return inner_ecdsa ? EVP_SIGNATURE_gettable_ctx_params(inner_ecdsa) : NULL;
}

static const OSSL_PARAM *kg_ecdsa_sig_settable(void *vctx, void *provctx)
{
    pthread_once(&sig_once, sig_fetch);
    return inner_ecdsa ? EVP_SIGNATURE_settable_ctx_params(inner_ecdsa) : NULL;
}

#define KG_SIGNATURE_COMMON                                                                                  \
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))kg_sig_freectx},                                           \
        {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))kg_sig_dupctx},                                         \
        {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))kg_sig_sign_init},                                   \
        {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))kg_sig_sign},                                             \
        {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))kg_sig_verify_init},                               \
        {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))kg_sig_verify},                                         \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))kg_sig_digest_sign_init},                     \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))kg_sig_digest_update},                      \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))kg_sig_digest_sign_final},                   \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))kg_sig_digest_verify_init},                 \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))kg_sig_digest_update},                    \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))kg_sig_digest_verify_final},               \
        {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))kg_sig_get_ctx_params},                         \
    {                                                                                                        \
        OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))kg_sig_set_ctx_params                            \
    }

const OSSL_DISPATCH kg_rsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))kg_rsa_sig_newctx},
    KG_SIGNATURE_COMMON,
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))kg_rsa_sig_gettable},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))kg_rsa_sig_settable},
    {0, NULL}};

const OSSL_DISPATCH kg_ecdsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))kg_ecdsa_sig_newctx},
    KG_SIGNATURE_COMMON,
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))kg_ecdsa_sig_gettable},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))kg_ecdsa_sig_settable},
    {0, NULL}};
