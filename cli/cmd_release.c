/* keygate release | ref: the release pipeline and key references from the command line. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kg_release.h"

#define MAX_KEYS 64

static void print_times(const kg_release_times *t, size_t nkeys)
{
    struct {
        const char *name;
        double ms;
    } rows[] = {{"wrapping-key", t->wrapkey}, {"nonce", t->nonce},   {"evidence", t->evidence},
                {"token", t->token},          {"verify", t->verify}, {"transfer", t->transfer},
                {"unwrap", t->unwrap},        {"match", t->match}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        fprintf(stderr, "  %-12s %9.1f ms%s\n", rows[i].name, rows[i].ms,
                i >= 5 && nkeys > 1 ? " (slowest key)" : "");
    if (!t->attested)
        fprintf(stderr, "  (attestation reused)\n");
}

static int print_pubkey(FILE *fp, const EVP_PKEY *key)
{
    BIO *bio = BIO_new_fp(fp, BIO_NOCLOSE);
    int ok = bio != NULL && PEM_write_bio_PUBKEY(bio, key);
    BIO_free(bio);
    return ok;
}

int kg_cmd_release(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},  {"json", no_argument, NULL, 'j'},
        {"key-id", required_argument, NULL, 'k'},  {"ref", required_argument, NULL, 'r'},
        {"kbs-url", required_argument, NULL, 'K'}, {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    kg_cli_common common = *common_in;
    const char *ids[MAX_KEYS], *files[MAX_KEYS], *kbs_url = NULL;
    size_t nids = 0, nfiles = 0, n = 0, released;
    kg_keyref refs[MAX_KEYS];
    const kg_keyref *ref_ptrs[MAX_KEYS];
    EVP_PKEY *keys[MAX_KEYS];
    kg_err errs[MAX_KEYS], err;
    kg_release_times times;
    kg_release_ctx *ctx = NULL;
    kg_config cfg;
    int c, verbose = 0, rc = KG_EXIT_OK;

    memset(refs, 0, sizeof(refs));
    memset(keys, 0, sizeof(keys));
    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, "c:jk:r:K:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': common.config_path = optarg; break;
        case 'j': common.json = 1; break;
        case 'k':
        case 'r':
            if (nids + nfiles == MAX_KEYS) {
                fprintf(stderr, "keygate: at most %d keys per run\n", MAX_KEYS);
                return KG_EXIT_USAGE;
            }
            if (c == 'k')
                ids[nids++] = optarg;
            else
                files[nfiles++] = optarg;
            break;
        case 'K': kbs_url = optarg; break;
        case 'v': verbose = 1; break;
        case 'h':
            printf("usage: keygate release (--key-id ID | --ref FILE)... [--kbs-url URL] [-v] [--config F] "
                   "[--json]\n"
                   "  Runs the release pipeline (wrapping key, nonce, evidence, token, verify, transfer,\n"
                   "  unwrap, match) and prints each released key's PUBLIC key (PEM, in argument order).\n"
                   "  One attestation serves every key of the run. -v prints the step timings on stderr.\n"
                   "  The private key is never printed.\n");
            return KG_EXIT_OK;
        default: return KG_EXIT_USAGE;
        }
    }
    if (optind != argc || nids + nfiles == 0) {
        fprintf(stderr, "keygate: release needs --key-id or --ref (see keygate release --help)\n");
        return KG_EXIT_USAGE;
    }
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    for (size_t i = 0; i < nfiles; i++, n++)
        if (!kg_keyref_load(files[i], &refs[n], &err)) {
            rc = kg_cli_fail(&err);
            goto end;
        }
    for (size_t i = 0; i < nids; i++, n++)
        if (!kg_keyref_for_id(&cfg, ids[i], kbs_url, &refs[n], &err)) {
            rc = kg_cli_fail(&err);
            goto end;
        }
    for (size_t i = 0; i < n; i++) {
        if (kbs_url != NULL)
            snprintf(refs[i].kbs_url, sizeof(refs[i].kbs_url), "%s", kbs_url);
        ref_ptrs[i] = &refs[i];
    }
    if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL) {
        rc = kg_cli_fail(&err);
        goto end;
    }
    released = kg_release_keys(ctx, ref_ptrs, n, keys, errs, &times);
    if (verbose)
        print_times(&times, n);
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == NULL) {
            int code = kg_cli_fail(&errs[i]);
            if (rc == KG_EXIT_OK)
                rc = code;
            continue;
        }
        if (!print_pubkey(stdout, keys[i]) && rc == KG_EXIT_OK)
            rc = KG_STEP_INTERNAL;
    }
    if (verbose)
        fprintf(stderr, "released %zu of %zu key%s\n", released, n, n == 1 ? "" : "s");
end:
    for (size_t i = 0; i < MAX_KEYS; i++) {
        EVP_PKEY_free(keys[i]);
        kg_keyref_clear(&refs[i]);
    }
    kg_release_ctx_free(ctx);
    return rc;
}

static int write_text_file(const char *path, const char *text, kg_err *err)
{
    FILE *fp = fopen(path, "we");
    if (fp == NULL || fputs(text, fp) < 0 || fclose(fp) != 0)
        return kg_err_set(err, KG_STEP_CONFIG, "%s: cannot write", path);
    return 1;
}

static int ref_create(int argc, char **argv, kg_cli_common *common)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"key-id", required_argument, NULL, 'k'},
                                         {"pubkey", required_argument, NULL, 'p'},
                                         {"kbs-url", required_argument, NULL, 'K'},
                                         {"kbs-type", required_argument, NULL, 'T'},
                                         {"description", required_argument, NULL, 'd'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *key_id = NULL, *pubkey_file = NULL, *kbs_url = NULL, *kbs_type = NULL, *desc = NULL,
               *out = NULL;
    kg_keyref ref;
    kg_config cfg;
    kg_err err;
    EVP_PKEY *key = NULL;
    kg_release_ctx *ctx = NULL;
    char *pem = NULL;
    int c, rc = KG_EXIT_OK;

    memset(&ref, 0, sizeof(ref));
    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, "c:k:p:K:T:d:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': common->config_path = optarg; break;
        case 'k': key_id = optarg; break;
        case 'p': pubkey_file = optarg; break;
        case 'K': kbs_url = optarg; break;
        case 'T': kbs_type = optarg; break;
        case 'd': desc = optarg; break;
        case 'o': out = optarg; break;
        case 'h':
            printf(
                "usage: keygate ref create --key-id ID [--pubkey PEM] [--kbs-url URL] [--kbs-type "
                "intel|trustee]\n"
                "                          [--description TEXT] -o FILE\n"
                "  Writes a KEYGATE KEY REFERENCE. Without --pubkey it releases the key once (attestation)\n"
                "  to learn its public key.\n");
            return KG_EXIT_OK;
        default: return KG_EXIT_USAGE;
        }
    }
    if (optind != argc || key_id == NULL || out == NULL) {
        fprintf(stderr, "keygate: ref create needs --key-id and -o (see keygate ref create --help)\n");
        return KG_EXIT_USAGE;
    }
    if (!kg_cli_load_config(common, &cfg, &err))
        return kg_cli_fail(&err);
    if (kbs_type != NULL && strcmp(kbs_type, "intel") != 0 && strcmp(kbs_type, "trustee") != 0) {
        fprintf(stderr, "keygate: --kbs-type is intel or trustee\n");
        return KG_EXIT_USAGE;
    }
    if (!kg_keyref_for_id(&cfg, key_id, kbs_url, &ref, &err))
        goto fail;
    snprintf(ref.kbs_type, sizeof(ref.kbs_type), "%s", kbs_type ? kbs_type : "");
    snprintf(ref.description, sizeof(ref.description), "%s", desc ? desc : "");
    if (pubkey_file != NULL) {
        FILE *fp = fopen(pubkey_file, "re");
        key = fp ? PEM_read_PUBKEY(fp, NULL, NULL, NULL) : NULL;
        if (fp)
            fclose(fp);
        if (key == NULL) {
            kg_err_set(&err, KG_STEP_CONFIG, "%s: not a PEM public key", pubkey_file);
            goto fail;
        }
    } else if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL ||
               !kg_release_key(ctx, &ref, &key, NULL, &err)) {
        goto fail;
    }
    if (!kg_keyref_set_pubkey(&ref, key, &err) || !kg_keyref_to_pem(&ref, &pem, &err) ||
        !write_text_file(out, pem, &err))
        goto fail;
    goto end;
fail:
    rc = kg_cli_fail(&err);
end:
    free(pem);
    EVP_PKEY_free(key);
    kg_keyref_clear(&ref);
    kg_release_ctx_free(ctx);
    return rc;
}

static int ref_show(int argc, char **argv, kg_cli_common *common)
{
    kg_keyref ref;
    kg_err err;
    cJSON *j;
    char *s;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: keygate ref show FILE [--json]\n  Prints what a key reference holds.\n");
        return argc < 2 ? KG_EXIT_USAGE : KG_EXIT_OK;
    }
    if (argc > 2 && strcmp(argv[2], "--json") == 0)
        common->json = 1;
    if (!kg_keyref_load(argv[1], &ref, &err))
        return kg_cli_fail(&err);
    if (common->json) {
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "key_id", ref.key_id);
        cJSON_AddStringToObject(j, "kbs_url", ref.kbs_url);
        cJSON_AddStringToObject(j, "kbs_type", ref.kbs_type);
        cJSON_AddStringToObject(j, "description", ref.description);
        cJSON_AddStringToObject(j, "key_type", EVP_PKEY_get0_type_name(ref.pubkey));
        cJSON_AddNumberToObject(j, "bits", EVP_PKEY_get_bits(ref.pubkey));
        s = cJSON_Print(j);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(j);
    } else {
        printf(
            "key id:      %s\nkbs url:     %s\nkbs type:    %s\ndescription: %s\npublic key:  %s, %d bits\n",
            ref.key_id, ref.kbs_url[0] ? ref.kbs_url : "(kbs_url of keygate.conf)",
            ref.kbs_type[0] ? ref.kbs_type : "(kbs_type of keygate.conf)", ref.description,
            EVP_PKEY_get0_type_name(ref.pubkey), EVP_PKEY_get_bits(ref.pubkey));
        print_pubkey(stdout, ref.pubkey);
    }
    kg_keyref_clear(&ref);
    return KG_EXIT_OK;
}

int kg_cmd_ref(int argc, char **argv, const kg_cli_common *common_in)
{
    kg_cli_common common = *common_in;

    if (argc >= 2 && strcmp(argv[1], "create") == 0) {
        optind = 1;
        return ref_create(argc - 1, argv + 1, &common);
    }
    if (argc >= 2 && strcmp(argv[1], "show") == 0)
        return ref_show(argc - 1, argv + 1, &common);
    fprintf(stderr, "usage: keygate ref create|show ... (keygate ref create --help)\n");
    return KG_EXIT_USAGE;
}
