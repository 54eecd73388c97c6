/* SPDX-License-Identifier: Apache-2.0 */
#include "ita_verify.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ita_cache.h"
#include "ita_jwks.h"
#include "kg_jws.h"
#include "kg_libctx.h"
#include "kg_log.h"

#define JWKS_DEFAULT_TTL_S 3600
#define JWKS_MIN_REFRESH_S 60 /* a kid miss never refreshes more often than this */
#define CRL_CACHE_MAX 32
#define CDP_MAX_URIS 4
#define CDP_URL_MAX ITA_CDP_URL_MAX
#define LEAF_MIN_BITS 2048

typedef struct crl_slot {
    X509_NAME *issuer; /* NULL: free slot */
    char *url;         /* NULL: preloaded from crl_files, matched by issuer name alone */
    X509_CRL *crl;
    time_t stored;
} crl_slot;

struct ita_verifier {
    pthread_mutex_t lock; /* guards jwks* and crls */
    char *base_url;       /* without trailing '/'; NULL when the JWKS comes from a file */
    char *ca_file;
    kg_http_opts http;
    ita_crl_policy crl_policy;
    int allow_rs256;
    int offline;
    long jwks_ttl_s;
    X509_STORE *anchors; /* only the pinned roots; read-only after ita_verifier_new */
    char *jwks;          /* cached JWKS text */
    int jwks_from_file;
    int jwks_cached;   /* v->jwks was read from the disk cache, not downloaded by us */
    int jwks_disk_off; /* a JWKS from disk failed: this verifier does not read it again */
    char *cache_dir;   /* the disk cache (ita_cache.h), NULL when unused */
    time_t jwks_fetched, jwks_attempt;
    crl_slot crls[CRL_CACHE_MAX];
};

/* State of one ita_verify_signature call. */
typedef struct verify_call {
    ita_verifier *v;
    time_t at;     /* verification time, resolved */
    kg_http *http; /* created on the first download: kg_http is not thread-safe */
} verify_call;

/* ---- CRL cache (callers hold v->lock) --------------------------------------------------- */

static void crl_slot_clear(crl_slot *s)
{
    X509_NAME_free(s->issuer);
    free(s->url);
    X509_CRL_free(s->crl);
    memset(s, 0, sizeof(*s));
}

/* A slot for a new CRL: a free one, else an expired download, else the oldest download
 * (preloaded files are never evicted). */
static crl_slot *crl_free_slot(ita_verifier *v, time_t now)
{
    crl_slot *oldest = NULL;
    int i;

    for (i = 0; i < CRL_CACHE_MAX; i++)
        if (v->crls[i].issuer == NULL)
            return &v->crls[i];
    for (i = 0; i < CRL_CACHE_MAX; i++) {
        crl_slot *s = &v->crls[i];
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(s->crl);
        if (s->url == NULL)
            continue;
        if (next != NULL && X509_cmp_time(next, &now) < 0)
            return s;
        if (oldest == NULL || s->stored < oldest->stored)
            oldest = s;
    }
    return oldest;
}

/* Takes ownership of crl (url NULL: a preloaded file). Replaces an entry for the same
 * (issuer, url). Returns 0 (crl freed) when there is no room or memory. */
static int crl_cache_put(ita_verifier *v, X509_CRL *crl, const char *url)
{
    time_t now = time(NULL);
    crl_slot *slot;

    for (int i = 0; i < CRL_CACHE_MAX; i++) {
        crl_slot *s = &v->crls[i];
        if (s->issuer != NULL && s->url != NULL && url != NULL && strcmp(s->url, url) == 0 &&
            X509_NAME_cmp(s->issuer, X509_CRL_get_issuer(crl)) == 0)
            crl_slot_clear(s);
    }
    if ((slot = crl_free_slot(v, now)) == NULL) {
        X509_CRL_free(crl);
        return 0;
    }
    crl_slot_clear(slot);
    slot->issuer = X509_NAME_dup(X509_CRL_get_issuer(crl));
    slot->url = url != NULL ? strdup(url) : NULL;
    slot->crl = crl;
    slot->stored = now;
    if (slot->issuer == NULL || (url != NULL && slot->url == NULL)) {
        crl_slot_clear(slot);
        return 0;
    }
    return 1;
}

