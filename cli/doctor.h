/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate doctor: one check per concern, each ending in a result line with the fix to apply.
 * cmd_doctor.c runs the table and prints; doctor_checks.c holds the network/crypto checks,
 * doctor_host.c those of the host (openssl.cnf, p11-kit, files). No check releases a key
 * unless --release-test was given, and no check makes a KBS transfer otherwise.
 */
#ifndef KG_DOCTOR_H
#define KG_DOCTOR_H

#include <stddef.h>

#include "cli.h"
#include "kg_config.h"

#define DOCTOR_MAX_REFS 16

typedef enum doctor_status { DOCTOR_OK = 0, DOCTOR_FAIL = 1, DOCTOR_SKIP = 2 } doctor_status;

typedef struct doctor_result {
    doctor_status status;
    char detail[768]; /* what was found, one line */
    char fix[1024];   /* what to do about it (empty when nothing) */
} doctor_result;

typedef struct doctor_ctx {
    kg_cli_common common;
    kg_config cfg;
    int cfg_ok;            /* the configuration loaded and passed its checks */
    char config_path[512]; /* the file that was (or would be) read */
    const char *api_key;   /* from stdin (--api-key-file -), else NULL */
    const char *refs[DOCTOR_MAX_REFS];
    size_t nrefs;
    const char *openssl_conf; /* --openssl-conf, else $OPENSSL_CONF, else OpenSSL's default */
    const char *release_test; /* --release-test ID|REF: the only check that releases a key */
    char jwks[1024 * 1024];   /* fetched by the ita-jwks check for the trust-anchor check */
    size_t jwks_len;
    long date_skew_s; /* local clock minus ITA's Date header */
    int have_date;
} doctor_ctx;

/* Sets result fields (printf-style detail); returns the status. */
doctor_status doctor_set(doctor_result *r, doctor_status st, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

doctor_status doctor_check_config(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_files(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_platform(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_ita(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_jwks(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_clock(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_anchor(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_kbs(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_openssl_cnf(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_p11kit(doctor_ctx *d, doctor_result *r);
doctor_status doctor_check_release(doctor_ctx *d, doctor_result *r);

/* Runs argv (argv[0] looked up in PATH) with env_name=env_value added to the environment,
 * stdout and stderr captured into out (NUL-terminated, truncated to size - 1), at most
 * timeout_ms. Returns the exit status (0..255), -1 when it could not run (errno kept), -2 on
 * timeout (the child is killed by its pid). */
int doctor_run(char *const argv[], const char *env_name, const char *env_value, char *out, size_t size,
               long timeout_ms);

#endif
