/* keygate evidence | token: pipeline steps 2-4 from the command line. */
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

#define MAX_USER_DATA (1024 * 1024) /* ITA's runtime_data limit */

typedef struct attest_args {
    const char *user_data_file;
    const char *out_file;
    int no_nonce;
    int steps;
    int claims;
} attest_args;

static int read_file(const char *path, uint8_t **out, size_t *len, kg_err *err)
{
    FILE *fp = fopen(path, "rbe");
    uint8_t *buf = NULL;
    size_t n;

    *out = NULL;
    *len = 0;
    if (fp == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "%s: %s", path, strerror(errno));
    buf = malloc(MAX_USER_DATA + 1);
    if (buf == NULL) {
        fclose(fp);
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    }
    n = fread(buf, 1, MAX_USER_DATA + 1, fp);
    fclose(fp);
    if (n > MAX_USER_DATA) {
        free(buf);
        return kg_err_set(err, KG_STEP_CONFIG, "%s: user data larger than 1 MiB", path);
    }
    *out = buf;
    *len = n;
    return 1;
}

/* Parses the subcommand's options. Returns -1 to continue, else an exit code. */
static int parse_args(int argc, char **argv, kg_cli_common *common, attest_args *a, int is_token)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"user-data-file", required_argument, NULL, 'u'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"no-nonce", no_argument, NULL, 'N'},
                                         {"steps", no_argument, NULL, 's'},
                                         {"claims", no_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    while ((c = getopt_long(argc, argv, "c:ju:o:NsCh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': common->config_path = optarg; break;
        case 'j': common->json = 1; break;
        case 'u': a->user_data_file = optarg; break;
        case 'o': a->out_file = optarg; break;
        case 'N': a->no_nonce = 1; break;
        case 's': a->steps = 1; break;
        case 'C': a->claims = 1; break;
        case 'h':
            if (is_token)
                printf(
                    "usage: keygate token [--config F] [--json] [--user-data-file F] [--steps] [--claims]\n"
                    "  Gets an ITA nonce, collects evidence binding it and the user data, and asks ITA\n"
                    "  for an attestation token, printed on stdout. --steps prints each step with its\n"
                    "  time on stderr; --claims prints the decoded claims (NOT verified: verification\n"
                    "  is a separate step).\n");
            else
                printf(
                    "usage: keygate evidence [--config F] [--json] [--user-data-file F] [--no-nonce] [--out "
                    "F]\n"
                    "  Collects TDX evidence for a fresh ITA nonce (or none with --no-nonce) and the user\n"
                    "  data, and prints it as the ITA v2 'tdx' request object; --out writes the raw "
                    "quote.\n");
            return KG_EXIT_OK;
        default: return KG_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "keygate: unexpected argument '%s'\n", argv[optind]);
        return KG_EXIT_USAGE;
    }
    if (is_token && (a->no_nonce || a->out_file)) {
        fprintf(stderr, "keygate: --no-nonce and --out belong to 'keygate evidence'\n");
        return KG_EXIT_USAGE;
    }
    return -1;
}

static int add_b64(cJSON *obj, const char *name, const uint8_t *p, size_t len)
{
    char *s = kg_b64_encode(p, len);
    int ok = s != NULL && cJSON_AddStringToObject(obj, name, s) != NULL;
    free(s);
    return ok;
}

static void print_steps(const kg_attestation *a, const kg_err *err, int failed)
{
    struct {
        kg_step step;
        double ms;
    } done[] = {
        {KG_STEP_NONCE, a->ms_nonce}, {KG_STEP_EVIDENCE, a->ms_evidence}, {KG_STEP_TOKEN, a->ms_token}};
    for (size_t i = 0; i < sizeof(done) / sizeof(done[0]); i++) {
        if (failed && err->step == done[i].step) {
            fprintf(stderr, "  %-9s FAIL  %s\n", kg_step_name(done[i].step), err->msg);
            return;
        }
        if (done[i].ms <= 0 && failed)
            return;
        fprintf(stderr, "  %-9s ok    %8.1f ms\n", kg_step_name(done[i].step), done[i].ms);
    }
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
    int rc;

    memset(&att, 0, sizeof(att));
    memset(&jws, 0, sizeof(jws));
    kg_err_clear(&err);
    if ((rc = parse_args(argc, argv, &common, &args, 1)) >= 0)
        return rc;
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    if (args.user_data_file && !read_file(args.user_data_file, &ud, &ud_len, &err))
        return kg_cli_fail(&err);
    if (!kg_attest(&cfg, ud, ud_len, &att, &err)) {
        if (args.steps)
            print_steps(&att, &err, 1);
        rc = kg_cli_fail(&err);
        goto end;
    }
    if (args.steps)
        print_steps(&att, &err, 0);
    if (!kg_jws_split(att.token, &jws, &err)) {
        rc = kg_cli_fail(&err);
        goto end;
    }
    if (common.json) {
        cJSON *claims = cJSON_Parse(jws.payload_json), *header = cJSON_Parse(jws.header_json);
        out = cJSON_CreateObject();
        cJSON_AddStringToObject(out, "token", att.token);
        cJSON_AddBoolToObject(out, "verified", 0);
        cJSON_AddItemToObject(out, "header", header ? header : cJSON_CreateNull());
        cJSON_AddItemToObject(out, "claims", claims ? claims : cJSON_CreateNull());
        {
            cJSON *st = cJSON_AddObjectToObject(out, "steps_ms");
            cJSON_AddNumberToObject(st, "nonce", att.ms_nonce);
            cJSON_AddNumberToObject(st, "evidence", att.ms_evidence);
            cJSON_AddNumberToObject(st, "token", att.ms_token);
        }
        char *s = cJSON_Print(out);
        if (s != NULL)
            printf("%s\n", s);
        free(s);
    } else if (args.claims) {
        cJSON *claims = cJSON_Parse(jws.payload_json);
        char *s = claims ? cJSON_Print(claims) : NULL;
        fprintf(stderr, "claims (decoded, NOT verified):\n");
        printf("%s\n", s ? s : jws.payload_json);
        free(s);
        cJSON_Delete(claims);
    } else {
        printf("%s\n", att.token);
    }
    rc = KG_EXIT_OK;
end:
    cJSON_Delete(out);
    kg_jws_clear(&jws);
    kg_attestation_clear(&att);
    free(ud);
    return rc;
}

int kg_cmd_evidence(int argc, char **argv, const kg_cli_common *common_in)
{
    kg_cli_common common = *common_in;
    attest_args args;
    kg_config cfg;
    kg_evidence ev;
    ita_nonce nonce;
    ita_client *ita = NULL;
    kg_err err;
    uint8_t *ud = NULL;
    size_t ud_len = 0;
    cJSON *out = NULL, *vn;
    char *s = NULL;
    int rc;

    memset(&ev, 0, sizeof(ev));
    memset(&nonce, 0, sizeof(nonce));
    kg_err_clear(&err);
    if ((rc = parse_args(argc, argv, &common, &args, 0)) >= 0)
        return rc;
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    if (args.user_data_file && !read_file(args.user_data_file, &ud, &ud_len, &err))
        return kg_cli_fail(&err);
    if (!args.no_nonce) {
        ita_client_opts copts = {cfg.ita_api_url, cfg.ita_base_url, cfg.ita_api_key_file, {0}};
        kg_config_http_opts(&cfg, &copts.http);
        if ((ita = ita_client_new(&copts, &err)) == NULL || !ita_get_nonce(ita, &nonce, &err))
            goto fail;
    }
    if (!kg_collect_evidence(&cfg, args.no_nonce ? NULL : &nonce, ud, ud_len, &ev, &err))
        goto fail;
    if (args.out_file) {
        FILE *fp = fopen(args.out_file, "wbe");
        if (fp == NULL || fwrite(ev.quote, 1, ev.quote_len, fp) != ev.quote_len || fclose(fp) != 0) {
            kg_err_set(&err, KG_STEP_EVIDENCE, "%s: cannot write the quote", args.out_file);
            goto fail;
        }
    }
    out = cJSON_CreateObject();
    if (out == NULL || !add_b64(out, "quote", ev.quote, ev.quote_len) ||
        (ev.runtime_data_len > 0 && !add_b64(out, "runtime_data", ev.runtime_data, ev.runtime_data_len)) ||
        !add_b64(out, "report_data", ev.report_data, sizeof(ev.report_data))) {
        kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
        goto fail;
    }
    if (!args.no_nonce) {
        vn = cJSON_AddObjectToObject(out, "verifier_nonce");
        if (vn == NULL || !add_b64(vn, "val", nonce.val, nonce.val_len) ||
            !add_b64(vn, "iat", nonce.iat, nonce.iat_len) ||
            !add_b64(vn, "signature", nonce.signature, nonce.signature_len)) {
            kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
            goto fail;
        }
    }
    s = common.json ? cJSON_PrintUnformatted(out) : cJSON_Print(out);
    printf("%s\n", s ? s : "{}");
    rc = KG_EXIT_OK;
    goto end;
fail:
    rc = kg_cli_fail(&err);
end:
    free(s);
    cJSON_Delete(out);
    kg_evidence_clear(&ev);
    ita_nonce_clear(&nonce);
    ita_client_free(ita);
    free(ud);
    return rc;
}