const char *ita_crl_problem(X509_CRL *crl, X509 *cert, X509 *issuer, time_t at)
{
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    ISSUING_DIST_POINT *idp;
    const char *why = NULL;
    int crit = -1;

    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) != 0)
        return "issued by another CA";
    if ((X509_get_key_usage(issuer) & KU_CRL_SIGN) == 0)
        return "the issuer's key usage lacks cRLSign";
    if (X509_CRL_verify(crl, X509_get0_pubkey(issuer)) != 1) {
        ERR_clear_error();
        return "signature does not verify with the issuer's key";
    }
    if (X509_cmp_time(X509_CRL_get0_lastUpdate(crl), &at) != -1)
        return "thisUpdate is after the verification time";
    if (next == NULL || X509_cmp_time(next, &at) != 1)
        return "stale (nextUpdate is not after the verification time)";
    for (int i = 0; i < X509_CRL_get_ext_count(crl); i++) {
        X509_EXTENSION *ext = X509_CRL_get_ext(crl, i);
        if (X509_EXTENSION_get_critical(ext) &&
            OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_issuing_distribution_point)
            return "unsupported critical extension (delta CRL?)";
    }
    idp = X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, NULL);
    if (idp == NULL)
        return crit == -1 ? NULL : "malformed issuingDistributionPoint";
    if (idp->indirectCRL || idp->onlysomereasons != NULL || idp->onlyattr > 0)
        why = "partial or indirect CRL (not supported)";
    else if ((idp->onlyCA > 0 && !X509_check_ca(cert)) || (idp->onlyuser > 0 && X509_check_ca(cert)))
        why = "the CRL's scope does not cover the certificate";
    ISSUING_DIST_POINT_free(idp);
    return why;
}

/* A cached CRL for (issuer, url) usable at c->at (up-ref'ed, caller frees), or NULL and, if a
 * candidate was rejected, *why. url NULL matches preloaded files only. */
static X509_CRL *crl_cache_get(verify_call *c, X509 *cert, X509 *issuer, const char *url, const char **why)
{
    ita_verifier *v = c->v;
    X509_CRL *found = NULL;

    pthread_mutex_lock(&v->lock);
    for (int i = 0; i < CRL_CACHE_MAX && found == NULL; i++) {
        crl_slot *s = &v->crls[i];
        if (s->issuer == NULL || X509_NAME_cmp(s->issuer, X509_get_issuer_name(cert)) != 0)
            continue;
        if (s->url != NULL && (url == NULL || strcmp(s->url, url) != 0))
            continue;
        if ((*why = ita_crl_problem(s->crl, cert, issuer, c->at)) == NULL && X509_CRL_up_ref(s->crl))
            found = s->crl;
    }
    pthread_mutex_unlock(&v->lock);
    return found;
}

/* ---- CRL download ----------------------------------------------------------------------- */

int ita_cdp_uris(X509 *cert, char uris[][ITA_CDP_URL_MAX], int max)
{
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    int count = 0;

    for (int i = 0; i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        /* partitioned (reasons) and indirect (CRLissuer) points are not what we can check */
        if (dp->distpoint == NULL || dp->distpoint->type != 0 || dp->reasons != NULL || dp->CRLissuer != NULL)
            continue;
        for (int j = 0; j < sk_GENERAL_NAME_num(dp->distpoint->name.fullname) && count < max; j++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(dp->distpoint->name.fullname, j);
            const unsigned char *s;
            int len, printable = 1;

            if (gn->type != GEN_URI)
                continue;
            s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
            len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
            for (int k = 0; k < len; k++)
                printable &= s[k] > 0x20 && s[k] < 0x7f;
            if (len <= 0 || len >= CDP_URL_MAX || !printable)
                continue;
            memcpy(uris[count], s, (size_t)len);
            uris[count++][len] = '\0';
        }
    }
    CRL_DIST_POINTS_free(dps);
    ERR_clear_error();
    return count;
}

