/* SPDX-License-Identifier: Apache-2.0 */
/* keygate doctor: runs every check of doctor.h and prints one ✓/✗/- line each, with the fix. */
#define _GNU_SOURCE /* secure_getenv */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor.h"

typedef doctor_status (*doctor_fn)(doctor_ctx *d, doctor_result *r);

static const struct {
    const char *name;
    doctor_fn fn;
} checks[] = {
    {"config", doctor_check_config},           {"files", doctor_check_files},
    {"platform", doctor_check_platform},       {"ita-api", doctor_check_ita},
    {"ita-certs", doctor_check_jwks},          {"clock", doctor_check_clock},
    {"trust-anchor", doctor_check_anchor},     {"kbs", doctor_check_kbs},
    {"openssl-cnf", doctor_check_openssl_cnf}, {"p11-kit", doctor_check_p11kit},
    {"release-test", doctor_check_release},
};

static void help(void)
{
    printf("usage: keygate doctor [--config F] [--json] [--api-key-file F|-] [--ref FILE]...\n"
           "                      [--openssl-conf F] [--release-test KEY-ID|REF]\n"
           "  Checks the installation and prints one line per check, with the fix for each failure:\n"
           "    config        keygate.conf loads and passes its checks\n"
           "    files         API key file not readable by group/others; trust anchor, tls_ca_file and\n"
           "                  the --ref key references readable\n"
           "    platform      the adapter produces a quote: configfs-tsm with provider tdx_guest (tdx),\n"
           "                  /dev/tdx_guest (tdx-ioctl), the vTPM NV indices + IMDS (azure-tdx), or sim\n"
           "    ita-api       a nonce call: ITA reachable, TLS verified, API key accepted\n"
           "    ita-certs     the JWKS at {ita_base_url}/certs\n"
           "    clock         local clock against ITA's Date header (within token_leeway_s)\n"
           "    trust-anchor  ita_trust_anchor is a valid CA and the JWKS chain leads to it\n"
           "    kbs           the KBS is reachable with TLS verified (Intel: GET /kbs/v1/version)\n"
           "    openssl-cnf   'openssl list -providers' with the same OPENSSL_CONF shows keygate active\n"
           "                  (--openssl-conf F, else $OPENSSL_CONF, else OpenSSL's default file)\n"
           "    p11-kit       'p11-kit list-modules' shows the keygate module (skipped when not registered)\n"
           "    release-test  only with --release-test: releases that key once (public key kept only)\n"
           "  No key is released and no KBS transfer is made unless --release-test is given.\n"
           "  Lines: '✓' passed, '✗' failed (followed by 'fix: ...'), '-' skipped. --json prints\n"
           "  {ok, checks: [{name, status: ok|fail|skip, detail, fix}]}. Exit 0 when nothing failed,\n"
           "  else 21 (or 1 for a usage error).\n");
    kg_cli_help_tail(stdout);
}

static const char *status_name(doctor_status st)
{
    return st == DOCTOR_OK ? "ok" : st == DOCTOR_FAIL ? "fail" : "skip";
}

int kg_cmd_doctor(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"ref", required_argument, NULL, 'r'},
                                         {"openssl-conf", required_argument, NULL, 'o'},
                                         {"release-test", required_argument, NULL, 'R'},
                                         {NULL, 0, NULL, 0}};
    doctor_ctx *d = calloc(1, sizeof(*d));
    cJSON *doc = NULL, *arr = NULL;
    const char *path;
    int c, failed = 0, key_failed, rc;
    kg_err err;

    if (d == NULL) {
        fprintf(stderr, "keygate: internal: out of memory\n");
        return KG_STEP_INTERNAL;
    }
    d->common = *common_in;
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "r:o:R:", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &d->common))
            continue;
        switch (c) {
        case 'r':
            if (d->nrefs == DOCTOR_MAX_REFS) {
                free(d);
                return kg_cli_usage_error("doctor", "at most %d --ref", DOCTOR_MAX_REFS);
            }
            d->refs[d->nrefs++] = optarg;
            break;
        case 'o': d->openssl_conf = optarg; break;
        case 'R': d->release_test = optarg; break;
        case 'h':
            free(d);
            help();
            return KG_EXIT_OK;
        default: free(d); return kg_cli_bad_option("doctor", argv);
        }
    }
    if (optind != argc) {
        rc = kg_cli_usage_error("doctor", "unexpected argument '%s'", argv[optind]);
        free(d);
        return rc;
    }
    path = d->common.config_path ? d->common.config_path : secure_getenv("KEYGATE_CONF");
    snprintf(d->config_path, sizeof(d->config_path), "%s",
             path != NULL && path[0] != '\0' ? path : "/etc/keygate/keygate.conf");
    kg_err_clear(&err);
    d->api_key = kg_cli_api_key(&d->common, &key_failed, &err);
    if (key_failed) {
        free(d);
        return kg_cli_fail(&err);
    }
    if (d->common.json &&
        ((doc = cJSON_CreateObject()) == NULL || (arr = cJSON_AddArrayToObject(doc, "checks")) == NULL)) {
        cJSON_Delete(doc);
        free(d);
        fprintf(stderr, "keygate: internal: out of memory\n");
        return KG_STEP_INTERNAL;
    }
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        doctor_result r;

        if (checks[i].fn == doctor_check_release && d->release_test == NULL)
            continue; /* never releases a key unless asked */
        memset(&r, 0, sizeof(r));
        checks[i].fn(d, &r);
        failed += r.status == DOCTOR_FAIL;
        if (arr != NULL) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToArray(arr, o);
            cJSON_AddStringToObject(o, "name", checks[i].name);
            cJSON_AddStringToObject(o, "status", status_name(r.status));
            cJSON_AddStringToObject(o, "detail", r.detail);
            cJSON_AddStringToObject(o, "fix", r.status == DOCTOR_OK ? "" : r.fix);
            continue;
        }
        printf("%s %-12s %s\n",
               r.status == DOCTOR_OK     ? "✓"
               : r.status == DOCTOR_FAIL ? "✗"
                                         : "-",
               checks[i].name, r.detail);
        if (r.status != DOCTOR_OK && r.fix[0] != '\0')
            printf("  %-12s fix: %s\n", "", r.fix);
        fflush(stdout);
    }
    if (doc != NULL) {
        cJSON_AddBoolToObject(doc, "ok", failed == 0);
        cJSON_AddNumberToObject(doc, "failed", failed);
        kg_cli_print_json(doc);
    } else {
        printf("%s\n", failed == 0 ? "keygate doctor: all checks passed"
                                   : "keygate doctor: some checks failed (fixes above)");
    }
    free(d);
    return failed == 0 ? KG_EXIT_OK : KG_EXIT_DOCTOR;
}
