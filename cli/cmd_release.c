/* SPDX-License-Identifier: Apache-2.0 */
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

/* One line per step: its duration, then when it started and ended (ms after the release began),
 * so that steps run side by side show (the wrapping key is generated during the nonce). */
static void print_times(const kg_release_times *t, size_t nkeys)
{
    struct {
        const char *name;
        double ms, at;
    } rows[] = {{"wrapping-key", t->wrapkey, t->at.wrapkey}, {"nonce", t->nonce, t->at.nonce},
                {"evidence", t->evidence, t->at.evidence},   {"token", t->token, t->at.token},
                {"verify", t->verify, t->at.verify},         {"transfer", t->transfer, t->at.transfer},
                {"unwrap", t->unwrap, t->at.unwrap},         {"match", t->match, t->at.match}};

    fprintf(stderr, "  %-12s %12s %9s %9s\n", "step", "duration", "start", "end");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        fprintf(stderr, "  %-12s %9.1f ms %9.1f %9.1f%s\n", rows[i].name, rows[i].ms, rows[i].at,
                rows[i].at + rows[i].ms, i >= 5 && nkeys > 1 ? " (slowest key)" : "");
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

static char *pubkey_pem(const EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long len;

    if (bio != NULL && PEM_write_bio_PUBKEY(bio, key) && (len = BIO_get_mem_data(bio, &data)) > 0 &&
        (out = malloc((size_t)len + 1)) != NULL) {
        memcpy(out, data, (size_t)len);
        out[len] = '\0';
    }
    BIO_free(bio);
    return out;
}

/* Appends {key_id, ok, key_type, bits, public_key} or {key_id, ok: false, step, error}. */
static int add_key_json(cJSON *arr, const char *key_id, const EVP_PKEY *key, const kg_err *err)
{
    cJSON *o = cJSON_CreateObject();
    char *pem = NULL;

    if (o == NULL || !cJSON_AddItemToArray(arr, o))
        return 0;
    cJSON_AddStringToObject(o, "key_id", key_id);
    cJSON_AddBoolToObject(o, "ok", key != NULL);
    if (key == NULL) {
        cJSON_AddStringToObject(o, "step", kg_step_name((kg_step)err->step));
        cJSON_AddStringToObject(o, "error", err->msg);
        return 1;
    }
    if ((pem = pubkey_pem(key)) == NULL)
        return 0;
    cJSON_AddStringToObject(o, "key_type", EVP_PKEY_get0_type_name(key));
    cJSON_AddNumberToObject(o, "bits", EVP_PKEY_get_bits(key));
    cJSON_AddStringToObject(o, "public_key", pem);
    free(pem);
    return 1;
}

int kg_cmd_release(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"key-id", required_argument, NULL, 'k'},
                                         {"ref", required_argument, NULL, 'r'},
                                         {"kbs-url", required_argument, NULL, 'K'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {NULL, 0, NULL, 0}};
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
    const char *api_key;
    cJSON *doc = NULL, *jkeys = NULL;
    int c, verbose = 0, key_failed, rc = KG_EXIT_OK;

    memset(refs, 0, sizeof(refs));
    memset(keys, 0, sizeof(keys));
    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "k:r:K:v", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &common))
            continue;
        switch (c) {
        case 'k':
        case 'r':
            if (nids + nfiles == MAX_KEYS)
                return kg_cli_usage_error("release", "at most %d keys per run", MAX_KEYS);
            if (c == 'k')
                ids[nids++] = optarg;
            else
                files[nfiles++] = optarg;
            break;
        case 'K': kbs_url = optarg; break;
        case 'v': verbose = 1; break;
        case 'h':
            printf(
                "usage: keygate release (--key-id ID | --ref FILE)... [--kbs-url URL] [-v] [--config F] "
                "[--json]\n"
                "  Runs the release pipeline (wrapping key, nonce, evidence, token, verify, transfer,\n"
                "  unwrap, match) and prints each released key's PUBLIC key (PEM, in argument order).\n"
                "  One attestation serves every key of the run. -v prints the step timings on stderr\n"
                "  (duration, start and end in ms after the release began).\n"
                "  The private key is never printed. --json prints {keys: [{key_id, ok, public_key |\n"
                "  step, error}], steps_ms, steps_start_ms, attested}; the exit code is that of the first\n"
                "  failed key.\n");
            kg_cli_help_tail(stdout);
            return KG_EXIT_OK;
        default: return kg_cli_bad_option("release", argv);
        }
    }
    if (optind != argc)
        return kg_cli_usage_error("release", "unexpected argument '%s'", argv[optind]);
    if (nids + nfiles == 0)
        return kg_cli_usage_error("release", "--key-id ID or --ref FILE is required");
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    api_key = kg_cli_api_key(&common, &key_failed, &err);
    if (key_failed)
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
    if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL ||
        (api_key != NULL && !kg_release_ctx_set_api_key(ctx, api_key, &err))) {
        rc = kg_cli_fail(&err);
        goto end;
    }
    released = kg_release_keys(ctx, ref_ptrs, n, keys, errs, &times);
    if (verbose)
        print_times(&times, n);
    if (common.json &&
        ((doc = cJSON_CreateObject()) == NULL || (jkeys = cJSON_AddArrayToObject(doc, "keys")) == NULL)) {
        kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
        rc = kg_cli_fail(&err);
        goto end;
    }
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == NULL) {
            int code = common.json ? (errs[i].step >= KG_STEP_CONFIG ? errs[i].step : KG_STEP_INTERNAL)
                                   : kg_cli_fail(&errs[i]);
            if (common.json) {
                fprintf(stderr, "keygate: %s\n", errs[i].msg);
                add_key_json(jkeys, refs[i].key_id, NULL, &errs[i]);
            }
            if (rc == KG_EXIT_OK)
                rc = code;
            continue;
        }
        if (common.json ? !add_key_json(jkeys, refs[i].key_id, keys[i], NULL)
                        : !print_pubkey(stdout, keys[i]))
            if (rc == KG_EXIT_OK)
                rc = KG_STEP_INTERNAL;
    }
    if (doc != NULL) {
        kg_cli_add_times_json(doc, &times, 1);
        cJSON_AddBoolToObject(doc, "ok", rc == KG_EXIT_OK);
        cJSON_AddNumberToObject(doc, "released", (double)released);
        kg_cli_print_json(doc);
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
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"key-id", required_argument, NULL, 'k'},
                                         {"pubkey", required_argument, NULL, 'p'},
                                         {"kbs-url", required_argument, NULL, 'K'},
                                         {"kbs-type", required_argument, NULL, 'T'},
                                         {"description", required_argument, NULL, 'd'},
                                         {"out", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const char *key_id = NULL, *pubkey_file = NULL, *kbs_url = NULL, *kbs_type = NULL, *desc = NULL,
               *out = NULL;
    kg_keyref ref;
    kg_config cfg;
    kg_err err;
    EVP_PKEY *key = NULL;
    kg_release_ctx *ctx = NULL;
    char *pem = NULL;
    const char *api_key;
    int c, key_failed, rc = KG_EXIT_OK;

    memset(&ref, 0, sizeof(ref));
    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "k:p:K:T:d:o:", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, common))
            continue;
        switch (c) {
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
                "  to learn its public key. --json prints {ok, file, key_id, key_type, bits, public_key}.\n");
            kg_cli_help_tail(stdout);
            return KG_EXIT_OK;
        default: return kg_cli_bad_option("ref create", argv);
        }
    }
    if (optind != argc)
        return kg_cli_usage_error("ref create", "unexpected argument '%s'", argv[optind]);
    if (key_id == NULL || out == NULL)
        return kg_cli_usage_error("ref create", "--key-id ID and -o FILE are required");
    if (kbs_type != NULL && strcmp(kbs_type, "intel") != 0 && strcmp(kbs_type, "trustee") != 0)
        return kg_cli_usage_error("ref create", "--kbs-type is intel or trustee");
    if (!kg_cli_load_config(common, &cfg, &err))
        return kg_cli_fail(&err);
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
    } else {
        api_key = kg_cli_api_key(common, &key_failed, &err);
        if (key_failed || (ctx = kg_release_ctx_new(&cfg, &err)) == NULL ||
            (api_key != NULL && !kg_release_ctx_set_api_key(ctx, api_key, &err)) ||
            !kg_release_key(ctx, &ref, &key, NULL, &err))
            goto fail;
    }
    if (!kg_keyref_set_pubkey(&ref, key, &err) || !kg_keyref_to_pem(&ref, &pem, &err) ||
        !write_text_file(out, pem, &err))
        goto fail;
    if (common->json) {
        cJSON *j = cJSON_CreateObject();
        char *pub = pubkey_pem(key);
        cJSON_AddBoolToObject(j, "ok", 1);
        cJSON_AddStringToObject(j, "file", out);
        cJSON_AddStringToObject(j, "key_id", ref.key_id);
        cJSON_AddStringToObject(j, "key_type", EVP_PKEY_get0_type_name(key));
        cJSON_AddNumberToObject(j, "bits", EVP_PKEY_get_bits(key));
        cJSON_AddStringToObject(j, "public_key", pub ? pub : "");
        free(pub);
        rc = kg_cli_print_json(j);
    }
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
    static const struct option opts[] = {KG_CLI_COMMON_LONG, {NULL, 0, NULL, 0}};
    const char *file;
    kg_keyref ref;
    kg_err err;
    cJSON *j;
    char *pub;
    int c, rc;

    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, common))
            continue;
        if (c == 'h') {
            printf("usage: keygate ref show FILE [--json]\n"
                   "  Prints what a key reference holds: key id, KBS URL and type, description and the\n"
                   "  public key. Needs no configuration (--config is accepted and ignored) and no network.\n"
                   "  --json prints {key_id, kbs_url, kbs_type, description, key_type, bits, public_key}.\n");
            kg_cli_help_tail(stdout);
            return KG_EXIT_OK;
        }
        return kg_cli_bad_option("ref show", argv);
    }
    if (optind + 1 != argc)
        return kg_cli_usage_error("ref show", optind == argc ? "FILE is required" : "one FILE only");
    file = argv[optind];
    kg_err_clear(&err);
    if (!kg_keyref_load(file, &ref, &err))
        return kg_cli_fail(&err);
    if (common->json) {
        j = cJSON_CreateObject();
        pub = pubkey_pem(ref.pubkey);
        cJSON_AddStringToObject(j, "key_id", ref.key_id);
        cJSON_AddStringToObject(j, "kbs_url", ref.kbs_url);
        cJSON_AddStringToObject(j, "kbs_type", ref.kbs_type);
        cJSON_AddStringToObject(j, "description", ref.description);
        cJSON_AddStringToObject(j, "key_type", EVP_PKEY_get0_type_name(ref.pubkey));
        cJSON_AddNumberToObject(j, "bits", EVP_PKEY_get_bits(ref.pubkey));
        cJSON_AddStringToObject(j, "public_key", pub ? pub : "");
        free(pub);
        rc = kg_cli_print_json(j);
    } else {
        printf(
            "key id:      %s\nkbs url:     %s\nkbs type:    %s\ndescription: %s\npublic key:  %s, %d bits\n",
            ref.key_id, ref.kbs_url[0] ? ref.kbs_url : "(kbs_url of keygate.conf)",
            ref.kbs_type[0] ? ref.kbs_type : "(kbs_type of keygate.conf)", ref.description,
            EVP_PKEY_get0_type_name(ref.pubkey), EVP_PKEY_get_bits(ref.pubkey));
        print_pubkey(stdout, ref.pubkey);
        rc = KG_EXIT_OK;
    }
    kg_keyref_clear(&ref);
    return rc;
}

