/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers every keygate subcommand shares: common options, one-line errors, --json, the API key
 * from stdin, configuration loading. */
#define _GNU_SOURCE /* secure_getenv */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kg_log.h"
#include "ita_client.h"

static int json_errors;        /* --json seen: kg_cli_fail also prints a JSON error object */
static char *stdin_api_key;    /* secure heap, ITA_MAX_API_KEY + 1 bytes */
static int stdin_api_key_read; /* stdin is read at most once */

void kg_cli_set_json(kg_cli_common *common)
{
    common->json = 1;
    json_errors = 1;
}

int kg_cli_common_opt(int c, const char *arg, kg_cli_common *common)
{
    switch (c) {
    case 'c': common->config_path = arg; return 1;
    case 'j': kg_cli_set_json(common); return 1;
    case 'A': common->api_key_file = arg; return 1;
    default: return 0;
    }
}

int kg_cli_bad_option(const char *cmd, char **argv)
{
    /* getopt runs with opterr = 0: its own message would be a second line. The option is named
     * without any "=value" part: a mistyped option may carry a secret. */
    const char *opt = optind > 0 ? argv[optind - 1] : NULL;

    if (opt != NULL && opt[0] == '-' && opt[1] == '-')
        return kg_cli_usage_error(cmd, "option '%.*s' is unknown or lacks its value", (int)strcspn(opt, "="),
                                  opt);
    if (optopt != 0)
        return kg_cli_usage_error(cmd, "option -%c is unknown or lacks its value", optopt);
    return kg_cli_usage_error(cmd, "unknown option");
}

int kg_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(cmd, "keygate") == 0)
        fprintf(stderr, "keygate: usage: %s (see keygate --help)\n", msg);
    else
        fprintf(stderr, "keygate: usage: %s: %s (see keygate %s --help)\n", cmd, msg, cmd);
    if (json_errors) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "ok", 0);
        cJSON_AddStringToObject(j, "step", "usage");
        cJSON_AddNumberToObject(j, "exit_code", KG_EXIT_USAGE);
        cJSON_AddStringToObject(j, "error", msg);
        kg_cli_print_json(j);
    }
    return KG_EXIT_USAGE;
}

void kg_cli_help_tail(FILE *fp)
{
    fprintf(
        fp,
        "common options:\n"
        "  -c, --config FILE        keygate.conf (default: $KEYGATE_CONF, else /etc/keygate/keygate.conf)\n"
        "  -j, --json               machine-readable output on stdout (errors too: {\"ok\": false, ...})\n"
        "  -A, --api-key-file FILE  ITA API key file instead of ita_api_key_file; '-' reads the key\n"
        "                           from stdin (never put a secret on the command line)\n"
        "  -h, --help               this help\n"
        "exit codes: 0 ok, 1 usage, 10 config, 11 wrapping key, 12 nonce, 13 evidence, 14 token,\n"
        "            15 verify, 16 transfer, 17 unwrap, 18 handover, 19 internal, 20 match (the KBS\n"
        "            released another key than the reference names), 21 doctor (a check failed).\n"
        "Errors are one line on stderr naming the step: 'keygate: <step>: <cause>'.\n");
}

int kg_cli_fail(const kg_err *err)
{
    int code = err->step >= KG_STEP_CONFIG ? (int)err->step : KG_STEP_INTERNAL;

    fprintf(stderr, "keygate: %s\n", err->msg[0] ? err->msg : "failed");
    if (json_errors) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "ok", 0);
        cJSON_AddStringToObject(j, "step", kg_step_name((kg_step)code));
        cJSON_AddNumberToObject(j, "exit_code", code);
        cJSON_AddStringToObject(j, "error", err->msg[0] ? err->msg : "failed");
        if (err->http_status > 0)
            cJSON_AddNumberToObject(j, "http_status", (double)err->http_status);
        if (err->request_id[0])
            cJSON_AddStringToObject(j, "request_id", err->request_id);
        if (err->trace_id[0])
            cJSON_AddStringToObject(j, "trace_id", err->trace_id);
        kg_cli_print_json(j);
    }
    return code;
}

int kg_cli_print_json(cJSON *doc)
{
    char *s = doc != NULL ? cJSON_Print(doc) : NULL;

    cJSON_Delete(doc);
    if (s == NULL) {
        fprintf(stderr, "keygate: internal: out of memory\n");
        return KG_STEP_INTERNAL;
    }
    printf("%s\n", s);
    free(s);
    return KG_EXIT_OK;
}

int kg_cli_print_text(char *s, kg_err *err)
{
    if (s == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return kg_cli_fail(err);
    }
    printf("%s\n", s);
    free(s);
    return KG_EXIT_OK;
}

