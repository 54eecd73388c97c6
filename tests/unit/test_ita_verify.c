/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ita_verify: real ITA tokens and JWKS (tests/vectors README §1), forgeries built from them,
 * a PKI generated here (revocation, CRL download and caching against a loopback HTTP server)
 * and malformed input. Offline: the only network peer is the server in this file.
 */
#define _GNU_SOURCE /* strcasestr */
#include "kg_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ita_verify.h"
#include "kg_b64.h"

#define VEC(name) KG_VECTORS_DIR "/" name

/* ---- small helpers ---------------------------------------------------------------------- */

static char tmpdir[256];
static char tmp_paths[64][320];
static int tmp_count;

/* Writes a file in the test's temporary directory; returns its path (static storage). */
static const char *write_tmp(const char *name, const void *data, size_t len)
{
    char *path = NULL;
    FILE *f;

    for (int i = 0; i < tmp_count && path == NULL; i++) /* rewriting a file reuses its slot */
        if (strcmp(strrchr(tmp_paths[i], '/') + 1, name) == 0)
            path = tmp_paths[i];
    if (path == NULL) {
        assert_true(tmp_count < 64);
        path = tmp_paths[tmp_count++];
        snprintf(path, sizeof(tmp_paths[0]), "%s/%s", tmpdir, name);
    }
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

static const char *write_tmp_str(const char *name, const char *text)
{
    return write_tmp(name, text, strlen(text));
}

static time_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    return timegm(&tm);
}

#define T_PROD utc(2023, 12, 5, 0, 10, 0)
#define T_DEV utc(2024, 6, 11, 4, 20, 0)
#define T_DEV2023 utc(2023, 12, 21, 5, 33, 0)

typedef struct vcfg {
    const char *jwks_file;
    const char *base_url;
    const char *anchor;
    ita_crl_policy policy;
    const char *const *crls;
    int offline;
    int rs256;
} vcfg;

static ita_verifier *make_verifier(const vcfg *c, kg_err *err)
{
    ita_verifier_opts o;

    memset(&o, 0, sizeof(o));
    o.jwks_file = c->jwks_file;
    o.base_url = c->base_url;
    o.trust_anchor_file = c->anchor;
    o.crl_policy = c->policy;
    o.crl_files = c->crls;
    o.offline = c->offline;
    o.allow_rs256 = c->rs256;
    o.http.allow_http_loopback = 1;
    o.http.timeout_ms = 3000;
    o.http.max_attempts = 1;
    o.http.retry_wait_min_ms = 10;
    o.http.retry_wait_max_ms = 20;
    return ita_verifier_new(&o, err);
}

/* One verifier, one verification. Returns ita_verify_signature's result (0 if new failed). */
static int verify_once(const vcfg *c, const char *token, time_t at, cJSON **payload, kg_err *err)
{
    ita_verifier *v;
    cJSON *p = NULL;
    char alg[16];
    int ok;

    kg_err_clear(err);
    if ((v = make_verifier(c, err)) == NULL)
        return 0;
    ok = ita_verify_signature(v, token, at, &p, alg, err);
    if (ok) {
        assert_non_null(p);
        assert_true(strcmp(alg, "PS384") == 0 || strcmp(alg, "RS256") == 0);
    } else {
        assert_null(p);
        assert_int_not_equal(err->msg[0], '\0');
    }
    if (payload != NULL)
        *payload = p;
    else
        cJSON_Delete(p);
    ita_verifier_free(v);
    return ok;
}

#define assert_fails_with(ok, err, sub)                                                                      \
    do {                                                                                                     \
        assert_int_equal((ok), 0);                                                                           \
        if (strstr((err).msg, (sub)) == NULL)                                                                \
            fail_msg("expected '%s' in '%s'", (sub), (err).msg);                                             \
    } while (0)

#define assert_verify_fails_with(ok, err, sub)                                                               \
    do {                                                                                                     \
        assert_fails_with(ok, err, sub);                                                                     \
        assert_int_equal((err).step, KG_STEP_VERIFY);                                                        \
    } while (0)

static char *b64url_str(const char *s)
{
    char *r = kg_b64url_encode((const unsigned char *)s, strlen(s));
    assert_non_null(r);
    return r;
}

static char *join3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
    char *r = malloc(n);
    assert_non_null(r);
    snprintf(r, n, "%s.%s.%s", a, b, c);
    return r;
}

/* The token's part i (0 header, 1 payload, 2 signature) as a malloc'ed string. */
static char *token_part(const char *token, int i)
{
    const char *p = token, *end;
    while (i-- > 0)
        p = strchr(p, '.') + 1;
    end = strchr(p, '.');
    return strndup(p, end != NULL ? (size_t)(end - p) : strlen(p));
}

static char *token_part_decoded(const char *token, int i)
{
    char *part = token_part(token, i);
    unsigned char *out;
    size_t n;
    assert_int_equal(kg_b64url_decode(part, strlen(part), &out, &n), 1);
    free(part);
    out[n] = '\0';
    return (char *)out;
}

/* ---- a loopback HTTP server serving CRLs and JWKS ----------------------------------------- */

typedef struct route {
    char path[64];
    int status; /* 0: close the connection without answering */
    char *body;
    size_t len;
} route;

static struct {
    int fd, port;
    pthread_t thread;
    volatile int stop;
    pthread_mutex_t mu;
    route routes[4];
    int hits;
    int api_key_seen;
} srv;

static void srv_route(const char *path, int status, const void *body, size_t len)
{
    pthread_mutex_lock(&srv.mu);
    for (int i = 0; i < 4; i++) {
        route *r = &srv.routes[i];
        if (r->path[0] == '\0' || strcmp(r->path, path) == 0) {
            free(r->body);
            snprintf(r->path, sizeof(r->path), "%s", path);
            r->status = status;
            r->body = malloc(len + 1);
            memcpy(r->body, body, len);
            r->len = len;
            break;
        }
    }
    pthread_mutex_unlock(&srv.mu);
}

static void srv_handle(int c)
{
    char req[8192], path[64] = "", head[160];
    size_t n = 0;
    ssize_t r;
    route resp = {.status = 404};

    while (n < sizeof(req) - 1 && (r = read(c, req + n, sizeof(req) - 1 - n)) > 0) {
        n += (size_t)r;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL)
            break;
    }
    req[n] = '\0';
    sscanf(req, "GET %63s ", path);
    pthread_mutex_lock(&srv.mu);
    srv.hits++;
    if (strcasestr(req, "api-key") != NULL)
        srv.api_key_seen = 1;
    for (int i = 0; i < 4; i++)
        if (strcmp(srv.routes[i].path, path) == 0) {
            resp = srv.routes[i];
            resp.body = malloc(resp.len + 1);
            memcpy(resp.body, srv.routes[i].body, resp.len);
        }
    pthread_mutex_unlock(&srv.mu);
    if (resp.status != 0) {
        int hl =
            snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     resp.status, resp.len);
        if (write(c, head, (size_t)hl) == hl && resp.len > 0 && write(c, resp.body, resp.len) < 0)
            perror("write");
    }
    free(resp.body);
    close(c);
}

