/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TDX quote v4 and v5: tdx_quote_parse (header, v5 body descriptor, TD report body, signature data, QE
 * certification data, PCK chain) and, for what parses, tdx_quote_verify (quote and QE report signatures, the
 * report-data binding, the PCK chain to the pinned Intel SGX root or the local sim root) and
 * tdx_quote_is_debug. Exact-size input: a read past the quote is an ASan report.
 */
#include <openssl/pem.h>

#include "fuzz_common.h"
#include "tdx_quote.h"

static X509_STORE *roots;
static time_t at;

static void add_root(const char *name)
{
    FILE *f = fopen(fuzz_data_path(name), "r");
    X509 *x;
    FUZZ_REQUIRE(f != NULL);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    FUZZ_REQUIRE(x != NULL && X509_STORE_add_cert(roots, x));
    X509_free(x);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    long long t;
    FILE *f;

    (void)argc;
    (void)argv;
    FUZZ_REQUIRE((roots = X509_STORE_new()) != NULL);
    add_root("intel-sgx-root-ca.pem");
    add_root("sim-sgx-root-ca.pem");
    FUZZ_REQUIRE((f = fopen(fuzz_data_path("verify-at"), "r")) != NULL && fscanf(f, "%lld", &t) == 1);
    fclose(f);
    at = (time_t)t;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_dup(data, size);
    tdx_quote q;
    kg_err err;

    if (tdx_quote_parse(buf, size, &q, &err)) {
        int ok;
        (void)tdx_quote_is_debug(&q);
        ok = tdx_quote_verify(&q, buf, roots, at, NULL, &err);
        fuzz_note("tdx_quote_verify", ok, err.msg);
    } else {
        fuzz_note("tdx_quote_parse", 0, err.msg);
    }
    free(buf);
    fuzz_err_queue_empty();
    return 0;
}
