/* SPDX-License-Identifier: Apache-2.0 */
/* keygate token: pipeline steps 2-5 from the command line. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kg_attest.h"
#include "kg_b64.h"
#include "kg_jws.h"

typedef struct attest_args {
    const char *user_data_file;
    int steps;
    int claims;
    int no_verify;
} attest_args;

/* Parses the subcommand's options. Returns -1 to continue, else an exit code. */
static int parse_args(int argc, char **argv, kg_cli_common *common, attest_args *a)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"user-data-file", required_argument, NULL, 'u'},
                                         {"steps", no_argument, NULL, 's'},
                                         {"claims", no_argument, NULL, 'C'},
                                         {"no-verify", no_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "u:sCn", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, common))
            continue;
        switch (c) {
        case 'u': a->user_data_file = optarg; break;
        case 's': a->steps = 1; break;
        case 'C': a->claims = 1; break;
        case 'n': a->no_verify = 1; break;
        case 'h':
            printf("usage: keygate token [--config F] [--json] [--user-data-file F] [--steps] [--claims]\n"
                   "                     [--no-verify]\n"
                   "  Gets an ITA nonce, collects evidence binding it and the user data, asks ITA for an\n"
                   "  attestation token and verifies it (pinned root, CRLs, claims, binding, local policy).\n"
                   "  The token goes to stdout, its request-id/trace-id to stderr. --claims prints the\n"
                   "  verified claims instead; --steps prints each step with its time on stderr;\n"
                   "  --no-verify skips verification (the token is then NOT to be trusted).\n"
                   "  --json prints {token, verified, header, claims, request_id, trace_id, steps_ms}.\n");
            kg_cli_help_tail(stdout);
            return KG_EXIT_OK;
        default: return kg_cli_bad_option("token", argv);
        }
    }
    if (optind != argc)
        return kg_cli_usage_error("token", "unexpected argument '%s'", argv[optind]);
    return -1;
}

static void print_steps(const kg_attestation *a, const kg_err *err, int failed, int verify)
{
    struct {
        kg_step step;
        double ms;
    } done[] = {{KG_STEP_NONCE, a->ms_nonce},
                {KG_STEP_EVIDENCE, a->ms_evidence},
                {KG_STEP_TOKEN, a->ms_token},
                {KG_STEP_VERIFY, a->ms_verify}};
    size_t n = verify ? 4 : 3;

    for (size_t i = 0; i < n; i++) {
        if (failed && err->step == (int)done[i].step) {
            fprintf(stderr, "  %-9s FAIL  %s\n", kg_step_name(done[i].step), err->msg);
            return;
        }
        if (failed && done[i].ms <= 0)
            return;
        fprintf(stderr, "  %-9s ok    %8.1f ms\n", kg_step_name(done[i].step), done[i].ms);
    }
}

static void print_ids(const kg_attestation *a)
{
    if (a->token_request_id[0] != '\0' || a->token_trace_id[0] != '\0')
        fprintf(stderr, "request-id: %s\ntrace-id: %s\n", a->token_request_id[0] ? a->token_request_id : "-",
                a->token_trace_id[0] ? a->token_trace_id : "-");
}

int kg_cmd_token(int argc, char **argv, const kg_cli_common *common_in)
{
    kg_cli_common common = *common_in;
    attest_args args;
    kg_config cfg;
    kg_attestation att;
    kg_jws jws;
    kg_err err;
    uint8_t *ud = NULL;
    size_t ud_len = 0;
    cJSON *out = NULL;
    char *s = NULL;
    const char *api_key;
    int rc, key_failed;

    memset(&att, 0, sizeof(att));
    memset(&jws, 0, sizeof(jws));
    kg_err_clear(&err);
    if ((rc = parse_args(argc, argv, &common, &args)) >= 0)
        return rc;
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    if (args.user_data_file &&
        !kg_cli_read_file(args.user_data_file, KG_CLI_MAX_USER_DATA, &ud, &ud_len, &err))
        return kg_cli_fail(&err);
    api_key = kg_cli_api_key(&common, &key_failed, &err);
    if (key_failed) {
        rc = kg_cli_fail(&err);
        goto end;
    }
    if (!kg_attest_key(&cfg, ud, ud_len, !args.no_verify, api_key, &att, &err)) {
        if (args.steps)
            print_steps(&att, &err, 1, !args.no_verify);
        print_ids(&att);
        rc = kg_cli_fail(&err);
        goto end;
    }
    if (args.steps)
        print_steps(&att, &err, 0, !args.no_verify);
    print_ids(&att);
    if (!kg_jws_split(att.token, &jws, &err)) {
        rc = kg_cli_fail(&err);
        goto end;
    }
    if (common.json) {
        cJSON *st;
        out = cJSON_CreateObject();
        if (out == NULL)
            goto oom;
        cJSON_AddStringToObject(out, "token", att.token);
        cJSON_AddBoolToObject(out, "verified", att.verified);
        cJSON_AddItemToObject(out, "header", cJSON_Parse(jws.header_json));
        cJSON_AddItemToObject(out, "claims", cJSON_Parse(jws.payload_json));
        cJSON_AddStringToObject(out, "request_id", att.token_request_id);
        cJSON_AddStringToObject(out, "trace_id", att.token_trace_id);
        st = cJSON_AddObjectToObject(out, "steps_ms");
        cJSON_AddNumberToObject(st, "nonce", att.ms_nonce);
        cJSON_AddNumberToObject(st, "evidence", att.ms_evidence);
        cJSON_AddNumberToObject(st, "token", att.ms_token);
        if (att.verified)
            cJSON_AddNumberToObject(st, "verify", att.ms_verify);
        s = cJSON_Print(out);
    } else if (args.claims) {
        cJSON *claims = cJSON_Parse(jws.payload_json);
        s = claims ? cJSON_Print(claims) : NULL;
        cJSON_Delete(claims);
        if (!att.verified)
            fprintf(stderr, "claims (decoded, NOT verified: --no-verify):\n");
    } else {
        s = strdup(att.token);
    }
    rc = kg_cli_print_text(s, &err);
    s = NULL;
    goto end;
oom:
    kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
    rc = kg_cli_fail(&err);
end:
    free(s);
    cJSON_Delete(out);
    kg_jws_clear(&jws);
    kg_attestation_clear(&att);
    free(ud);
    return rc;
}