static void *srv_main(void *arg)
{
    (void)arg;
    while (!srv.stop) {
        struct pollfd p = {.fd = srv.fd, .events = POLLIN};
        int c;
        if (poll(&p, 1, 50) <= 0)
            continue;
        if ((c = accept(srv.fd, NULL, NULL)) >= 0)
            srv_handle(c);
    }
    return NULL;
}

static void srv_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);

    pthread_mutex_init(&srv.mu, NULL);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(srv.fd >= 0);
    assert_int_equal(bind(srv.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(srv.fd, 16), 0);
    assert_int_equal(getsockname(srv.fd, (struct sockaddr *)&a, &al), 0);
    srv.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&srv.thread, NULL, srv_main, NULL), 0);
}

static void srv_stop(void)
{
    srv.stop = 1;
    pthread_join(srv.thread, NULL);
    close(srv.fd);
    for (int i = 0; i < 4; i++)
        free(srv.routes[i].body);
    pthread_mutex_destroy(&srv.mu);
}

static int srv_hits(void)
{
    int h;
    pthread_mutex_lock(&srv.mu);
    h = srv.hits;
    pthread_mutex_unlock(&srv.mu);
    return h;
}

/* 1 if any request so far carried an API key header (none may: JWKS and CRLs are public) */
static int srv_api_key_seen(void)
{
    int seen;
    pthread_mutex_lock(&srv.mu);
    seen = srv.api_key_seen;
    pthread_mutex_unlock(&srv.mu);
    return seen;
}

/* ---- a generated PKI: root -> CA -> leaf, CRLs, JWKS, tokens ---------------------------- */

static struct {
    EVP_PKEY *root_key, *ca_key, *leaf_key;
    X509 *root, *ca, *leaf;
    const char *root_pem, *jwks, *jwks_rs256;
    char *token, *token_salt32, *token_rs256;
    const char *ca_crl_empty, *ca_crl_revoking_leaf, *root_crl_empty, *root_crl_revoking_ca, *ca_crl_stale,
        *ca_crl_wrong_key;
    unsigned char *ca_crl_empty_der, *ca_crl_revoking_der, *root_crl_empty_der;
    int ca_crl_empty_len, ca_crl_revoking_len, root_crl_empty_len;
} pki;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int ca,
                       const char *cdp, long serial)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_get_subject_name(x);

    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -86400);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    /* ca 2: a CA certificate that may also sign (what a token-signing leaf must not be) */
    add_ext(x, issuer != NULL ? issuer : x, NID_basic_constraints,
            ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, issuer != NULL ? issuer : x, NID_key_usage,
            ca == 2 ? "critical,digitalSignature,keyCertSign"
            : ca    ? "critical,keyCertSign,cRLSign"
                    : "critical,digitalSignature");
    if (cdp != NULL)
        add_ext(x, issuer != NULL ? issuer : x, NID_crl_distribution_points, cdp);
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    return x;
}

/* A CRL of issuer, signed by key, listing revoked_serial (0: none), valid [now+from, now+to] days,
 * written as DER or PEM; *der_out gets the file's bytes (OPENSSL_free). */
static const char *make_crl(const char *file, X509 *issuer, EVP_PKEY *key, long revoked_serial, int from,
                            int to, int pem, unsigned char **der_out, int *der_len)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_adj(NULL, time(NULL), from, 0);
    unsigned char *der = NULL;
    const char *path;
    int len;

    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer));
    X509_CRL_set1_lastUpdate(crl, t);
    if (revoked_serial != 0) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *s = ASN1_INTEGER_new();
        ASN1_INTEGER_set(s, revoked_serial);
        X509_REVOKED_set_serialNumber(r, s);
        X509_REVOKED_set_revocationDate(r, t);
        X509_CRL_add0_revoked(crl, r);
        ASN1_INTEGER_free(s);
    }
    ASN1_TIME_free(t);
    t = ASN1_TIME_adj(NULL, time(NULL), to, 0);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    X509_CRL_sort(crl);
    assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
    if (pem) {
        BIO *b = BIO_new(BIO_s_mem());
        char *data;
        PEM_write_bio_X509_CRL(b, crl);
        len = (int)BIO_get_mem_data(b, &data);
        path = write_tmp(file, data, (size_t)len);
        der = OPENSSL_memdup(data, (size_t)len); /* the file's bytes, PEM here */
        BIO_free(b);
    } else {
        len = i2d_X509_CRL(crl, &der);
        path = write_tmp(file, der, (size_t)len);
    }
    if (der_out != NULL) {
        *der_out = der;
        *der_len = len;
    } else {
        OPENSSL_free(der);
    }
    X509_CRL_free(crl);
    return path;
}

static char *b64_cert(X509 *x)
{
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    char *s = kg_b64_encode(der, (size_t)len);
    OPENSSL_free(der);
    return s;
}

static char *bn_b64url(EVP_PKEY *k, const char *param)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int len;

    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    len = BN_bn2bin(bn, buf);
    BN_free(bn);
    return kg_b64url_encode(buf, (size_t)len);
}