/* Downloads and checks the CRL at url. Returns the CRL (caller frees) or NULL with the cause. */
static X509_CRL *crl_download(verify_call *c, X509 *cert, X509 *issuer, const char *url, char *cause,
                              size_t cause_size)
{
    static const char *const headers[] = {"Accept: application/pkix-crl", NULL}; /* never an API key */
    kg_http_response resp;
    X509_CRL *crl = NULL;
    const char *why;
    kg_err e;

    memset(&resp, 0, sizeof(resp));
    kg_err_clear(&e);
    if ((c->http == NULL && (c->http = kg_http_new(&c->v->http, &e)) == NULL) ||
        !kg_http_request(c->http, KG_STEP_VERIFY, "GET", url, headers, NULL, 0, ITA_CRL_MAX_LEN, &resp, &e)) {
        const char *m = strstr(e.msg, ": "); /* "<step>: <cause>": keep the cause */
        snprintf(cause, cause_size, "%.200s", m != NULL ? m + 2 : e.msg); /* bounded: the url is added too */
        goto err;
    }
    if (resp.status != 200) {
        snprintf(cause, cause_size, "HTTP %ld", resp.status);
        goto err;
    }
    if ((crl = ita_crl_from_bytes(resp.body, resp.body_len)) == NULL) {
        snprintf(cause, cause_size, "not a DER or PEM CRL");
        goto err;
    }
    if ((why = ita_crl_problem(crl, cert, issuer, c->at)) != NULL) {
        snprintf(cause, cause_size, "%s", why);
        X509_CRL_free(crl);
        crl = NULL;
    }
err:
    kg_http_response_clear(&resp);
    return crl;
}

/* The CRL for url from the disk cache, checked exactly as a download is (ita_crl_problem) and
 * then kept in memory too; NULL when there is none that passes (caller frees). */
static X509_CRL *crl_from_disk(verify_call *c, X509 *cert, X509 *issuer, const char *url)
{
    X509_CRL *crl = ita_cache_get_crl(c->v->cache_dir, url);
    const char *why;

    if (crl == NULL)
        return NULL;
    if ((why = ita_crl_problem(crl, cert, issuer, c->at)) != NULL || !X509_CRL_up_ref(crl)) {
        KG_DEBUG("verification cache: CRL entry for %s ignored: %s", url, why != NULL ? why : "no memory");
        X509_CRL_free(crl);
        return NULL;
    }
    pthread_mutex_lock(&c->v->lock);
    if (!crl_cache_put(c->v, crl, url))
        KG_DEBUG("CRL %s not cached", url);
    pthread_mutex_unlock(&c->v->lock);
    return crl;
}

/*
 * The CRL deciding about cert (issued by issuer): from the memory cache, the preloaded files, the
 * disk cache or the CDPs. Returns 1 with *out (caller frees; NULL when crl_policy lets us go on without), or
 * 0.
 */
static int crl_for(verify_call *c, X509 *cert, X509 *issuer, const char *which, X509_CRL **out, kg_err *err)
{
    char uris[CDP_MAX_URIS][CDP_URL_MAX], cause[256];
    int n = ita_cdp_uris(cert, uris, CDP_MAX_URIS), require = c->v->crl_policy == ITA_CRL_REQUIRE;
    const char *why = NULL, *preload_why = NULL;

    *out = NULL;
    for (int i = 0; i < n && *out == NULL; i++)
        *out = crl_cache_get(c, cert, issuer, uris[i], &why);
    if (*out == NULL)
        *out = crl_cache_get(c, cert, issuer, NULL, &preload_why);
    if (*out != NULL)
        return 1;
    if (n == 0) {
        if (require)
            return kg_err_set(err, KG_STEP_VERIFY,
                              "%s certificate has no CRL distribution point and no CRL was preloaded "
                              "(crl_policy = require)",
                              which);
        KG_WARN("%s certificate has no CRL distribution point: revocation not checked (crl_policy = "
                "if-available)",
                which);
        return 1;
    }
    for (int i = 0; i < n && !c->v->offline && c->v->cache_dir != NULL && *out == NULL; i++)
        *out = crl_from_disk(c, cert, issuer, uris[i]);
    if (*out != NULL)
        return 1;
    if (preload_why != NULL)
        snprintf(cause, sizeof(cause), "the preloaded CRL is unusable: %s", preload_why);
    else
        snprintf(cause, sizeof(cause), "not preloaded and downloads are off (offline)");
    for (int i = 0; i < n && !c->v->offline && *out == NULL; i++) {
        X509_CRL *dup;
        if ((*out = crl_download(c, cert, issuer, uris[i], cause, sizeof(cause))) == NULL)
            continue;
        if (c->v->cache_dir != NULL)
            ita_cache_put_crl(c->v->cache_dir, uris[i], *out);
        /* the cache keeps its own reference until nextUpdate */
        dup = X509_CRL_up_ref(*out) ? *out : NULL;
        pthread_mutex_lock(&c->v->lock);
        if (dup != NULL && !crl_cache_put(c->v, dup, uris[i]))
            KG_DEBUG("CRL %s not cached", uris[i]);
        pthread_mutex_unlock(&c->v->lock);
    }
    if (*out != NULL)
        return 1;
    if (require)
        return kg_err_set(err, KG_STEP_VERIFY, "CRL %s unavailable: %s (crl_policy = require)", uris[0],
                          cause);
    KG_WARN("CRL %s unavailable: %s; %s certificate revocation not checked (crl_policy = if-available)",
            uris[0], cause, which);
    return 1;
}

