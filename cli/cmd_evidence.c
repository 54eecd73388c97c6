/* keygate evidence: pipeline step 3 (with the nonce of step 2) from the command line. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kg_attest.h"
#include "kg_b64.h"

typedef struct evidence_args {
    const char *user_data_file;
    const char *out_file;
    int no_nonce;
} evidence_args;

/* Returns -1 to continue, else an exit code. */
static int parse_args(int argc, char **argv, kg_cli_common *common, evidence_args *a)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"user-data-file", required_argument, NULL, 'u'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"no-nonce", no_argument, NULL, 'N'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    while ((c = getopt_long(argc, argv, "c:ju:o:Nh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': common->config_path = optarg; break;
        case 'j': common->json = 1; break;
        case 'u': a->user_data_file = optarg; break;
        case 'o': a->out_file = optarg; break;
        case 'N': a->no_nonce = 1; break;
        case 'h':
            printf(
                "usage: keygate evidence [--config F] [--json] [--user-data-file F] [--no-nonce] [--out F]\n"
                "  Collects TDX evidence for a fresh ITA nonce (or none with --no-nonce) and the user\n"
                "  data, and prints it as the ITA v2 'tdx' request object; --out writes the raw quote.\n");
            return KG_EXIT_OK;
        default: return KG_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "keygate: unexpected argument '%s'\n", argv[optind]);
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

int kg_cmd_evidence(int argc, char **argv, const kg_cli_common *common_in)
{
    kg_cli_common common = *common_in;
    evidence_args args;
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
    if ((rc = parse_args(argc, argv, &common, &args)) >= 0)
        return rc;
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    if (args.user_data_file &&
        !kg_cli_read_file(args.user_data_file, KG_CLI_MAX_USER_DATA, &ud, &ud_len, &err))
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