/* A JWKS with one entry per alg in algs (NULL-terminated), all for the same key and kid. */
static char *make_jwks_json(const char *const *algs, EVP_PKEY *key, X509 *const *x5c, int nx5c)
{
    cJSON *root = cJSON_CreateObject(), *keys = cJSON_AddArrayToObject(root, "keys");
    char *n = bn_b64url(key, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64url(key, OSSL_PKEY_PARAM_RSA_E), *out;

    for (; *algs != NULL; algs++) {
        cJSON *k = cJSON_CreateObject(), *arr;
        cJSON_AddStringToObject(k, "kty", "RSA");
        cJSON_AddStringToObject(k, "kid", "test-kid");
        cJSON_AddStringToObject(k, "alg", *algs);
        cJSON_AddStringToObject(k, "n", n);
        cJSON_AddStringToObject(k, "e", e);
        arr = cJSON_AddArrayToObject(k, "x5c");
        for (int i = 0; i < nx5c; i++) {
            char *c = b64_cert(x5c[i]);
            cJSON_AddItemToArray(arr, cJSON_CreateString(c));
            free(c);
        }
        cJSON_AddItemToArray(keys, k);
    }
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    free(n);
    free(e);
    return out;
}

static char *sign_token(const char *header, const char *payload, EVP_PKEY *key, int pss, int salt)
{
    char *h = b64url_str(header), *p = b64url_str(payload), *input, *sig_b64, *token;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[1024];
    size_t sig_len = sizeof(sig);

    input = join3(h, p, "");
    input[strlen(input) - 1] = '\0'; /* "<h>.<p>" */
    assert_int_equal(EVP_DigestSignInit(md, &pctx, pss ? EVP_sha384() : EVP_sha256(), NULL, key), 1);
    if (pss) {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384());
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt);
    }
    assert_int_equal(EVP_DigestSign(md, sig, &sig_len, (unsigned char *)input, strlen(input)), 1);
    sig_b64 = kg_b64url_encode(sig, sig_len);
    token = join3(h, p, sig_b64);
    EVP_MD_CTX_free(md);
    free(h);
    free(p);
    free(input);
    free(sig_b64);
    return token;
}

static void pki_create(void)
{
    char cdp_ca[128], cdp_root[128];
    static const char *const ps[] = {"PS384", NULL}, *const both[] = {"PS384", "RS256", NULL};
    X509 *x5c[3];
    char *j;
    const char *hdr = "{\"alg\":\"PS384\",\"kid\":\"test-kid\",\"typ\":\"JWT\"}",
               *pl = "{\"attester_type\":\"TDX\",\"ver\":\"1.0.0\"}";
    BIO *b;
    char *data;
    long len;

    snprintf(cdp_ca, sizeof(cdp_ca), "URI:http://127.0.0.1:%d/ca.crl", srv.port);
    snprintf(cdp_root, sizeof(cdp_root), "URI:http://127.0.0.1:%d/root.crl", srv.port);
    pki.root_key = EVP_RSA_gen(2048);
    pki.ca_key = EVP_RSA_gen(2048);
    pki.leaf_key = EVP_RSA_gen(2048);
    assert_non_null(pki.leaf_key);
    pki.root = make_cert("Test Root CA", pki.root_key, NULL, pki.root_key, 1, NULL, 1);
    pki.ca = make_cert("Test ATS Signing CA", pki.ca_key, pki.root, pki.root_key, 1, cdp_root, 2);
    pki.leaf = make_cert("Test Token Signing", pki.leaf_key, pki.ca, pki.ca_key, 0, cdp_ca, 3);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, pki.root);
    len = BIO_get_mem_data(b, &data);
    pki.root_pem = write_tmp("pki-root.pem", data, (size_t)len);
    BIO_free(b);
    x5c[0] = pki.leaf, x5c[1] = pki.ca, x5c[2] = pki.root;
    j = make_jwks_json(ps, pki.leaf_key, x5c, 3);
    pki.jwks = write_tmp_str("pki-jwks.json", j);
    free(j);
    j = make_jwks_json(both, pki.leaf_key, x5c, 3);
    pki.jwks_rs256 = write_tmp_str("pki-jwks-rs256.json", j);
    free(j);
    pki.token = sign_token(hdr, pl, pki.leaf_key, 1, 48);
    pki.token_salt32 = sign_token(hdr, pl, pki.leaf_key, 1, 32);
    pki.token_rs256 = sign_token("{\"alg\":\"RS256\",\"kid\":\"test-kid\"}", pl, pki.leaf_key, 0, 0);
    pki.ca_crl_empty = make_crl("ca-empty.crl", pki.ca, pki.ca_key, 0, -1, 30, 0, &pki.ca_crl_empty_der,
                                &pki.ca_crl_empty_len);
    pki.ca_crl_revoking_leaf = make_crl("ca-revoking-leaf.crl", pki.ca, pki.ca_key, 3, -1, 30, 1,
                                        &pki.ca_crl_revoking_der, &pki.ca_crl_revoking_len);
    pki.root_crl_empty = make_crl("root-empty.crl", pki.root, pki.root_key, 0, -1, 30, 0,
                                  &pki.root_crl_empty_der, &pki.root_crl_empty_len);
    pki.root_crl_revoking_ca =
        make_crl("root-revoking-ca.crl", pki.root, pki.root_key, 2, -1, 30, 0, NULL, NULL);
    pki.ca_crl_stale = make_crl("ca-stale.crl", pki.ca, pki.ca_key, 0, -3, -1, 0, NULL, NULL);
    pki.ca_crl_wrong_key = make_crl("ca-wrong-key.crl", pki.ca, pki.root_key, 0, -1, 30, 0, NULL, NULL);
}

static void pki_free(void)
{
    EVP_PKEY_free(pki.root_key);
    EVP_PKEY_free(pki.ca_key);
    EVP_PKEY_free(pki.leaf_key);
    X509_free(pki.root);
    X509_free(pki.ca);
    X509_free(pki.leaf);
    free(pki.token);
    free(pki.token_salt32);
    free(pki.token_rs256);
    OPENSSL_free(pki.ca_crl_empty_der);
    OPENSSL_free(pki.ca_crl_revoking_der);
    OPENSSL_free(pki.root_crl_empty_der);
}

/* The PEM of x5c[index] of the first entry of a vector JWKS, written to a temporary file. */
static const char *jwks_cert_pem(const char *jwks_vec, int index, const char *file)
{
    char *text = kg_test_read_text(jwks_vec, NULL), *pem;
    cJSON *j = cJSON_Parse(text);
    const cJSON *c = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "keys"), 0), "x5c"), index);
    unsigned char *der;
    size_t der_len;
    const unsigned char *p;
    X509 *x;
    BIO *b = BIO_new(BIO_s_mem());
    long len;
    const char *path;

    assert_true(cJSON_IsString(c));
    assert_int_equal(kg_b64_decode(c->valuestring, strlen(c->valuestring), &der, &der_len), 1);
    p = der;
    x = d2i_X509(NULL, &p, (long)der_len);
    assert_non_null(x);
    PEM_write_bio_X509(b, x);
    len = BIO_get_mem_data(b, &pem);
    path = write_tmp(file, pem, (size_t)len);
    BIO_free(b);
    X509_free(x);
    free(der);
    cJSON_Delete(j);
    free(text);
    return path;
}

static int group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kg-ita-verify-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    srv_start();
    pki_create();
    return 0;
}

static int group_teardown(void **state)
{
    srv_stop();
    pki_free();
    for (int i = 0; i < tmp_count; i++)
        unlink(tmp_paths[i]);
    rmdir(tmpdir);
    return 0;
}