int kg_cmd_ref(int argc, char **argv, const kg_cli_common *common_in)
{
    kg_cli_common common = *common_in;

    /* common options may come before the verb: keygate ref --config F create ... */
    int i = 1;
    while (i < argc && argv[i][0] == '-' && strcmp(argv[i], "-h") != 0 && strcmp(argv[i], "--help") != 0) {
        if (strcmp(argv[i], "-j") == 0 || strcmp(argv[i], "--json") == 0)
            kg_cli_set_json(&common), i++;
        else if (i + 1 < argc && (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0))
            common.config_path = argv[i + 1], i += 2;
        else if (i + 1 < argc && (strcmp(argv[i], "-A") == 0 || strcmp(argv[i], "--api-key-file") == 0))
            common.api_key_file = argv[i + 1], i += 2;
        else
            break;
    }
    if (i < argc && (strcmp(argv[i], "create") == 0 || strcmp(argv[i], "show") == 0)) {
        optind = 0; /* full getopt re-initialisation */
        return strcmp(argv[i], "create") == 0 ? ref_create(argc - i, argv + i, &common)
                                              : ref_show(argc - i, argv + i, &common);
    }
    if (i < argc && (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)) {
        printf(
            "usage: keygate ref create --key-id ID [--pubkey PEM] ... -o FILE\n"
            "       keygate ref show FILE [--json]\n"
            "  Creates or shows a key reference; 'keygate ref create --help', 'keygate ref show --help'.\n");
        kg_cli_help_tail(stdout);
        return KG_EXIT_OK;
    }
    return kg_cli_usage_error("ref",
                              i < argc ? "unknown verb '%s': create or show" : "%screate or show is required",
                              i < argc ? argv[i] : "");
}