/* Revocation of every certificate of the built chain except the trust anchor (its end). */
static int check_revocation(verify_call *c, STACK_OF(X509) * chain, kg_err *err)
{
    for (int i = 0; i + 1 < sk_X509_num(chain); i++) {
        X509 *cert = sk_X509_value(chain, i), *issuer = sk_X509_value(chain, i + 1);
        const char *which = i == 0 ? "leaf" : "intermediate";
        X509_REVOKED *rev = NULL;
        X509_CRL *crl;
        int revoked;

        if (!crl_for(c, cert, issuer, which, &crl, err))
            return 0;
        revoked = crl != NULL && X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(cert)) == 1;
        X509_CRL_free(crl);
        if (revoked)
            return kg_err_set(err, KG_STEP_VERIFY, "%s certificate revoked", which);
    }
    return 1;
}

/* ---- JWKS ------------------------------------------------------------------------------- */

/* {base_url}/certs into url (1024 bytes); 0 when it does not fit. */
static int jwks_url(const ita_verifier *v, char *url)
{
    return (size_t)snprintf(url, 1024, "%s/certs", v->base_url) < 1024;
}

static int jwks_download(verify_call *c, char **text, kg_err *err)
{
    static const char *const headers[] = {"Accept: application/json", NULL}; /* never an API key */
    kg_http_response resp;
    char url[1024];
    int ok = 0;

    memset(&resp, 0, sizeof(resp));
    *text = NULL;
    if (!jwks_url(c->v, url)) {
        kg_err_set(err, KG_STEP_CONFIG, "base_url too long");
        goto err;
    }
    if (c->http == NULL && (c->http = kg_http_new(&c->v->http, err)) == NULL)
        goto err;
    if (!kg_http_request(c->http, KG_STEP_VERIFY, "GET", url, headers, NULL, 0, ITA_JWKS_MAX_LEN, &resp, err))
        goto err;
    if (resp.status != 200) {
        kg_http_status_error(err, KG_STEP_VERIFY, "JWKS", url, &resp);
        goto err;
    }
    if (!ita_jwks_check((const char *)resp.body, resp.body_len, err))
        goto err;
    *text = (char *)resp.body; /* NUL-terminated by kg_http */
    resp.body = NULL;
    ok = 1;
err:
    kg_http_response_clear(&resp);
    return ok;
}

/*
 * A copy of the JWKS (caller frees). Reads the disk cache or downloads when none is held or the TTL
 * has passed; with refresh set (a kid miss, a disk copy that failed), downloads again unless the
 * last attempt is under 60 s old. *fresh tells whether this call downloaded it, *cached whether
 * the copy came from the disk cache. A failed refresh falls back to the old copy.
 */