/* ---- real vectors ----------------------------------------------------------------------- */

static void prod_token(void **state)
{
    char *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL);
    const char *dev_root = jwks_cert_pem(VEC("ita-dev-jwks.json"), 2, "dev-root.pem");
    vcfg c = {.jwks_file = VEC("ita-prod-jwks.json"),
              .anchor = VEC("ita-prod-root-ca.pem"),
              .policy = ITA_CRL_IF_AVAILABLE,
              .offline = 1};
    cJSON *payload = NULL;
    kg_err err;
    int ok;

    /* if-available without CRLs: warns and goes on */
    ok = verify_once(&c, token, T_PROD, &payload, &err);
    if (!ok)
        fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(payload, "attester_type")->valuestring, "TDX");
    assert_string_equal(cJSON_GetObjectItem(payload, "iss")->valuestring, "Intel Trust Authority");
    cJSON_Delete(payload);

    /* require: the leaf's CRL (first checked) is named */
    c.policy = ITA_CRL_REQUIRE;
    ok = verify_once(&c, token, T_PROD, NULL, &err);
    assert_verify_fails_with(ok, err,
                             "CRL https://portal.trustauthority.intel.com/crl/ats-ca-crl.der unavailable");
    assert_non_null(strstr(err.msg, "(crl_policy = require)"));

    /* today: the leaf expired 2024-09-11 */
    c.policy = ITA_CRL_IF_AVAILABLE;
    ok = verify_once(&c, token, 0, NULL, &err);
    assert_verify_fails_with(ok, err, "certificate chain");
    assert_non_null(strstr(err.msg, "expired"));

    /* pinned to another root */
    c.anchor = dev_root;
    ok = verify_once(&c, token, T_PROD, NULL, &err);
    assert_verify_fails_with(ok, err, "certificate chain");

    /* RS256 enabled changes nothing for a PS384 token */
    c.anchor = VEC("ita-prod-root-ca.pem");
    c.rs256 = 1;
    assert_int_equal(verify_once(&c, token, T_PROD, NULL, &err), 1);
    free(token);
}

static void dev_sgx_token(void **state)
{
    char *token = kg_test_read_text(VEC("ita-sgx-dev-token.jwt"), NULL);
    const char *root = jwks_cert_pem(VEC("ita-dev-jwks.json"), 2, "dev-root.pem");
    static const char *const crls[] = {VEC("ita-dev-ats-ca-crl.der"), VEC("ita-dev-root-ca-crl.der"), NULL};
    static const char *const ats_only[] = {VEC("ita-dev-ats-ca-crl.der"), NULL};
    vcfg c = {.jwks_file = VEC("ita-dev-jwks.json"), .anchor = root, .policy = ITA_CRL_REQUIRE, .crls = crls};
    cJSON *payload = NULL;
    kg_err err;
    int ok;

    /* preloaded CRLs match by issuer: no download from the CDP (localhost:8081) is attempted */
    ok = verify_once(&c, token, T_DEV, &payload, &err);
    if (!ok)
        fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(payload, "attester_type")->valuestring, "SGX");
    cJSON_Delete(payload);

    /* the intermediate's CRL missing under require */
    c.crls = ats_only;
    c.offline = 1;
    ok = verify_once(&c, token, T_DEV, NULL, &err);
    assert_verify_fails_with(ok, err, "CRL http://localhost:8081/crl/root-ca-crl.der unavailable");

    /* the production root pinned: a development token is refused */
    c.crls = crls;
    c.anchor = VEC("ita-prod-root-ca.pem");
    ok = verify_once(&c, token, T_DEV, NULL, &err);
    assert_verify_fails_with(ok, err, "certificate chain");
    free(token);
}

static void dev_token_2023(void **state)
{
    char *token = kg_test_read_text(VEC("ita-sgx-dev-token-2023.jwt"), NULL);
    const char *root2023 = jwks_cert_pem(VEC("ita-dev-jwks-2023.json"), 2, "dev-root-2023.pem");
    const char *root = jwks_cert_pem(VEC("ita-dev-jwks.json"), 2, "dev-root.pem");
    vcfg c = {
        .jwks_file = VEC("ita-dev-jwks.json"), .anchor = root, .policy = ITA_CRL_IF_AVAILABLE, .offline = 1};
    static const char *const crls[] = {VEC("ita-dev-ats-ca-crl.der"), VEC("ita-dev-root-ca-crl.der"), NULL};
    cJSON *payload = NULL;
    kg_err err;
    int ok;

    /* same RSA key under another kid: never "try every key" */
    ok = verify_once(&c, token, T_DEV2023, NULL, &err);
    assert_verify_fails_with(ok, err, "unknown kid '1a1a2fe5");

    /* its own JWKS and root, at its time: the leaf (2023-07-19 .. 2024-07-18) is valid */
    c.jwks_file = VEC("ita-dev-jwks-2023.json");
    c.anchor = root2023;
    ok = verify_once(&c, token, T_DEV2023, &payload, &err);
    if (!ok)
        fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(payload, "attester_type")->valuestring, "SGX");
    cJSON_Delete(payload);

    /* today the leaf has expired */
    ok = verify_once(&c, token, 0, NULL, &err);
    assert_verify_fails_with(ok, err, "certificate chain");
    assert_non_null(strstr(err.msg, "expired"));

    /* the 2024 dev CRLs (same issuer names and keys) were not yet issued in 2023 */
    c.crls = crls;
    c.policy = ITA_CRL_REQUIRE;
    ok = verify_once(&c, token, T_DEV2023, NULL, &err);
    assert_verify_fails_with(ok, err, "thisUpdate is after the verification time");
    free(token);
}

/* ---- forgeries of the production token -------------------------------------------------- */

static const vcfg prod_cfg = {.jwks_file = VEC("ita-prod-jwks.json"),
                              .anchor = VEC("ita-prod-root-ca.pem"),
                              .policy = ITA_CRL_IF_AVAILABLE,
                              .offline = 1};

/* tmpl with its "%s" replaced by kid (a template, not a format: -Wformat-nonliteral) */
static void fill_kid(char *out, size_t size, const char *tmpl, const char *kid)
{
    const char *at = strstr(tmpl, "%s");
    assert_non_null(at);
    snprintf(out, size, "%.*s%s%s", (int)(at - tmpl), tmpl, kid, at + 2);
}

static char *prod_kid(const char *token)
{
    char *h = token_part_decoded(token, 0), *kid;
    cJSON *j = cJSON_Parse(h);
    kid = strdup(cJSON_GetObjectItem(j, "kid")->valuestring);
    cJSON_Delete(j);
    free(h);
    return kid;
}