int kg_cli_read_file(const char *path, size_t max, uint8_t **out, size_t *len, kg_err *err)
{
    FILE *fp = fopen(path, "rbe");
    uint8_t *buf;
    size_t n;

    *out = NULL;
    *len = 0;
    if (fp == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "%s: %s", path, strerror(errno));
    if ((buf = malloc(max + 1)) == NULL) {
        fclose(fp);
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    }
    n = fread(buf, 1, max + 1, fp);
    fclose(fp);
    if (n > max) {
        free(buf);
        return kg_err_set(err, KG_STEP_CONFIG, "%s: larger than %zu bytes", path, max);
    }
    *out = buf;
    *len = n;
    return 1;
}

int kg_cli_load_config(const kg_cli_common *common, kg_config *cfg, kg_err *err)
{
    const char *path = common->config_path;

    if (path == NULL)
        path = secure_getenv("KEYGATE_CONF");
    if (path == NULL || *path == '\0')
        path = "/etc/keygate/keygate.conf";
    kg_config_defaults(cfg);
    if (!kg_config_load_file(cfg, path, err))
        return 0;
    if (common->api_key_file != NULL && strcmp(common->api_key_file, "-") != 0 &&
        !kg_config_set(cfg, "ita_api_key_file", common->api_key_file, err))
        return 0;
    if (!kg_config_check(cfg, err))
        return 0;
    kg_log_set_default_level(cfg->log_level);
    return 1;
}

static void free_stdin_api_key(void)
{
    OPENSSL_secure_clear_free(stdin_api_key, ITA_MAX_API_KEY + 1);
    stdin_api_key = NULL;
}

const char *kg_cli_api_key(const kg_cli_common *common, int *failed, kg_err *err)
{
    size_t len = 0;
    ssize_t n;

    *failed = 0;
    if (common->api_key_file == NULL || strcmp(common->api_key_file, "-") != 0)
        return NULL;
    if (stdin_api_key_read)
        return stdin_api_key;
    stdin_api_key_read = 1;
    if ((stdin_api_key = OPENSSL_secure_zalloc(ITA_MAX_API_KEY + 2)) == NULL) {
        *failed = !kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    atexit(free_stdin_api_key);
    /* read() into the secure heap: no stdio buffer keeps a copy */
    while (len <= ITA_MAX_API_KEY &&
           (n = read(STDIN_FILENO, stdin_api_key + len, ITA_MAX_API_KEY + 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    while (len > 0 && (stdin_api_key[len - 1] == '\n' || stdin_api_key[len - 1] == '\r' ||
                       stdin_api_key[len - 1] == ' '))
        stdin_api_key[--len] = '\0';
    if (len == 0 || len > ITA_MAX_API_KEY || strpbrk(stdin_api_key, "\r\n") != NULL) {
        free_stdin_api_key();
        *failed =
            !kg_err_set(err, KG_STEP_CONFIG,
                        "--api-key-file -: stdin must hold the ITA API key on one line (at most %d bytes)",
                        ITA_MAX_API_KEY);
        return NULL;
    }
    return stdin_api_key;
}

void kg_cli_add_times_json(cJSON *doc, const kg_release_times *t, int released)
{
    cJSON *st = cJSON_AddObjectToObject(doc, "steps_ms");

    cJSON_AddNumberToObject(st, "wrapping_key", t->wrapkey);
    cJSON_AddNumberToObject(st, "nonce", t->nonce);
    cJSON_AddNumberToObject(st, "evidence", t->evidence);
    cJSON_AddNumberToObject(st, "token", t->token);
    cJSON_AddNumberToObject(st, "verify", t->verify);
    cJSON_AddNumberToObject(st, "transfer", t->transfer);
    if (released) {
        cJSON_AddNumberToObject(st, "unwrap", t->unwrap);
        cJSON_AddNumberToObject(st, "match", t->match);
    }
    /* when each step started, ms after the release began (steps may overlap) */
    st = cJSON_AddObjectToObject(doc, "steps_start_ms");
    cJSON_AddNumberToObject(st, "wrapping_key", t->at.wrapkey);
    cJSON_AddNumberToObject(st, "nonce", t->at.nonce);
    cJSON_AddNumberToObject(st, "evidence", t->at.evidence);
    cJSON_AddNumberToObject(st, "token", t->at.token);
    cJSON_AddNumberToObject(st, "verify", t->at.verify);
    cJSON_AddNumberToObject(st, "transfer", t->at.transfer);
    if (released) {
        cJSON_AddNumberToObject(st, "unwrap", t->at.unwrap);
        cJSON_AddNumberToObject(st, "match", t->at.match);
        cJSON_AddBoolToObject(doc, "attested", t->attested);
    }
}
