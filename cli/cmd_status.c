/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate status --ref FILE: would the current policies still release this key?
 *
 * Runs the pipeline in probe mode (kg_release_ctx_set_probe): wrapping key, nonce, evidence,
 * token, our verification and local policy, then the KBS call last. The Intel KBS has no dry
 * run, so the transfer really happens (the KBS logs it) and its answer decides; the wrapped
 * reply is dropped without being unwrapped, and the one-time wrapping key is freed (zeroized),
 * so no private key ever exists in this process. Trustee replies are JWE the protocol decrypts:
 * the key is freed at once. Nothing is printed or stored but the verdict.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kg_lease.h"
#include "kg_release.h"

static void help(void)
{
    printf("usage: keygate status --ref FILE [--kbs-url URL] [--config F] [--json]\n"
           "  Tells whether the current policies would still release the referenced key, without\n"
           "  releasing it: runs the attestation (nonce, evidence, ITA token, our verification and\n"
           "  local policy) and then, last, the KBS transfer. The Intel KBS has no dry run: the\n"
           "  transfer is performed (and logged by the KBS) and its answer is the verdict, but the\n"
           "  wrapped reply is discarded without unwrapping and the one-time wrapping key is\n"
           "  zeroized, so the private key never exists here. (Trustee: its reply is decrypted by\n"
           "  the protocol and zeroized at once.)\n"
           "  Prints 'key ID: would be released' (exit 0), or 'key ID: would NOT be released: ...'\n"
           "  naming the refusing step: transfer (16) = the KBS denies (policy changed, key\n"
           "  deleted), verify (15) = the token no longer satisfies the local policy; other codes\n"
           "  mean the check itself could not run. --json prints {ok, key_id, would_release,\n"
           "  revoked, step, error, http_status, request_id, steps_ms, steps_start_ms}.\n");
    kg_cli_help_tail(stdout);
}

static int print_json(const char *key_id, int would, const kg_err *err, const kg_release_times *t)
{
    cJSON *doc = cJSON_CreateObject();

    if (doc == NULL)
        return KG_STEP_INTERNAL;
    cJSON_AddBoolToObject(doc, "ok", would);
    cJSON_AddStringToObject(doc, "key_id", key_id);
    cJSON_AddBoolToObject(doc, "would_release", would);
    cJSON_AddBoolToObject(doc, "revoked", !would && kg_lease_err_is_revocation(err));
    if (!would) {
        cJSON_AddStringToObject(doc, "step", kg_step_name((kg_step)err->step));
        cJSON_AddStringToObject(doc, "error", err->msg);
        cJSON_AddNumberToObject(doc, "http_status", (double)err->http_status);
        cJSON_AddStringToObject(doc, "request_id", err->request_id);
    }
    kg_cli_add_times_json(doc, t, 0); /* a probe stops after the transfer */
    return kg_cli_print_json(doc);
}

int kg_cmd_status(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"ref", required_argument, NULL, 'r'},
                                         {"kbs-url", required_argument, NULL, 'K'},
                                         {NULL, 0, NULL, 0}};
    kg_cli_common common = *common_in;
    const char *file = NULL, *kbs_url = NULL, *api_key;
    kg_release_ctx *ctx = NULL;
    kg_release_times times;
    kg_keyref ref;
    kg_config cfg;
    EVP_PKEY *key = NULL;
    kg_err err;
    int c, key_failed, would, rc;

    memset(&ref, 0, sizeof(ref));
    memset(&times, 0, sizeof(times));
    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "r:K:", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &common))
            continue;
        switch (c) {
        case 'r': file = optarg; break;
        case 'K': kbs_url = optarg; break;
        case 'h': help(); return KG_EXIT_OK;
        default: return kg_cli_bad_option("status", argv);
        }
    }
    if (optind != argc)
        return kg_cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
    if (file == NULL)
        return kg_cli_usage_error("status", "--ref FILE is required");
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    api_key = kg_cli_api_key(&common, &key_failed, &err);
    if (key_failed)
        return kg_cli_fail(&err);
    if (!kg_keyref_load(file, &ref, &err))
        return kg_cli_fail(&err);
    if (kbs_url != NULL)
        snprintf(ref.kbs_url, sizeof(ref.kbs_url), "%s", kbs_url);
    if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL ||
        (api_key != NULL && !kg_release_ctx_set_api_key(ctx, api_key, &err))) {
        rc = kg_cli_fail(&err);
        goto end;
    }
    kg_release_ctx_set_probe(ctx, 1);
    would = kg_release_key(ctx, &ref, &key, &times, &err);
    EVP_PKEY_free(key); /* NULL in probe mode */
    if (common.json) {
        if (!would)
            fprintf(stderr, "keygate: %s\n", err.msg);
        rc = print_json(ref.key_id, would, &err, &times);
        if (!would && rc == KG_EXIT_OK)
            rc = err.step >= KG_STEP_CONFIG ? err.step : KG_STEP_INTERNAL;
    } else if (would) {
        printf("key %s: would be released (attestation verified, local policy met, KBS transfer allowed)\n",
               ref.key_id);
        rc = KG_EXIT_OK;
    } else if (kg_lease_err_is_revocation(&err)) {
        printf("key %s: would NOT be released: %s\n", ref.key_id, err.msg);
        rc = err.step;
    } else {
        rc = kg_cli_fail(&err); /* the check itself failed: not a verdict */
    }
end:
    kg_release_ctx_free(ctx);
    kg_keyref_clear(&ref);
    return rc;
}