static void forged_alg(void **state)
{
    char *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL), *kid = prod_kid(token);
    char *payload = token_part(token, 1), *sig = token_part(token, 2);
    static const char *const headers[] = {
        "{\"alg\":\"HS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
        "{\"alg\":\"none\",\"kid\":\"%s\"}",
        "{\"alg\":\"HS384\",\"kid\":\"%s\"}",
        "{\"alg\":\"ES384\",\"kid\":\"%s\"}",
        "{\"alg\":\"RS256\",\"kid\":\"%s\"}",
        "{\"alg\":\"ps384\",\"kid\":\"%s\"}",
        "{\"kid\":\"%s\"}",
        "{\"alg\":384,\"kid\":\"%s\"}",
        "{\"alg\":null,\"kid\":\"%s\"}",
        "{\"alg\":\"PS384 \",\"kid\":\"%s\"}",
    };
    static const char *const expect[] = {
        "alg 'HS256' is not allowed",          "alg 'none' is not allowed",
        "alg 'HS384' is not allowed",          "alg 'ES384' is not allowed",
        "alg 'RS256' is not allowed",          "alg 'ps384' is not allowed",
        "alg '(missing)' is not allowed",      "alg '(not a string)' is not allowed",
        "alg '(not a string)' is not allowed", "alg 'PS384 ' is not allowed"};
    kg_err err;

    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char hdr[512], *h, *t;
        fill_kid(hdr, sizeof(hdr), headers[i], kid);
        h = b64url_str(hdr);
        t = join3(h, payload, sig);
        assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err, expect[i]);
        free(t);
        free(h);
    }

    /* HS256 keyed with the leaf's public key PEM (the official C client accepts this) */
    {
        const char *leaf_file = jwks_cert_pem(VEC("ita-prod-jwks.json"), 0, "prod-leaf.pem");
        char *leaf_pem = kg_test_read_text(leaf_file, NULL), hdr[512], *h, *input, *t, *mac_b64;
        BIO *b = BIO_new_mem_buf(leaf_pem, -1);
        X509 *leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO *kb = BIO_new(BIO_s_mem());
        char *key_pem;
        long key_len;
        unsigned char mac[32];
        unsigned int mac_len = sizeof(mac);

        PEM_write_bio_PUBKEY(kb, X509_get0_pubkey(leaf));
        key_len = BIO_get_mem_data(kb, &key_pem);
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
        h = b64url_str(hdr);
        input = join3(h, payload, "");
        input[strlen(input) - 1] = '\0';
        HMAC(EVP_sha256(), key_pem, (int)key_len, (unsigned char *)input, strlen(input), mac, &mac_len);
        mac_b64 = kg_b64url_encode(mac, mac_len);
        t = join3(h, payload, mac_b64);
        assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err,
                                 "alg 'HS256' is not allowed");
        free(t);
        free(mac_b64);
        free(input);
        free(h);
        BIO_free(kb);
        X509_free(leaf);
        BIO_free(b);
        free(leaf_pem);
    }

    /* alg none with an empty signature */
    {
        char hdr[512], *h, *t;
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"none\",\"kid\":\"%s\"}", kid);
        h = b64url_str(hdr);
        t = join3(h, payload, "");
        assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err,
                                 "alg 'none' is not allowed");
        free(t);
        free(h);
    }
    free(kid);
    free(payload);
    free(sig);
    free(token);
}

static void forged_header_and_payload(void **state)
{
    char *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL), *kid = prod_kid(token);
    char *payload = token_part(token, 1), *sig = token_part(token, 2), *claims = token_part_decoded(token, 1);
    vcfg rs = prod_cfg;
    char hdr[512], *h, *t, *p, *at;
    kg_err err;

    /* RS256 header on a PS384 signature: the RS256 entry exists, the signature fails */
    rs.rs256 = 1;
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
    h = b64url_str(hdr);
    t = join3(h, payload, sig);
    assert_verify_fails_with(verify_once(&rs, t, T_PROD, NULL, &err), err,
                             "token signature does not verify (RS256)");
    free(t);
    free(h);

    /* header checks after alg */
    {
        static const char *const bad[] = {
            "{\"alg\":\"PS384\",\"kid\":\"%s\",\"crit\":[\"exp\"]}",
            "{\"alg\":\"PS384\",\"kid\":\"%s\",\"typ\":\"JOSE\"}",
            "{\"alg\":\"PS384\",\"kid\":\"%s\",\"typ\":1}",
            "{\"alg\":\"PS384\",\"kid\":\"%s\",\"alg\":\"HS256\"}",
            "{\"alg\":\"PS384\",\"kidx\":\"%s\"}",
            "{\"alg\":\"PS384\",\"kid\":[\"%s\"]}",
        };
        static const char *const expect[] = {"crit",   "typ",   "typ", "duplicate member 'alg'",
                                             "no kid", "no kid"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            fill_kid(hdr, sizeof(hdr), bad[i], kid);
            h = b64url_str(hdr);
            t = join3(h, payload, sig);
            assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err, expect[i]);
            free(t);
            free(h);
        }
        h = b64url_str("[\"PS384\"]");
        t = join3(h, payload, sig);
        assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err,
                                 "header is not a JSON object");
        free(t);
        free(h);
    }

    /* a claim flipped, signature kept */
    at = strstr(claims, "\"tdx_is_debuggable\":false");
    assert_non_null(at);
    memcpy(at + strlen("\"tdx_is_debuggable\":"), "true ", 5);
    p = b64url_str(claims);
    h = token_part(token, 0);
    t = join3(h, p, sig);
    assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err,
                             "token signature does not verify (PS384)");
    free(t);
    free(p);

    /* one signature bit flipped */
    t = strdup(token);
    t[strlen(t) - 10] = t[strlen(t) - 10] == 'A' ? 'B' : 'A';
    assert_verify_fails_with(verify_once(&prod_cfg, t, T_PROD, NULL, &err), err,
                             "token signature does not verify");
    free(t);
    free(h);
    free(claims);
    free(kid);
    free(payload);
    free(sig);
    free(token);
}

/* The production JWKS with its entries edited by edit(), written to a temporary file. */
static const char *edited_prod_jwks(const char *file, void (*edit)(cJSON *keys))
{
    char *text = kg_test_read_text(VEC("ita-prod-jwks.json"), NULL), *out;
    cJSON *j = cJSON_Parse(text);
    const char *path;

    edit(cJSON_GetObjectItem(j, "keys"));
    out = cJSON_PrintUnformatted(j);
    path = write_tmp_str(file, out);
    free(out);
    cJSON_Delete(j);
    free(text);
    return path;
}

