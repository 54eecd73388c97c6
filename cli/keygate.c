/* SPDX-License-Identifier: Apache-2.0 */
/* keygate: the command-line front end (dispatch table of subcommands). */
#include <curl/curl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "cli.h"
#include "keygate/version.h"
#include "kg_http.h"
#include "kg_libctx.h"

typedef int (*kg_cmd_fn)(int argc, char **argv, const kg_cli_common *common);

static const struct {
    const char *name;
    kg_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"evidence", kg_cmd_evidence, "collect TDX evidence bound to a fresh ITA nonce and print it"},
    {"token", kg_cmd_token, "nonce -> evidence -> ITA attestation token, verified, printed"},
    {"verify", kg_cmd_verify, "verify an ITA token from a file and print its claims"},
    {"release", kg_cmd_release, "release keys from the KBS after attestation; prints their public keys"},
    {"status", kg_cmd_status, "would the current policies still release a key? (dry run)"},
    {"ref", kg_cmd_ref, "create or show a key reference (KEYGATE KEY REFERENCE PEM)"},
    {"agent", kg_cmd_agent, "hold released keys and serve private-key operations on a local socket"},
    {"doctor", kg_cmd_doctor, "check platform, clock, ITA/KBS, trust anchor, openssl.cnf, p11-kit, files"},
    {"version", kg_cmd_version, "print version information"},
};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: keygate [--config FILE] [--json] [--api-key-file FILE|-] COMMAND [options]\n"
                "\n"
                "Releases private keys only to a machine that has proven, by Intel TDX attestation\n"
                "verified through Intel Trust Authority, that it is the trusted workload.\n"
                "\n"
                "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(fp, "  %-9s  %s\n", commands[i].name, commands[i].summary);
    fprintf(fp, "'keygate COMMAND --help' describes a command. The common options may come before or\n"
                "after COMMAND.\n\n");
    kg_cli_help_tail(fp);
}

int kg_cmd_version(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG, {NULL, 0, NULL, 0}};
    kg_cli_common common = *common_in;
    int c;

    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &common))
            continue;
        if (c == 'h') {
            printf("usage: keygate version [--json]\n"
                   "  Prints keygate's version and git revision and the OpenSSL and libcurl it runs with.\n"
                   "  Reads no configuration and uses no network.\n");
            kg_cli_help_tail(stdout);
            return KG_EXIT_OK;
        }
        return kg_cli_bad_option("version", argv);
    }
    if (optind != argc)
        return kg_cli_usage_error("version", "unexpected argument '%s'", argv[optind]);
    if (common.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "version", KEYGATE_VERSION_STR);
        cJSON_AddStringToObject(j, "build", KEYGATE_BUILD_INFO);
        cJSON_AddStringToObject(j, "openssl", OpenSSL_version(OPENSSL_VERSION));
        cJSON_AddStringToObject(j, "libcurl", curl_version_info(CURLVERSION_NOW)->version);
        return kg_cli_print_json(j);
    }
    printf("%s\n", KEYGATE_BUILD_INFO);
    printf("OpenSSL: %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("libcurl: %s\n", curl_version_info(CURLVERSION_NOW)->version);
    return KG_EXIT_OK;
}

/* getopt_long accepts abbreviations: "--api-key SECRET" would be taken as --api-key-file and the
 * secret would end up in an error message. Only the full option name is accepted. */
static int secret_on_argv(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strncmp(argv[i], "--ap", 4) == 0 && strcmp(argv[i], "--api-key-file") != 0 &&
            strncmp(argv[i], "--api-key-file=", 15) != 0) {
            fprintf(stderr,
                    "keygate: usage: secrets never go on the command line: use --api-key-file FILE, or "
                    "--api-key-file - to read the key from stdin (see keygate --help)\n");
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        KG_CLI_COMMON_LONG, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    kg_cli_common common = {NULL, 0, NULL};
    const char *cmd;
    int c, version = 0;

    /* no core and no ptrace by other users: the API key and released keys pass through ordinary
     * heap on their way (libcurl's header list while a request runs); see docs/security-model.md */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        perror("keygate: prctl(PR_SET_DUMPABLE)");
    /* libcurl wipes what it frees (its request buffers held the x-api-key header): first, before
     * anything initialises libcurl */
    kg_http_wipe_curl_frees();

    /* secrets (API key, later key material) live in the secure heap */
    if (CRYPTO_secure_malloc_initialized() == 0)
        CRYPTO_secure_malloc_init(64 * 1024, 32);

    if (secret_on_argv(argc, argv))
        return KG_EXIT_USAGE;
    atexit(kg_libctx_cleanup);
    opterr = 0; /* our own one-line messages */

    /* "+" stops at the first non-option: the command and its own options follow */
    while ((c = getopt_long(argc, argv, "+" KG_CLI_COMMON_SHORT "V", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &common))
            continue;
        switch (c) {
        case 'h': usage(stdout); return KG_EXIT_OK;
        case 'V': version = 1; break;
        default: return kg_cli_bad_option("keygate", argv);
        }
    }
    if (version) {
        char *vargv[] = {"version", NULL};
        optind = 0;
        return kg_cmd_version(1, vargv, &common);
    }
    if (optind >= argc) {
        fprintf(stderr, "keygate: usage: no command given (see keygate --help)\n");
        return KG_EXIT_USAGE;
    }
    cmd = argv[optind];
    argc -= optind;
    argv += optind;
    optind = 0; /* 0: glibc re-initialises getopt (permutation again, not main's "+") */
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].fn(argc, argv, &common);
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return KG_EXIT_OK;
    }
    fprintf(stderr, "keygate: usage: unknown command '%s' (see keygate --help)\n", cmd);
    return KG_EXIT_USAGE;
}
