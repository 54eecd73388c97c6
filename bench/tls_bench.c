/* SPDX-License-Identifier: Apache-2.0 */
/*
 * P2, the load-independent part: server-side instructions per full TLS handshake, run in
 * memory (client and server SSL objects joined by a BIO pair, no sockets), for callgrind.
 *
 *   tls_bench --cert CERT --key KEYFILE --tls 1.2|1.3 --n N
 *
 * KEYFILE is a PEM private key or a keygate key reference (OPENSSL_CONF loads the provider).
 * Each handshake is new (no session resumption). After 3 warm-up handshakes (first-use costs:
 * fetches, the signing template), server_step is the only function that runs the server's
 * side, so `callgrind --toggle-collect=server_step` counts exactly N server handshakes.
 */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) static int server_step(SSL *s)
{
    return SSL_do_handshake(s);
}

static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, int measured)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb = NULL, *cb = NULL;
    int ok = 0, done_s = 0, done_c = 0;

    if (s == NULL || c == NULL || !BIO_new_bio_pair(&sb, 0, &cb, 0))
        goto end;
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (int i = 0; i < 64 && !(done_s && done_c); i++) {
        int rc = SSL_do_handshake(c);
        if (rc == 1)
            done_c = 1;
        else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ)
            goto end;
        rc = measured ? server_step(s) : SSL_do_handshake(s);
        if (rc == 1)
            done_s = 1;
        else if (SSL_get_error(s, rc) != SSL_ERROR_WANT_READ)
            goto end;
    }
    ok = done_s && done_c;
end:
    SSL_free(s);
    SSL_free(c);
    return ok;
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL, *tls = "1.3";
    int n = 100, rc = 1, version;
    SSL_CTX *sctx = NULL, *cctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--cert") == 0)
            cert = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            key = argv[i + 1];
        else if (strcmp(argv[i], "--tls") == 0)
            tls = argv[i + 1];
        else if (strcmp(argv[i], "--n") == 0)
            n = atoi(argv[i + 1]);
    }
    if (cert == NULL || key == NULL || n < 1) {
        fprintf(stderr, "usage: tls_bench --cert CERT --key KEYFILE [--tls 1.2|1.3] [--n N]\n");
        return 2;
    }
    version = strcmp(tls, "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    bio = BIO_new_file(key, "r");
    pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    sctx = SSL_CTX_new(TLS_server_method());
    cctx = SSL_CTX_new(TLS_client_method());
    if (pkey == NULL || sctx == NULL || cctx == NULL ||
        SSL_CTX_use_certificate_file(sctx, cert, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey(sctx, pkey) != 1 || !SSL_CTX_set_min_proto_version(sctx, version) ||
        !SSL_CTX_set_max_proto_version(sctx, version)) {
        fprintf(stderr, "tls_bench: cannot set up the server with %s\n", key);
        goto end;
    }
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    for (int i = -3; i < n; i++)
        if (!handshake(sctx, cctx, i >= 0)) {
            fprintf(stderr, "tls_bench: handshake %d failed\n", i);
            goto end;
        }
    rc = 0;
end:
    if (rc != 0)
        ERR_print_errors_fp(stderr);
    EVP_PKEY_free(pkey);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return rc;
}