static void edit_other_n(cJSON *keys)
{
    char *dev = kg_test_read_text(VEC("ita-dev-jwks.json"), NULL);
    cJSON *d = cJSON_Parse(dev), *k;
    const char *n =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "keys"), 0), "n")->valuestring;
    cJSON_ArrayForEach(k, keys) cJSON_ReplaceItemInObject(k, "n", cJSON_CreateString(n));
    cJSON_Delete(d);
    free(dev);
}

static void edit_leaf_only(cJSON *keys)
{
    cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        cJSON *x5c = cJSON_GetObjectItem(k, "x5c");
        while (cJSON_GetArraySize(x5c) > 1)
            cJSON_DeleteItemFromArray(x5c, 1);
    }
}

static void edit_drop_ps384(cJSON *keys)
{
    cJSON_DeleteItemFromArray(keys, 0);
}

static void edit_eleven_certs(cJSON *keys)
{
    cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        cJSON *x5c = cJSON_GetObjectItem(k, "x5c");
        const char *leaf = cJSON_GetArrayItem(x5c, 0)->valuestring;
        while (cJSON_GetArraySize(x5c) < 11)
            cJSON_AddItemToArray(x5c, cJSON_CreateString(leaf));
    }
}

static void forged_jwks(void **state)
{
    char *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL);
    vcfg c = prod_cfg;
    kg_err err;

    c.jwks_file = edited_prod_jwks("other-n.json", edit_other_n);
    assert_verify_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err,
                             "JWK n/e differ from the x5c leaf key");
    c.jwks_file = edited_prod_jwks("leaf-only.json", edit_leaf_only);
    assert_verify_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err, "certificate chain");
    c.jwks_file = edited_prod_jwks("no-ps384.json", edit_drop_ps384);
    assert_verify_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err,
                             "no JWKS entry for kid '79d80711");
    c.jwks_file = edited_prod_jwks("eleven.json", edit_eleven_certs);
    assert_verify_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err, "more than 10 certificates");
    free(token);
}

/* ---- the generated PKI: revocation, CRL download, caching, JWKS download ---------------- */

static void pki_revocation(void **state)
{
    const char *good[] = {pki.ca_crl_empty, pki.root_crl_empty, NULL};
    const char *leaf_revoked[] = {pki.ca_crl_revoking_leaf, pki.root_crl_empty, NULL};
    const char *ca_revoked[] = {pki.ca_crl_empty, pki.root_crl_revoking_ca, NULL};
    const char *stale[] = {pki.ca_crl_stale, pki.root_crl_empty, NULL};
    const char *wrong_key[] = {pki.ca_crl_wrong_key, pki.root_crl_empty, NULL};
    vcfg c = {
        .jwks_file = pki.jwks, .anchor = pki.root_pem, .policy = ITA_CRL_REQUIRE, .crls = good, .offline = 1};
    cJSON *payload;
    kg_err err;

    assert_int_equal(verify_once(&c, pki.token, 0, &payload, &err), 1);
    assert_string_equal(cJSON_GetObjectItem(payload, "attester_type")->valuestring, "TDX");
    cJSON_Delete(payload);
    c.crls = leaf_revoked;
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "leaf certificate revoked");
    c.crls = ca_revoked;
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err,
                             "intermediate certificate revoked");
    c.crls = stale;
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "stale");
    c.crls = wrong_key;
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err,
                             "signature does not verify with the issuer's key");
    c.crls = NULL;
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "/ca.crl unavailable");
    c.policy = ITA_CRL_IF_AVAILABLE;
    assert_int_equal(verify_once(&c, pki.token, 0, NULL, &err), 1);

    /* pinned to a different root */
    c.crls = good;
    c.policy = ITA_CRL_REQUIRE;
    c.anchor = VEC("ita-prod-root-ca.pem");
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "certificate chain");
    /* the JWKS's own self-signed root is not pinned: the chain fails */
    c.anchor = VEC("intel-sgx-root-ca.pem");
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err,
                             "self-signed certificate in certificate chain");
}

static void pki_signature_variants(void **state)
{
    const char *good[] = {pki.ca_crl_empty, pki.root_crl_empty, NULL};
    vcfg c = {.jwks_file = pki.jwks_rs256,
              .anchor = pki.root_pem,
              .policy = ITA_CRL_REQUIRE,
              .crls = good,
              .offline = 1};
    kg_err err;

    /* PSS salt must be exactly 48 */
    assert_verify_fails_with(verify_once(&c, pki.token_salt32, 0, NULL, &err), err,
                             "token signature does not verify");
    /* RS256 only when allowed, and then from its own entry */
    assert_verify_fails_with(verify_once(&c, pki.token_rs256, 0, NULL, &err), err,
                             "alg 'RS256' is not allowed");
    c.rs256 = 1;
    assert_int_equal(verify_once(&c, pki.token_rs256, 0, NULL, &err), 1);
    c.jwks_file = pki.jwks; /* PS384 entry only */
    assert_verify_fails_with(verify_once(&c, pki.token_rs256, 0, NULL, &err), err,
                             "no JWKS entry for kid 'test-kid' with alg 'RS256'");
}

/* A 2048-bit signature is 256 bytes: its last base64url character carries 4 unused bits, so
 * before issue 17 (finding 8) 16 different token strings verified for one signature. Only the
 * canonical one (unused bits zero) may. The production token's 384-byte signature has no unused
 * bits; it must keep verifying (prod_token). */
static void pki_non_canonical_signature(void **state)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *good[] = {pki.ca_crl_empty, pki.root_crl_empty, NULL};
    vcfg c = {
        .jwks_file = pki.jwks, .anchor = pki.root_pem, .policy = ITA_CRL_REQUIRE, .crls = good, .offline = 1};
    char *t = strdup(pki.token), *last = t + strlen(t) - 1;
    const char *at = strchr(alphabet, *last);
    kg_err err;

    assert_non_null(at);
    assert_int_equal((at - alphabet) & 15, 0); /* the canonical encoding */
    assert_int_equal(verify_once(&c, t, 0, NULL, &err), 1);
    for (int low = 1; low < 16; low++) {
        *last = alphabet[(at - alphabet) | low];
        assert_verify_fails_with(verify_once(&c, t, 0, NULL, &err), err,
                                 "token signature is not canonical base64url");
    }
    free(t);
}

/* The token-signing leaf must be an end entity: a CA certificate (even one allowed to sign)
 * under the pinned root is refused as leaf (issue 17, finding 10). */
