/* keygate: the command-line front end. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keygate/version.h"
#include "kg_libctx.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: keygate [--config FILE] [--json] COMMAND [options]\n"
            "\n"
            "Releases private keys only to a machine that has proven, by Intel TDX attestation\n"
            "verified through Intel Trust Authority, that it is the trusted workload.\n"
            "\n"
            "commands:\n"
            "  evidence   collect TDX evidence bound to a fresh ITA nonce and print it\n"
            "  token      nonce -> evidence -> ITA attestation token, verified, printed\n"
            "  verify     verify an ITA token from a file and print its claims\n"
            "  release    release keys from the KBS after attestation; prints their public keys\n"
            "  ref        create or show a key reference (KEYGATE KEY REFERENCE PEM)\n"
            "  version    print version information\n"
            "\n"
            "common options:\n"
            "  -c, --config FILE   keygate.conf (default: $KEYGATE_CONF, else /etc/keygate/keygate.conf)\n"
            "  -j, --json          machine-readable output\n"
            "  -h, --help          this help; 'keygate COMMAND --help' for a command\n"
            "  -V, --version       print version information\n"
            "\n"
            "exit codes: 0 ok, 1 usage, 10 config, 11 wrapping key, 12 nonce, 13 evidence,\n"
            "            14 token, 15 verify, 16 transfer, 17 unwrap, 18 handover, 19 internal,\n"
            "            20 match (the KBS released another key than the reference names)\n"
            "Secrets are never taken on the command line: the ITA API key comes from\n"
            "ita_api_key_file in keygate.conf.\n");
}

static int print_version(void)
{
    printf("%s\n", KEYGATE_BUILD_INFO);
    printf("OpenSSL: %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("libcurl: %s\n", curl_version_info(CURLVERSION_NOW)->version);
    return KG_EXIT_OK;
}

int kg_cli_fail(const kg_err *err)
{
    fprintf(stderr, "keygate: %s\n", err->msg[0] ? err->msg : "failed");
    return err->step >= KG_STEP_CONFIG ? (int)err->step : KG_STEP_INTERNAL;
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
        path = getenv("KEYGATE_CONF");
    if (path == NULL || *path == '\0')
        path = "/etc/keygate/keygate.conf";
    kg_config_defaults(cfg);
    return kg_config_load_file(cfg, path, err) && kg_config_check(cfg, err);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    kg_cli_common common = {NULL, 0};
    const char *cmd;
    int c;

    /* secrets (API key, later key material) live in the secure heap */
    if (CRYPTO_secure_malloc_initialized() == 0)
        CRYPTO_secure_malloc_init(64 * 1024, 32);

    atexit(kg_libctx_cleanup);

    /* "+" stops at the first non-option: the command and its own options follow */
    while ((c = getopt_long(argc, argv, "+c:jhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': common.config_path = optarg; break;
        case 'j': common.json = 1; break;
        case 'h': usage(stdout); return KG_EXIT_OK;
        case 'V': return print_version();
        default: usage(stderr); return KG_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return KG_EXIT_USAGE;
    }
    cmd = argv[optind];
    argc -= optind;
    argv += optind;
    optind = 1; /* reset for the subcommand's own getopt loop */
    if (strcmp(cmd, "version") == 0)
        return print_version();
    if (strcmp(cmd, "evidence") == 0)
        return kg_cmd_evidence(argc, argv, &common);
    if (strcmp(cmd, "token") == 0)
        return kg_cmd_token(argc, argv, &common);
    if (strcmp(cmd, "verify") == 0)
        return kg_cmd_verify(argc, argv, &common);
    if (strcmp(cmd, "release") == 0)
        return kg_cmd_release(argc, argv, &common);
    if (strcmp(cmd, "ref") == 0)
        return kg_cmd_ref(argc, argv, &common);
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return KG_EXIT_OK;
    }
    fprintf(stderr, "keygate: unknown command '%s' (see keygate --help)\n", cmd);
    return KG_EXIT_USAGE;
}
