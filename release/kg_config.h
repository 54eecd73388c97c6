/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate.conf: "key = value" lines, '#' comments, blank lines. Unknown keys are an error.
 * The one table of keys lives in kg_config.c (kg_config_keys); docs/configuration.md mirrors it
 * (scripts/config-table.py) and a unit test checks the two agree.
 *
 * kg_config is a plain value struct (fixed-size strings): copy it freely, nothing to free.
 * It never holds secrets: the API key and the PKCS#11 PIN stay in their files until their users
 * read them.
 */
#ifndef KG_CONFIG_H
#define KG_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "kg_err.h"
#include "kg_adapter.h"

#define KG_CONF_STR 512
#define KG_CONF_MAX_POLICY_IDS 10

typedef struct kg_config {
    char ita_api_url[KG_CONF_STR];
    char ita_base_url[KG_CONF_STR];
    char ita_api_key_file[KG_CONF_STR];
    char pkcs11_pin_file[KG_CONF_STR]; /* the token's user PIN (PKCS#11 module); "" = none */
    char ita_trust_anchor[KG_CONF_STR];
    char ita_api_version[4]; /* v1 | v2 */
    char ita_policy_ids[KG_CONF_MAX_POLICY_IDS][37];
    int ita_policy_id_count;
    char ita_token_alg[8];   /* PS384 | RS256 */
    char crl_policy[16];     /* require | if-available */
    char release_mode[8];    /* eager | lazy (provider) */
    char pkcs11_keys[4096];  /* PKCS#11 module: LABEL:REFERENCE[:CERTIFICATE], comma-separated */
    char pkcs11_release[12]; /* first-use | login (PKCS#11 module) */
    char preload[4096];      /* absolute key-reference paths or glob patterns, comma-separated */
    char backend[8];         /* local | agent (provider, PKCS#11 module: issue 22) */
    char agent_socket[KG_CONF_STR];
    char agent_keys[4096]; /* keygate agent: REFERENCE[:uid=N|gid=N|user=NAME|group=NAME]..., comma list */
    char agent_socket_group[64]; /* keygate agent: the socket's group; "" = the agent's */
    long agent_max_clients;      /* keygate agent: connections served at once */
    long agent_rate;             /* keygate agent: operations per second per client */
    long agent_timeout_ms;       /* agent backend: per operation, connect included */
    long key_lease_s;            /* lease of a released key (kg_lease) */
    long key_lease_max_s;        /* upper bound for key_lease_s */
    long refresh_before_s;       /* background refresh this long before the lease ends */
    char on_revoke[8];           /* wipe | keep */
    long token_leeway_s;
    char cache_dir[KG_CONF_STR];       /* verification cache (ita_cache.h); "" or "none" = none */
    char tls_ca_file[KG_CONF_STR];     /* both services, unless one has its own below */
    char ita_tls_ca_file[KG_CONF_STR]; /* ITA (API, portal, CRLs); "" = tls_ca_file */
    char kbs_tls_ca_file[KG_CONF_STR]; /* the KBS; "" = tls_ca_file */
    int allow_http_loopback;
    char kbs_url[KG_CONF_STR];
    char kbs_type[8];             /* intel | trustee */
    char kbs_mode[12];            /* passport | background */
    char kbs_intel_generation[8]; /* auto | v1.3 | 2026 (docs/protocols/intel-kbs.md §8) */
    char trustee_tee_key[4];      /* ec | rsa */
    char trustee_token[4];        /* ita | ear */
    char trustee_as_cert[KG_CONF_STR];
    char trustee_ear_status[12]; /* affirming | warning */
    long timeout_ms;
    long retry_max;
    long retry_wait_min_ms;
    long retry_wait_max_ms;
    char require_tcb_status[KG_CONF_STR]; /* comma list of acceptable attester_tcb_status */
    int require_tcb_status_given;         /* set non-empty by a file or override, not the default */
    char require_mrtd[KG_CONF_STR * 2];   /* comma list of 96-hex values */
    char require_rtmr[4][KG_CONF_STR * 2];
    int allow_debug_td;
    int log_level;
    kg_adapter_config ad; /* adapter = ..., sim_*, tdx_*, azure_* keys */
    /* Not a key: a borrowed flag (NULL by default) that cancels this configuration's HTTP
     * requests once non-zero (kg_http_opts.cancel). A lease points its copy at its stop flag,
     * so that teardown never waits out a refresh's network timeouts. */
    const int *cancel;
} kg_config;

typedef enum kg_conf_type {
    KG_CONF_T_STRING,
    KG_CONF_T_PATH,
    KG_CONF_T_URL,
    KG_CONF_T_ENUM,
    KG_CONF_T_INT,
    KG_CONF_T_BOOL,
    KG_CONF_T_UUID_LIST,
    KG_CONF_T_HEX_LIST,
    KG_CONF_T_HEX,
    KG_CONF_T_PATH_LIST /* comma list of absolute paths (glob patterns allowed) */
} kg_conf_type;

typedef struct kg_conf_key {
    const char *name;
    kg_conf_type type;
    const char *def;     /* default as written in keygate.conf, "" for none */
    const char *choices; /* ENUM: "a|b|c"; INT: "min..max"; HEX: byte length as text */
    const char *doc;
    size_t off;  /* where the value lives in kg_config */
    size_t size; /* its size in bytes */
} kg_conf_key;

/* The table of every accepted key, terminated by a {NULL} entry. */
extern const kg_conf_key kg_config_keys[];

/* Fills every default. */
void kg_config_defaults(kg_config *cfg);

/* Sets one key. Returns 1, or 0 with err (step config) naming the key and the problem. */
int kg_config_set(kg_config *cfg, const char *key, const char *value, kg_err *err);

/* Parses a keygate.conf file on top of cfg (call kg_config_defaults first). Returns 1 or 0
 * with err "config: <path>:<line>: <problem>". */
int kg_config_load_file(kg_config *cfg, const char *path, kg_err *err);

/* The same for an open stream (path only names it in messages; fuzzed by tests/fuzz). The
 * caller closes fp. */
int kg_config_load_stream(kg_config *cfg, FILE *fp, const char *path, kg_err *err);

/* Cross-key checks after loading (e.g. sim adapter needs sim_pck_key; a require_tcb_status
 * given with kbs_mode = background, which cannot be enforced there), including the combinations
 * of adapter, kbs_type, kbs_mode and ita_api_version that cannot work
 * (docs/supported-combinations.md). Returns 1 or 0. */
int kg_config_check(const kg_config *cfg, kg_err *err);

/* 1 if the KBS of cfg can take the tokens keygate would send it in passport mode, else 0 with err
 * naming the settings: ita_api_version = v2 against an Intel KBS pinned to the v1.3 generation,
 * which reads v1 tokens only. With kbs_intel_generation = auto it accepts: the release asks the
 * KBS its generation before attesting (kg_intel_gen_check_passport) and refuses there.
 * kg_config_check applies it when kbs_url is set (without one, v2 serves `keygate token` and
 * `verify`); the release applies it before attesting, for a KBS named by a key reference. */
int kg_config_check_passport(const kg_config *cfg, kg_err *err);

/* Writes the effective configuration, one "key = value" per line, to buf (for debug logs and
 * `keygate config`). Returns 1, or 0 if buf is too small. */
int kg_config_dump(const kg_config *cfg, char *buf, size_t len);

#endif
