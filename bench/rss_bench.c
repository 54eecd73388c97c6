/* SPDX-License-Identifier: Apache-2.0 */
/*
 * P5: resident memory added by loading the keygate provider and keys.
 *
 *   rss_bench --cnf openssl.cnf KEYFILE...
 *
 * Prints JSON with VmRSS (kB, /proc/self/status) at three points: after OpenSSL's own
 * initialisation with the default provider (base), after loading the configuration in --cnf
 * (which loads the keygate provider, if it names it), and after loading every KEYFILE with
 * PEM_read_bio_PrivateKey (keygate references are released: attestation, transfer, unwrap).
 * Run it with key references for keygate and with plain PEM files for the baseline.
 *
 *   rss_bench --dlopen LIB
 *
 * What loading one shared library costs on the same base: VmRSS (and the smaps split) before
 * and after dlopen(LIB) and, for libcurl, curl_global_init(CURL_GLOBAL_DEFAULT) as keygate's
 * first HTTP request runs it. P5 uses it with libcurl.so.4 to size what loading libcurl only
 * at the first release could save.
 */
#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 64

/* Rss summed over /proc/self/smaps: *libs = mappings of shared objects other than keygate.so
 * (libcurl and its dependency tree, libssl, ...), *own = everything else (keygate.so, heap,
 * anonymous and locked memory such as OpenSSL's secure heap). */
static void smaps_kb(long *libs, long *own)
{
    char line[512], name[400] = "";
    FILE *fp = fopen("/proc/self/smaps", "r");

    *libs = *own = 0;
    while (fp != NULL && fgets(line, sizeof(line), fp) != NULL) {
        unsigned long lo, hi;
        char path[400] = "";
        long kb;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %399s", &lo, &hi, path) >= 2) {
            snprintf(name, sizeof(name), "%s", path);
        } else if (strncmp(line, "Rss:", 4) == 0 && sscanf(line + 4, "%ld", &kb) == 1) {
            if (strstr(name, ".so") != NULL && strstr(name, "/keygate.so") == NULL)
                *libs += kb;
            else
                *own += kb;
        }
    }
    if (fp != NULL)
        fclose(fp);
}

static long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *fp = fopen("/proc/self/status", "r");

    while (fp != NULL && fgets(line, sizeof(line), fp) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (fp != NULL)
        fclose(fp);
    return kb;
}

/* OpenSSL with its default provider and nothing else: what any TLS server has anyway */
static int base_init(void)
{
    EVP_PKEY *warm;

    if (!OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) ||
        OSSL_PROVIDER_load(NULL, "default") == NULL)
        return 0;
    warm = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); /* touch the default provider */
    EVP_PKEY_free(warm);
    return 1;
}

/* --dlopen LIB: the library stays loaded until exit (the process ends right after). */
static int dlopen_only(const char *lib)
{
    long base, after, libs0, own0, libs1, own1;
    int (*global_init)(long);
    void *h;

    if (!base_init())
        return 1;
    base = rss_kb();
    smaps_kb(&libs0, &own0);
    if ((h = dlopen(lib, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        fprintf(stderr, "rss_bench: dlopen %s: %s\n", lib, dlerror());
        return 1;
    }
    *(void **)&global_init = dlsym(h, "curl_global_init");
    if (global_init != NULL && global_init(3 /* CURL_GLOBAL_DEFAULT */) != 0) {
        fprintf(stderr, "rss_bench: curl_global_init failed\n");
        return 1;
    }
    after = rss_kb();
    smaps_kb(&libs1, &own1);
    printf("{\"base_kb\": %ld, \"after_dlopen_kb\": %ld, \"global_init\": %s, \"libs_added_kb\": %ld, "
           "\"own_added_kb\": %ld}\n",
           base, after, global_init != NULL ? "true" : "false", libs1 - libs0, own1 - own0);
    return 0;
}

int main(int argc, char **argv)
{
    EVP_PKEY *keys[MAX_KEYS] = {NULL};
    long base, after_provider, after_keys, libs0, own0, libs1, own1;
    int n = 0, rc = 1;

    if (argc == 3 && strcmp(argv[1], "--dlopen") == 0)
        return dlopen_only(argv[2]);
    if (argc < 3 || strcmp(argv[1], "--cnf") != 0) {
        fprintf(stderr, "usage: rss_bench --cnf openssl.cnf KEYFILE... | --dlopen LIB\n");
        return 2;
    }
    if (!base_init())
        goto err;
    base = rss_kb();
    smaps_kb(&libs0, &own0);
    if (!CONF_modules_load_file(argv[2], NULL, 0))
        goto err;
    after_provider = rss_kb();
    for (int i = 3; i < argc && n < MAX_KEYS; i++) {
        BIO *bio = BIO_new_file(argv[i], "r");
        keys[n] = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (keys[n++] == NULL) {
            fprintf(stderr, "rss_bench: %s: cannot load the private key\n", argv[i]);
            goto err;
        }
    }
    after_keys = rss_kb();
    smaps_kb(&libs1, &own1);
    printf("{\"base_kb\": %ld, \"after_provider_kb\": %ld, \"after_keys_kb\": %ld, \"keys\": %d, "
           "\"libs_added_kb\": %ld, \"own_added_kb\": %ld}\n",
           base, after_provider, after_keys, n, libs1 - libs0, own1 - own0);
    rc = 0;
err:
    if (rc != 0)
        ERR_print_errors_fp(stderr);
    for (int i = 0; i < n; i++)
        EVP_PKEY_free(keys[i]);
    return rc;
}