static int jwks_get(verify_call *c, int refresh, char **copy, int *fresh, int *cached, kg_err *err)
{
    ita_verifier *v = c->v;
    time_t now = time(NULL);
    char *text = NULL, url[1024];
    int fetch, ok = 0;
    kg_err e;

    kg_err_clear(&e);
    *copy = NULL;
    *fresh = 0;
    pthread_mutex_lock(&v->lock);
    /* only read, never trusted: ita_verify_signature checks the entry it uses like a download
     * (x5c chain to the pinned root, CRLs) and downloads again when that fails */
    if (v->jwks == NULL && !v->jwks_from_file && !v->jwks_disk_off && v->cache_dir != NULL &&
        jwks_url(v, url) &&
        (v->jwks = ita_cache_get_jwks(v->cache_dir, url, v->jwks_ttl_s, now, &v->jwks_fetched)) != NULL)
        v->jwks_cached = 1;
    if (v->jwks == NULL)
        fetch = 1;
    else if (v->jwks_from_file)
        fetch = 0;
    else if (refresh || now - v->jwks_fetched >= v->jwks_ttl_s)
        fetch = now - v->jwks_attempt >= JWKS_MIN_REFRESH_S;
    else
        fetch = 0;
    if (fetch)
        v->jwks_attempt = now;
    pthread_mutex_unlock(&v->lock);

    /* the download runs unlocked: other threads go on with the cached copy meanwhile */
    if (fetch && !jwks_download(c, &text, &e)) {
        pthread_mutex_lock(&v->lock);
        if (v->jwks != NULL) {
            KG_WARN("JWKS refresh failed (%s); using the cached JWKS", e.msg);
            fetch = 0;
        }
        pthread_mutex_unlock(&v->lock);
        if (fetch) {
            if (err != NULL)
                *err = e;
            return 0;
        }
    }
    pthread_mutex_lock(&v->lock);
    if (text != NULL) {
        free(v->jwks);
        v->jwks = text;
        v->jwks_fetched = now;
        v->jwks_cached = 0;
        *fresh = 1;
    }
    *cached = v->jwks_cached;
    if (v->jwks != NULL && (*copy = strdup(v->jwks)) != NULL)
        ok = 1;
    pthread_mutex_unlock(&v->lock);
    if (!ok)
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    return ok;
}

/* ---- token checks ----------------------------------------------------------------------- */

/* Header checks, alg first (before anything touches a key). *alg and *kid point into header. */
static int check_header(const ita_verifier *v, const cJSON *header, const char **alg, const char **kid,
                        kg_err *err)
{
    const cJSON *a, *k;

    if (!cJSON_IsObject(header))
        return kg_err_set(err, KG_STEP_VERIFY, "token header is not a JSON object");
    a = cJSON_GetObjectItemCaseSensitive(header, "alg");
    if (!cJSON_IsString(a))
        return kg_err_set(err, KG_STEP_VERIFY, "alg '%s' is not allowed",
                          a == NULL ? "(missing)" : "(not a string)");
    if (strcmp(a->valuestring, "PS384") != 0 && !(v->allow_rs256 && strcmp(a->valuestring, "RS256") == 0))
        return kg_err_set(err, KG_STEP_VERIFY, "alg '%.32s' is not allowed", a->valuestring);
    if (!kg_jws_header_rules(header, "token", err))
        return 0;
    k = cJSON_GetObjectItemCaseSensitive(header, "kid");
    if (!cJSON_IsString(k) || k->valuestring[0] == '\0')
        return kg_err_set(err, KG_STEP_VERIFY, "token header has no kid string");
    *alg = a->valuestring;
    *kid = k->valuestring;
    return 1;
}

