/* SPDX-License-Identifier: Apache-2.0 */
/* keygate verify: pipeline step 5 for a token given in a file. */
#define _GNU_SOURCE /* strptime, timegm */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "kg_jws.h"
#include "kg_verify.h"

#define MAX_CRL_FILES 8

/* Reads a whole text file (at most max bytes) with trailing whitespace removed. */
static int read_text(const char *path, size_t max, char **out, kg_err *err)
{
    uint8_t *buf;
    size_t n;

    *out = NULL;
    if (!kg_cli_read_file(path, max, &buf, &n, err))
        return 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0'; /* kg_cli_read_file leaves room for one more byte */
    *out = (char *)buf;
    return 1;
}

/* "1701734950" or "2023-12-05T00:10:00Z". */
static int parse_time(const char *s, time_t *out)
{
    struct tm tm;
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == 0 && *end == '\0' && end != s && v > 0) {
        *out = (time_t)v;
        return 1;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end == NULL || *end != '\0')
        return 0;
    *out = timegm(&tm);
    return *out > 0;
}

/* ITA's attester_type values are short upper-case names (TDX, SGX); ita_claims has 32 bytes. */
static int valid_attester_type(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 31)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]))
            return 0;
    return 1;
}

static void usage(FILE *fp)
{
    fprintf(fp, "usage: keygate verify --token FILE [--config F] [--json] [--at TIME] [--jwks-file F]\n"
                "                      [--crl-file F]... [--user-data-file F] [--attester-type TYPE]\n"
                "  Verifies an ITA token: PS384/RS256 only, (kid, alg) in the JWKS, JWK equal to the x5c\n"
                "  leaf, chain to the pinned ita_trust_anchor, CRLs (crl_policy), exp/nbf with\n"
                "  token_leeway_s, iss/ver, the REPORTDATA binding and the local policy of keygate.conf.\n"
                "  --at TIME verifies as of a Unix time or 2023-12-05T00:10:00Z (for old artefacts);\n"
                "  --jwks-file and --crl-file verify offline; --user-data-file also requires\n"
                "  attester_held_data to equal that file. attester_type must be TDX, or TYPE with\n"
                "  --attester-type (e.g. SGX for an SGX token). Prints the verified claims; on failure\n"
                "  exits 15 and names the failed check. --json prints {verified, claims}.\n");
    kg_cli_help_tail(fp);
}

int kg_cmd_verify(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"token", required_argument, NULL, 't'},
                                         {"at", required_argument, NULL, 'a'},
                                         {"jwks-file", required_argument, NULL, 'J'},
                                         {"crl-file", required_argument, NULL, 'r'},
                                         {"user-data-file", required_argument, NULL, 'u'},
                                         {"attester-type", required_argument, NULL, 'T'},
                                         {NULL, 0, NULL, 0}};
    kg_cli_common common = *common_in;
    const char *token_file = NULL, *ud_file = NULL, *crl_files[MAX_CRL_FILES + 1] = {NULL};
    int ncrl = 0, c, rc;
    kg_verify_opts vo;
    kg_config cfg;
    ita_claims claims;
    kg_err err;
    cJSON *payload = NULL, *out = NULL;
    char *token = NULL, *ud = NULL, *s = NULL;

    memset(&vo, 0, sizeof(vo));
    memset(&claims, 0, sizeof(claims));
    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "t:a:J:r:u:T:", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &common))
            continue;
        switch (c) {
        case 't': token_file = optarg; break;
        case 'a':
            if (!parse_time(optarg, &vo.at))
                return kg_cli_usage_error(
                    "verify", "--at '%.64s' is neither Unix seconds nor YYYY-MM-DDTHH:MM:SSZ", optarg);
            break;
        case 'J': vo.jwks_file = optarg; break;
        case 'r':
            if (ncrl == MAX_CRL_FILES)
                return kg_cli_usage_error("verify", "at most %d --crl-file", MAX_CRL_FILES);
            crl_files[ncrl++] = optarg;
            break;
        case 'u': ud_file = optarg; break;
        case 'T':
            if (!valid_attester_type(optarg))
                return kg_cli_usage_error("verify",
                                          "--attester-type '%.64s' is not 1 to 31 letters or digits", optarg);
            vo.attester_type = optarg;
            break;
        case 'h': usage(stdout); return KG_EXIT_OK;
        default: return kg_cli_bad_option("verify", argv);
        }
    }
    if (optind != argc)
        return kg_cli_usage_error("verify", "unexpected argument '%s'", argv[optind]);
    if (token_file == NULL)
        return kg_cli_usage_error("verify", "--token FILE is required");
    vo.crl_files = ncrl > 0 ? crl_files : NULL;
    vo.payload = &payload;
    if (!kg_cli_load_config(&common, &cfg, &err) || !read_text(token_file, KG_JWS_MAX_LEN, &token, &err))
        goto fail;
    if (ud_file != NULL) {
        size_t ud_len;
        if (!kg_cli_read_file(ud_file, KG_CLI_MAX_USER_DATA, (uint8_t **)&ud, &ud_len, &err))
            goto fail;
        vo.user_data = (const uint8_t *)ud;
        vo.user_data_len = ud_len;
    }
    if (!kg_verify_token(&cfg, token, &vo, &claims, &err))
        goto fail;
    if (common.json) {
        out = cJSON_CreateObject();
        if (out == NULL)
            goto oom;
        cJSON_AddBoolToObject(out, "verified", 1);
        cJSON_AddItemToObject(out, "claims", payload);
        payload = NULL;
        s = cJSON_Print(out);
    } else {
        fprintf(stderr, "token verified: ver %s, %s, attester %s, tcb %s, debuggable %s\n", claims.ver,
                claims.layout == 2 ? "v2 nested" : "v1 flat",
                claims.attester_type[0] ? claims.attester_type : "-",
                claims.tcb_status[0] ? claims.tcb_status : "-",
                claims.is_debuggable < 0 ? "-"
                : claims.is_debuggable   ? "yes"
                                         : "no");
        s = cJSON_Print(payload);
    }
    rc = kg_cli_print_text(s, &err);
    s = NULL;
    goto end;
oom:
    kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
fail:
    rc = kg_cli_fail(&err);
end:
    free(s);
    cJSON_Delete(out);
    cJSON_Delete(payload);
    ita_claims_clear(&claims);
    free(token);
    free(ud);
    return rc;
}
