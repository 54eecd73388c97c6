/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ITA token signature verification: our own JWS code on OpenSSL EVP (no JWT library).
 *
 *  1. alg allow-list before any crypto: PS384 (RSA-PSS, SHA-384, MGF1-SHA-384, salt 48) and,
 *     if allowed, RS256. HMAC, "none" and everything else are refused. jku is ignored.
 *  2. JWKS from {base_url}/certs (or a file), cached in memory with a TTL; the entry is chosen
 *     by (kid, alg) together; kty RSA; x5c of at most 10 certificates.
 *  3. JWK n/e must equal the x5c leaf's public key.
 *  4. Chain leaf -> intermediates -> a root from the PINNED trust anchor file, built with an
 *     X509_STORE (never a root from the JWKS), validity dates at the verification time.
 *  5. CRLs for the leaf and the intermediate(s) from their CRL distribution points (no API
 *     key ever sent), signature and nextUpdate checked, cached until nextUpdate; when a CRL
 *     cannot be had, crl_policy decides (require: fail; if-available: go on, logged).
 *  6. The JWS signature over "<header>.<payload>" with the leaf key.
 * With a cache_dir, the JWKS and CRLs are also kept on disk for other processes; what is read
 * back goes through steps 2-5 like a download, and a JWKS copy from disk that fails any step is
 * replaced by a download (never trusted).
 * Everything runs in kg_libctx(), never in the application's default context.
 *
 * An ita_verifier is thread-safe (an internal lock guards its caches).
 */
#ifndef KG_ITA_VERIFY_H
#define KG_ITA_VERIFY_H

#include <cjson/cJSON.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <time.h>

#include "kg_err.h"
#include "kg_http.h"

typedef enum ita_crl_policy { ITA_CRL_REQUIRE = 0, ITA_CRL_IF_AVAILABLE = 1 } ita_crl_policy;

typedef struct ita_verifier_opts {
    const char *base_url;          /* JWKS at {base_url}/certs; may be NULL when jwks_file is set */
    const char *jwks_file;         /* optional: read the JWKS from this file instead (offline) */
    const char *trust_anchor_file; /* required: PEM root certificate(s) pinned for the chain */
    ita_crl_policy crl_policy;
    const char *const *crl_files; /* optional NULL-terminated list of DER/PEM CRLs preloaded
                                     into the cache (offline verification, tests) */
    int allow_rs256;              /* PS384 is always allowed; RS256 only when set */
    long jwks_ttl_s;              /* 0 = default 3600 */
    kg_http_opts http;            /* for /certs and CRL downloads */
    int offline;                  /* never download CRLs: only crl_files count (crl_policy still
                                     decides what a missing CRL means) */
    const char *cache_dir;        /* optional: the disk cache of JWKS and CRLs shared by processes
                                     (ita_cache.h); NULL or "" for none. Unusable: not used. */
} ita_verifier_opts;

typedef struct ita_verifier ita_verifier;

/* Returns a verifier (caller frees with ita_verifier_free) or NULL with err (step verify or
 * config). Reads the trust anchor and the optional files; does no network I/O. */
ita_verifier *ita_verifier_new(const ita_verifier_opts *opts, kg_err *err);
void ita_verifier_free(ita_verifier *v);

/*
 * Verifies the token's signature and certificate chain (steps 1-6 above) at time `at`
 * (0 = now; the chain validity and CRL nextUpdate are judged at that time too).
 * On success returns 1 and sets *payload to the parsed claims (caller frees with cJSON_Delete)
 * and, when not NULL, copies the header alg into alg (>= 8 bytes). Claims such as exp, iss
 * and the binding are NOT checked here (ita_claims.h). On failure returns 0 with err naming
 * the failed check (step verify), e.g. "verify: alg 'HS256' is not allowed".
 */
int ita_verify_signature(ita_verifier *v, const char *token, time_t at, cJSON **payload, char *alg,
                         kg_err *err);

/* The JWKS as fetched (or read), malloc'ed NUL-terminated JSON text; caller frees. */
int ita_verifier_get_jwks(ita_verifier *v, char **jwks_json, kg_err *err);

/* ---- internal: the certificate and CRL checks on untrusted bytes (fuzzed by tests/fuzz) ---- */

#define ITA_CDP_URL_MAX 512

/* Why crl cannot decide about cert (issued by issuer) at time at, or NULL when it can: issuer
 * name, cRLSign, signature, thisUpdate/nextUpdate, critical extensions, IDP scope. */
const char *ita_crl_problem(X509_CRL *crl, X509 *cert, X509 *issuer, time_t at);

/* The fullName URIs (printable, shorter than ITA_CDP_URL_MAX) of cert's CRL distribution points,
 * at most max; returns how many. */
int ita_cdp_uris(X509 *cert, char uris[][ITA_CDP_URL_MAX], int max);

#endif