static void pki_leaf_is_ca(void **state)
{
    static const char *const ps[] = {"PS384", NULL};
    const char *good[] = {pki.ca_crl_empty, pki.root_crl_empty, NULL};
    X509 *ca_leaf = make_cert("Test Token Signing CA", pki.leaf_key, pki.ca, pki.ca_key, 2, NULL, 4);
    X509 *x5c[3] = {ca_leaf, pki.ca, pki.root};
    char *j = make_jwks_json(ps, pki.leaf_key, x5c, 3);
    vcfg c = {.jwks_file = write_tmp_str("pki-jwks-ca-leaf.json", j),
              .anchor = pki.root_pem,
              .policy = ITA_CRL_REQUIRE,
              .crls = good,
              .offline = 1};
    kg_err err;

    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err,
                             "token-signing leaf certificate is a CA");
    free(j);
    X509_free(ca_leaf);
}

static void pki_crl_download(void **state)
{
    vcfg c = {.jwks_file = pki.jwks, .anchor = pki.root_pem, .policy = ITA_CRL_REQUIRE};
    ita_verifier *v;
    cJSON *payload = NULL;
    kg_err err;
    char url[128];
    int hits;

    srv_route("/ca.crl", 200, pki.ca_crl_empty_der, (size_t)pki.ca_crl_empty_len);
    srv_route("/root.crl", 200, pki.root_crl_empty_der, (size_t)pki.root_crl_empty_len);
    v = make_verifier(&c, &err);
    assert_non_null(v);
    hits = srv_hits();
    assert_int_equal(ita_verify_signature(v, pki.token, 0, &payload, NULL, &err), 1);
    cJSON_Delete(payload);
    assert_int_equal(srv_hits(), hits + 2);
    /* cached until nextUpdate: no download the second time */
    assert_int_equal(ita_verify_signature(v, pki.token, 0, &payload, NULL, &err), 1);
    cJSON_Delete(payload);
    assert_int_equal(srv_hits(), hits + 2);
    ita_verifier_free(v);
    assert_int_equal(srv_api_key_seen(), 0);

    /* a revoking CRL downloaded (PEM) */
    srv_route("/ca.crl", 200, pki.ca_crl_revoking_der, (size_t)pki.ca_crl_revoking_len);
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "leaf certificate revoked");

    /* HTTP error, garbage, dropped connection: require fails naming the URL, if-available goes on */
    snprintf(url, sizeof(url), "CRL http://127.0.0.1:%d/ca.crl unavailable: HTTP 404 (crl_policy = require)",
             srv.port);
    srv_route("/ca.crl", 404, "", 0);
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, url);
    srv_route("/ca.crl", 200, "garbage", 7);
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "not a DER or PEM CRL");
    srv_route("/ca.crl", 0, "", 0);
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "/ca.crl unavailable: ");
    c.policy = ITA_CRL_IF_AVAILABLE;
    assert_int_equal(verify_once(&c, pki.token, 0, NULL, &err), 1);
    srv_route("/ca.crl", 200, pki.ca_crl_empty_der, (size_t)pki.ca_crl_empty_len);
}

static void jwks_download(void **state)
{
    char *jwks = kg_test_read_text(pki.jwks, NULL), *got = NULL, base[64];
    const char *good[] = {pki.ca_crl_empty, pki.root_crl_empty, NULL};
    vcfg c = {
        .base_url = base, .anchor = pki.root_pem, .policy = ITA_CRL_REQUIRE, .crls = good, .offline = 1};
    ita_verifier *v;
    cJSON *payload = NULL;
    char *unknown;
    kg_err err;
    int hits;

    snprintf(base, sizeof(base), "http://127.0.0.1:%d/", srv.port); /* trailing '/' is fine */
    srv_route("/certs", 200, jwks, strlen(jwks));
    v = make_verifier(&c, &err);
    assert_non_null(v);
    hits = srv_hits();
    assert_int_equal(ita_verify_signature(v, pki.token, 0, &payload, NULL, &err), 1);
    cJSON_Delete(payload);
    assert_int_equal(srv_hits(), hits + 1);
    assert_int_equal(ita_verifier_get_jwks(v, &got, &err), 1);
    assert_string_equal(got, jwks);
    free(got);
    /* an unknown kid right after a download: no second download (at most one per 60 s) */
    unknown = sign_token("{\"alg\":\"PS384\",\"kid\":\"rotated\"}", "{}", pki.leaf_key, 1, 48);
    assert_verify_fails_with(ita_verify_signature(v, unknown, 0, &payload, NULL, &err), err,
                             "unknown kid 'rotated'");
    assert_int_equal(srv_hits(), hits + 1);
    ita_verifier_free(v);
    free(unknown);

    /* a failing JWKS endpoint */
    srv_route("/certs", 503, "", 0);
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "HTTP 503");
    srv_route("/certs", 200, "not json", 8);
    assert_verify_fails_with(verify_once(&c, pki.token, 0, NULL, &err), err, "JWKS is not a JSON object");
    assert_int_equal(srv_api_key_seen(), 0);
    free(jwks);
}

/* One verifier shared by threads: the caches are locked, each call has its own HTTP client. */
static void *verify_thread(void *arg)
{
    ita_verifier *v = arg;
    long failures = 0;

    for (int i = 0; i < 10; i++) {
        cJSON *payload = NULL;
        kg_err err;
        if (!ita_verify_signature(v, pki.token, 0, &payload, NULL, &err))
            failures++;
        cJSON_Delete(payload);
    }
    return (void *)failures;
}

static void concurrent_verifications(void **state)
{
    vcfg c = {.jwks_file = pki.jwks, .anchor = pki.root_pem, .policy = ITA_CRL_REQUIRE};
    pthread_t th[4];
    ita_verifier *v;
    kg_err err;

    srv_route("/ca.crl", 200, pki.ca_crl_empty_der, (size_t)pki.ca_crl_empty_len);
    srv_route("/root.crl", 200, pki.root_crl_empty_der, (size_t)pki.root_crl_empty_len);
    v = make_verifier(&c, &err);
    assert_non_null(v);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verify_thread, v), 0);
    for (int i = 0; i < 4; i++) {
        void *failures;
        pthread_join(th[i], &failures);
        assert_int_equal((long)failures, 0);
    }
    ita_verifier_free(v);
}

/* ---- malformed input -------------------------------------------------------------------- */