/* The JWK n/e must be the x5c leaf's key, RSA of at least 2048 bits, allowed to sign, no CA. */
static int check_leaf_key(const ita_jwk *jwk, kg_err *err)
{
    X509 *leaf = sk_X509_value(jwk->x5c, 0);
    EVP_PKEY *leaf_key = X509_get0_pubkey(leaf);
    BIGNUM *n1 = NULL, *e1 = NULL, *n2 = NULL, *e2 = NULL;
    int ok = 0;

    if (leaf_key == NULL || !EVP_PKEY_is_a(leaf_key, "RSA")) {
        kg_err_set(err, KG_STEP_VERIFY, "x5c leaf key is not an RSA key");
        goto err;
    }
    if (!EVP_PKEY_get_bn_param(jwk->pkey, OSSL_PKEY_PARAM_RSA_N, &n1) ||
        !EVP_PKEY_get_bn_param(jwk->pkey, OSSL_PKEY_PARAM_RSA_E, &e1) ||
        !EVP_PKEY_get_bn_param(leaf_key, OSSL_PKEY_PARAM_RSA_N, &n2) ||
        !EVP_PKEY_get_bn_param(leaf_key, OSSL_PKEY_PARAM_RSA_E, &e2) || BN_cmp(n1, n2) != 0 ||
        BN_cmp(e1, e2) != 0) {
        kg_err_set(err, KG_STEP_VERIFY, "JWK n/e differ from the x5c leaf key");
        goto err;
    }
    if (EVP_PKEY_get_bits(jwk->pkey) < LEAF_MIN_BITS) {
        kg_err_set(err, KG_STEP_VERIFY, "leaf key has %d bits (at least %d required)",
                   EVP_PKEY_get_bits(jwk->pkey), LEAF_MIN_BITS);
        goto err;
    }
    if ((X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE) == 0) {
        kg_err_set(err, KG_STEP_VERIFY, "leaf certificate key usage lacks digitalSignature");
        goto err;
    }
    /* X509_verify_cert accepts a CA as end entity; a token signer that can issue certificates
     * is not what ITA publishes (its leaf is CA:FALSE) */
    if (X509_check_ca(leaf) != 0) {
        kg_err_set(err, KG_STEP_VERIFY,
                   "the token-signing leaf certificate is a CA (basicConstraints CA:TRUE or keyCertSign)");
        goto err;
    }
    ok = 1;
err:
    ERR_clear_error();
    BN_free(n1);
    BN_free(e1);
    BN_free(n2);
    BN_free(e2);
    return ok;
}

