/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificates and CRLs from untrusted bytes, as the verifier takes them from x5c and from CRL
 * downloads: ita_x509_from_der, ita_crl_from_bytes (DER or PEM), ita_cdp_uris (the CDPs we
 * would download) and ita_crl_problem (issuer, cRLSign, signature, dates, critical extensions,
 * issuingDistributionPoint scope), with the fuzzed certificate as subject and as issuer.
 *
 * Input: u16 big-endian n, then n bytes of certificate DER, then the CRL bytes. The fixed
 * leaf/issuer/CRL are the local stack's (tests/fuzz/data).
 */
#include <openssl/err.h>
#include <openssl/pem.h>

#include "fuzz_common.h"
#include "ita_jwks.h"
#include "ita_verify.h"

static X509 *leaf, *issuer;
static X509_CRL *crl_fixed;
static time_t at;

static X509 *read_cert(const char *name)
{
    FILE *f = fopen(fuzz_data_path(name), "r");
    X509 *x;
    FUZZ_REQUIRE(f != NULL);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    FUZZ_REQUIRE(x != NULL);
    return x;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char *buf;
    size_t len;
    long long t;
    FILE *f;
    kg_err err;

    (void)argc;
    (void)argv;
    leaf = read_cert("ita-leaf.pem");
    issuer = read_cert("ita-signing-ca.pem");
    FUZZ_REQUIRE(ita_read_file(fuzz_data_path("ita-signing-ca.crl"), ITA_CRL_MAX_LEN, &buf, &len, &err));
    crl_fixed = ita_crl_from_bytes((const unsigned char *)buf, len);
    free(buf);
    FUZZ_REQUIRE(crl_fixed != NULL);
    FUZZ_REQUIRE((f = fopen(fuzz_data_path("verify-at"), "r")) != NULL && fscanf(f, "%lld", &t) == 1);
    fclose(f);
    at = (time_t)t;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char uris[4][ITA_CDP_URL_MAX];
    size_t n;
    uint8_t *der, *crl_bytes;
    X509 *cert;
    X509_CRL *crl;
    X509_REVOKED *rev;

    if (size < 2)
        return 0;
    n = (size_t)data[0] << 8 | data[1];
    if (n > size - 2)
        n = size - 2;
    der = fuzz_dup(data + 2, n);
    crl_bytes = fuzz_dup(data + 2 + n, size - 2 - n);
    cert = ita_x509_from_der(der, n);
    crl = ita_crl_from_bytes(crl_bytes, size - 2 - n);
    fuzz_note("ita_x509_from_der", cert != NULL, "malformed");
    fuzz_note("ita_crl_from_bytes", crl != NULL, "malformed");
    if (cert != NULL) {
        (void)ita_cdp_uris(cert, uris, 4);
        (void)ita_crl_problem(crl_fixed, cert, issuer, at); /* fuzzed subject */
        (void)ita_crl_problem(crl_fixed, leaf, cert, at);   /* fuzzed issuer */
        (void)X509_CRL_get0_by_serial(crl_fixed, &rev, X509_get0_serialNumber(cert));
    }
    if (crl != NULL) {
        const char *why = ita_crl_problem(crl, cert != NULL ? cert : leaf, issuer, at);
        fuzz_note("ita_crl_problem", why == NULL, why);
        if (cert != NULL)
            (void)ita_crl_problem(crl, leaf, cert, at);
        (void)X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(leaf));
    }
    X509_CRL_free(crl);
    X509_free(cert);
    free(der);
    free(crl_bytes);
    ERR_clear_error();
    return 0;
}