static void malformed_jwks_files(void **state)
{
    static const char *const garbage[] = {
        "", "null", "[]", "{}", "{\"keys\":{}}", "{\"keys\":", "\x01\x02\xff", "{\"keys\":[]}x"};
    char *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL);
    vcfg c = prod_cfg;
    kg_err err;
    char *big;

    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        c.jwks_file = write_tmp_str("garbage.json", garbage[i]);
        assert_int_equal(verify_once(&c, token, T_PROD, NULL, &err), 0);
    }
    big = malloc(2 * 1024 * 1024);
    memset(big, ' ', 2 * 1024 * 1024);
    memcpy(big, "{\"keys\":[]}", 11);
    c.jwks_file = write_tmp("big.json", big, 2 * 1024 * 1024);
    assert_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err, "larger than");
    free(big);
    c.jwks_file = "/nonexistent/jwks.json";
    assert_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err, "cannot open");
    c.jwks_file = prod_cfg.jwks_file;
    c.anchor = write_tmp_str("no-cert.pem", "not a certificate");
    assert_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err, "holds no PEM certificate");
    free(token);
}

static void malformed_entries(void **state)
{
    /* each variant of the PS384 entry is unusable; none may crash */
    static const char *const mutations[][2] = {
        {"kty", NULL},         {"kty", "\"EC\""},   {"kty", "1"},          {"kid", "7"},
        {"alg", NULL},         {"alg", "[]"},       {"n", NULL},           {"n", "\"###\""},
        {"n", "\"\""},         {"n", "{}"},         {"e", NULL},           {"e", "\"\""},
        {"e", "\"AAAA\""},     {"x5c", NULL},       {"x5c", "\"MII\""},    {"x5c", "[]"},
        {"x5c", "[123]"},      {"x5c", "[\"!!\"]"}, {"x5c", "[\"AAAA\"]"}, {"x5c", "[null]"},
        {"x5c", "[\"MIIB\"]"},
    };
    char *text = kg_test_read_text(VEC("ita-prod-jwks.json"), NULL),
         *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL);
    vcfg c = prod_cfg;
    kg_err err;

    for (size_t i = 0; i < sizeof(mutations) / sizeof(mutations[0]); i++) {
        cJSON *j = cJSON_Parse(text), *keys = cJSON_GetObjectItem(j, "keys"),
              *k = cJSON_GetArrayItem(keys, 0);
        char *out;
        cJSON_DeleteItemFromArray(keys, 1); /* no RS256 fallback entry */
        cJSON_DeleteItemFromObject(k, mutations[i][0]);
        if (mutations[i][1] != NULL)
            cJSON_AddItemToObject(k, mutations[i][0], cJSON_Parse(mutations[i][1]));
        out = cJSON_PrintUnformatted(j);
        c.jwks_file = write_tmp_str("mutated.json", out);
        assert_verify_fails_with(verify_once(&c, token, T_PROD, NULL, &err), err, "");
        free(out);
        cJSON_Delete(j);
    }

    /* junk entries before the good one are skipped */
    {
        cJSON *j = cJSON_Parse(text), *keys = cJSON_GetObjectItem(j, "keys");
        static const char *const junk[] = {
            "null", "1", "\"x\"", "[]", "{}", "{\"kid\":null}", "{\"kid\":1,\"alg\":2}"};
        char *out;
        for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
            cJSON_InsertItemInArray(keys, 0, cJSON_Parse(junk[i]));
        out = cJSON_PrintUnformatted(j);
        c.jwks_file = write_tmp_str("junk.json", out);
        assert_int_equal(verify_once(&c, token, T_PROD, NULL, &err), 1);
        free(out);
        cJSON_Delete(j);
    }
    free(text);
    free(token);
}

/* Random byte edits of the production JWKS: whatever the result, no crash and no leak. */
static void mutated_jwks_bytes(void **state)
{
    size_t len;
    char *text = kg_test_read_text(VEC("ita-prod-jwks.json"), &len),
         *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL);
    static const char alphabet[] = "{}[]\",:0aA-_+/=\\ \x01";
    unsigned int seed = 4242;
    vcfg c = prod_cfg;
    kg_err err;

    for (int i = 0; i < 200; i++) {
        char *m = malloc(len + 1);
        memcpy(m, text, len + 1);
        for (int k = 0; k < 1 + i % 4; k++)
            m[rand_r(&seed) % len] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        c.jwks_file = write_tmp("mutated-bytes.json", m, len);
        (void)verify_once(&c, token, T_PROD, NULL, &err);
        free(m);
    }
    free(text);
    free(token);
}

static void malformed_tokens(void **state)
{
    char *token = kg_test_read_text(VEC("ita-tdx-prod-token-v1.jwt"), NULL);
    size_t len = strlen(token);
    ita_verifier *v;
    cJSON *payload = NULL;
    kg_err err;
    unsigned int seed = 12345;
    static const char *const odd[] = {
        "", ".", "..", "...", "a.b.c", "e30.e30.", "e30.e30.AA", "bnVsbA.e30.AA", "W10.e30.AA"};

    v = make_verifier(&prod_cfg, &err);
    assert_non_null(v);
    for (size_t n = 0; n < len; n++) {
        char *t = strndup(token, n);
        assert_int_equal(ita_verify_signature(v, t, T_PROD, &payload, NULL, &err), 0);
        assert_null(payload);
        free(t);
    }
    for (int i = 0; i < 300; i++) {
        char *t = strdup(token);
        t[rand_r(&seed) % len] = "A.-_=+/\x01"[rand_r(&seed) % 8];
        if (ita_verify_signature(v, t, T_PROD, &payload, NULL, &err))
            assert_string_equal(t, token); /* only the identity mutation may pass */
        cJSON_Delete(payload);
        payload = NULL;
        free(t);
    }
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        assert_int_equal(ita_verify_signature(v, odd[i], T_PROD, &payload, NULL, &err), 0);
    assert_int_equal(ita_verify_signature(v, token, T_PROD, &payload, NULL, &err), 1);
    cJSON_Delete(payload);
    ita_verifier_free(v);
    free(token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prod_token),
        cmocka_unit_test(dev_sgx_token),
        cmocka_unit_test(dev_token_2023),
        cmocka_unit_test(forged_alg),
        cmocka_unit_test(forged_header_and_payload),
        cmocka_unit_test(forged_jwks),
        cmocka_unit_test(pki_revocation),
        cmocka_unit_test(pki_signature_variants),
        cmocka_unit_test(pki_non_canonical_signature),
        cmocka_unit_test(pki_leaf_is_ca),
        cmocka_unit_test(pki_crl_download),
        cmocka_unit_test(jwks_download),
        cmocka_unit_test(concurrent_verifications),
        cmocka_unit_test(malformed_jwks_files),
        cmocka_unit_test(malformed_entries),
        cmocka_unit_test(mutated_jwks_bytes),
        cmocka_unit_test(malformed_tokens),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