/* Builds leaf -> x5c[1..] -> a pinned root at c->at. Returns 1 and *chain (caller frees). */
static int verify_chain(verify_call *c, STACK_OF(X509) * x5c, STACK_OF(X509) * *chain, kg_err *err)
{
    X509_STORE_CTX *ctx = X509_STORE_CTX_new_ex(kg_libctx(), NULL);
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_VERIFY_PARAM *param;
    int ok = 0;

    *chain = NULL;
    if (ctx == NULL || untrusted == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    /* x5c[1..] may help build the path but can never be trusted: only the store's roots are */
    for (int i = 1; i < sk_X509_num(x5c); i++)
        if (!sk_X509_push(untrusted, sk_X509_value(x5c, i))) {
            kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
            goto err;
        }
    if (!X509_STORE_CTX_init(ctx, c->v->anchors, sk_X509_value(x5c, 0), untrusted)) {
        kg_err_set(err, KG_STEP_INTERNAL, "X509_STORE_CTX_init failed");
        goto err;
    }
    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(param, c->at);
    X509_VERIFY_PARAM_set_depth(param, ITA_JWKS_MAX_X5C);
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        kg_err_set(err, KG_STEP_VERIFY, "certificate chain to the pinned root: %s (depth %d)",
                   X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(ctx));
        goto err;
    }
    if ((*chain = X509_STORE_CTX_get1_chain(ctx)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    ok = 1;
err:
    ERR_clear_error();
    sk_X509_free(untrusted); /* shallow: the certificates belong to x5c */
    X509_STORE_CTX_free(ctx);
    return ok;
}

/* PS384: RSA-PSS SHA-384, MGF1 SHA-384, salt 48 exactly. RS256: PKCS#1 v1.5 SHA-256. */
static int verify_jws_signature(const char *alg, EVP_PKEY *pkey, const char *token, const kg_jws *jws,
                                kg_err *err)
{
    int ps = strcmp(alg, "PS384") == 0, ok = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;

    if (md == NULL ||
        EVP_DigestVerifyInit_ex(md, &pctx, ps ? "SHA384" : "SHA256", kg_libctx(), NULL, pkey, NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, ps ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) <= 0 ||
        (ps && (EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA384", NULL) <= 0 ||
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0))) {
        kg_err_set(err, KG_STEP_INTERNAL, "cannot set up %s verification", alg);
        kg_err_add_openssl(err);
        goto err;
    }
    if (EVP_DigestVerify(md, jws->signature, jws->signature_len, (const unsigned char *)token,
                         jws->signing_input_len) != 1) {
        kg_err_set(err, KG_STEP_VERIFY, "token signature does not verify (%s)", alg);
        goto err;
    }
    ok = 1;
err:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    return ok;
}

/* ---- public API ------------------------------------------------------------------------- */

ita_verifier *ita_verifier_new(const ita_verifier_opts *opts, kg_err *err)
{
    ita_verifier *v = calloc(1, sizeof(*v));
    char *buf = NULL;
    size_t len;
    int count = 0;

    if (v == NULL || pthread_mutex_init(&v->lock, NULL) != 0) {
        free(v);
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    if (kg_libctx() == NULL || (v->anchors = X509_STORE_new()) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "cannot create the OpenSSL objects");
        goto err;
    }
    if (opts->trust_anchor_file == NULL || opts->trust_anchor_file[0] == '\0') {
        kg_err_set(err, KG_STEP_CONFIG,
                   "no trust anchor file: tokens are only verified against a pinned root");
        goto err;
    }
    if ((opts->base_url == NULL || opts->base_url[0] == '\0') &&
        (opts->jwks_file == NULL || opts->jwks_file[0] == '\0')) {
        kg_err_set(err, KG_STEP_CONFIG, "neither a base URL nor a JWKS file is configured");
        goto err;
    }
    v->crl_policy = opts->crl_policy == ITA_CRL_IF_AVAILABLE ? ITA_CRL_IF_AVAILABLE : ITA_CRL_REQUIRE;
    v->allow_rs256 = opts->allow_rs256 != 0;
    v->offline = opts->offline != 0;
    v->jwks_ttl_s = opts->jwks_ttl_s > 0 ? opts->jwks_ttl_s : JWKS_DEFAULT_TTL_S;
    v->http = opts->http;
    if ((v->ca_file = strdup(opts->http.ca_file != NULL ? opts->http.ca_file : "")) == NULL ||
        (opts->base_url != NULL && (v->base_url = strdup(opts->base_url)) == NULL)) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    v->http.ca_file = v->ca_file;
    if (opts->cache_dir != NULL && opts->cache_dir[0] != '\0') {
        const char *why;
        /* checked once per verifier: an unusable directory means no disk cache, said once */
        if (!ita_cache_dir_ok(opts->cache_dir, &why))
            KG_DEBUG("verification cache %s not used: %s", opts->cache_dir, why);
        else if ((v->cache_dir = strdup(opts->cache_dir)) == NULL) {
            kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
            goto err;
        }
    }
    for (size_t n = v->base_url != NULL ? strlen(v->base_url) : 0; n > 0 && v->base_url[n - 1] == '/'; n--)
        v->base_url[n - 1] = '\0';
    if (!ita_load_anchors(v->anchors, opts->trust_anchor_file, err))
        goto err;
    if (opts->jwks_file != NULL && opts->jwks_file[0] != '\0') {
        if (!ita_read_file(opts->jwks_file, ITA_JWKS_MAX_LEN, &v->jwks, &len, err) ||
            !ita_jwks_check(v->jwks, len, err))
            goto err;
        v->jwks_from_file = 1;
    }
    for (const char *const *f = opts->crl_files; f != NULL && *f != NULL; f++, count++) {
        X509_CRL *crl;
        if (count >= CRL_CACHE_MAX / 2) {
            kg_err_set(err, KG_STEP_CONFIG, "more than %d CRL files", CRL_CACHE_MAX / 2);
            goto err;
        }
        if (!ita_read_file(*f, ITA_CRL_MAX_LEN, &buf, &len, err))
            goto err;
        if ((crl = ita_crl_from_bytes((const unsigned char *)buf, len)) == NULL) {
            kg_err_set(err, KG_STEP_CONFIG, "%s is not a DER or PEM CRL", *f);
            goto err;
        }
        free(buf);
        buf = NULL;
        if (!crl_cache_put(v, crl, NULL)) {
            kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
            goto err;
        }
    }
    return v;
err:
    free(buf);
    ita_verifier_free(v);
    return NULL;
}

void ita_verifier_free(ita_verifier *v)
{
    if (v == NULL)
        return;
    for (int i = 0; i < CRL_CACHE_MAX; i++)
        crl_slot_clear(&v->crls[i]);
    X509_STORE_free(v->anchors);
    free(v->jwks);
    free(v->base_url);
    free(v->ca_file);
    free(v->cache_dir);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

/* Steps 2-6 with the JWKS text jwks: the (kid, alg) entry, its leaf, chain, revocation and the
 * token's signature. *miss is set when the JWKS has no such entry. */
static int verify_with_jwks(verify_call *c, const char *jwks, const char *kid, const char *alg,
                            const char *token, const kg_jws *jws, int *miss, kg_err *err)
{
    STACK_OF(X509) *chain = NULL;
    ita_jwk jwk;
    int ok;

    ok = ita_jwks_select(jwks, kid, alg, &jwk, miss, err) && check_leaf_key(&jwk, err) &&
         verify_chain(c, jwk.x5c, &chain, err) && check_revocation(c, chain, err) &&
         verify_jws_signature(alg, jwk.pkey, token, jws, err);
    sk_X509_pop_free(chain, X509_free);
    ita_jwk_clear(&jwk);
    return ok;
}

int ita_verify_signature(ita_verifier *v, const char *token, time_t at, cJSON **payload, char *alg,
                         kg_err *err)
{
    verify_call c = {v, at != 0 ? at : time(NULL), NULL};
    kg_jws jws;
    cJSON *header = NULL, *claims = NULL;
    const char *h_alg = NULL, *kid = NULL;
    char *jwks = NULL, url[1024];
    int miss = 0, fresh = 0, cached = 0, ok = 0;

    memset(&jws, 0, sizeof(jws));
    if (payload != NULL)
        *payload = NULL;
    if (alg != NULL)
        alg[0] = '\0';
    if (v == NULL || token == NULL || payload == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "ita_verify_signature: NULL argument");
    if (!kg_jws_split(token, &jws, err))
        goto err;
    header = cJSON_Parse(jws.header_json);
    if (!check_header(v, header, &h_alg, &kid, err))
        goto err;
    if (!jwks_get(&c, 0, &jwks, &fresh, &cached, err))
        goto err;
    if (!verify_with_jwks(&c, jwks, kid, h_alg, token, &jws, &miss, err)) {
        /* a rotated key (kid miss), or a copy from the disk cache that fails any check: one
         * download per call at most, and only if we did not just download. A failing disk copy is
         * thus never the answer: the download decides, as in a process without the cache. */
        if (!(miss || cached) || fresh || v->jwks_from_file)
            goto err;
        free(jwks);
        jwks = NULL;
        /* a disk copy is dropped for good: the download that follows is not rate-limited and
         * cannot fall back to it, exactly as in a process without the cache */
        pthread_mutex_lock(&v->lock);
        if (v->jwks_cached) {
            free(v->jwks);
            v->jwks = NULL;
            v->jwks_cached = 0;
            v->jwks_disk_off = 1;
        }
        pthread_mutex_unlock(&v->lock);
        if (!jwks_get(&c, 1, &jwks, &fresh, &cached, err) || !fresh)
            goto err;
        kg_err_clear(err);
        if (!verify_with_jwks(&c, jwks, kid, h_alg, token, &jws, &miss, err))
            goto err;
    }
    if (fresh && v->cache_dir != NULL && jwks_url(v, url))
        ita_cache_put_jwks(v->cache_dir, url, jwks);
    /* the payload is parsed only once its signature is known good */
    claims = cJSON_Parse(jws.payload_json);
    if (!cJSON_IsObject(claims)) {
        kg_err_set(err, KG_STEP_VERIFY, "token payload is not a JSON object");
        goto err;
    }
    if (alg != NULL)
        snprintf(alg, 8, "%s", h_alg);
    *payload = claims;
    claims = NULL;
    ok = 1;
err:
    cJSON_Delete(claims);
    free(jwks);
    cJSON_Delete(header);
    kg_jws_clear(&jws);
    kg_http_free(c.http);
    return ok;
}

int ita_verifier_get_jwks(ita_verifier *v, char **jwks_json, kg_err *err)
{
    verify_call c = {v, time(NULL), NULL};
    int fresh, cached, ok;

    *jwks_json = NULL;
    ok = jwks_get(&c, 0, jwks_json, &fresh, &cached, err);
    kg_http_free(c.http);
    return ok;
}
