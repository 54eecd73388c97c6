/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kg_uuid.h"

#define F(field) offsetof(kg_config, field), sizeof(((kg_config *)0)->field)

/* The one table of keys. Order = order in docs/configuration.md and keygate.conf(5). */
const kg_conf_key kg_config_keys[] = {
    {"adapter", KG_CONF_T_ENUM, "tdx", "tdx|tdx-ioctl|azure-tdx|sim",
     "evidence adapter: configfs-tsm TDX, /dev/tdx_guest, Azure vTPM, or the simulated TD", F(ad.name)},
    {"ita_api_url", KG_CONF_T_URL, "https://api.trustauthority.intel.com", "",
     "ITA API URL (nonce, attest; needs the API key)", F(ita_api_url)},
    {"ita_base_url", KG_CONF_T_URL, "https://portal.trustauthority.intel.com", "",
     "ITA portal URL; the JWKS is at {base}/certs", F(ita_base_url)},
    {"ita_api_key_file", KG_CONF_T_PATH, "", "",
     "file holding the ITA API key; refused if group/others can read it", F(ita_api_key_file)},
    {"ita_trust_anchor", KG_CONF_T_PATH, "", "", "PEM root pinned for token signing chains",
     F(ita_trust_anchor)},
    {"ita_api_version", KG_CONF_T_ENUM, "v1", "v1|v2",
     "v1: flat /appraisal/v1/attest (the Intel KBS v1.3.0 needs it); v2: composite /appraisal/v2/attest",
     F(ita_api_version)},
    {"ita_policy_ids", KG_CONF_T_UUID_LIST, "", "",
     "comma-separated ITA policy UUIDs (at most 10) sent with attest", F(ita_policy_ids)},
    {"ita_token_alg", KG_CONF_T_ENUM, "PS384", "PS384|RS256", "token signing algorithm to request",
     F(ita_token_alg)},
    {"crl_policy", KG_CONF_T_ENUM, "require", "require|if-available",
     "when a CRL of the token signing chain cannot be fetched: fail (require) or go on, logged",
     F(crl_policy)},
    {"cache_dir", KG_CONF_T_PATH, "/var/cache/keygate", "",
     "directory caching ITA's JWKS and CRLs across processes, re-verified when read; used only when owned "
     "by root or the process's user with mode 0700; empty or none = no cache",
     F(cache_dir)},
    {"release", KG_CONF_T_ENUM, "eager", "eager|lazy",
     "provider: eager releases when a private key is loaded (nginx -t fails loudly); lazy at first use",
     F(release_mode)},
    {"pkcs11_keys", KG_CONF_T_STRING, "", "",
     "PKCS#11 module: the keys its token shows, comma-separated LABEL:REFERENCE_FILE[:CERTIFICATE_FILE] "
     "(label = CKA_LABEL and the URI's object=; the certificate must hold the reference's public key)",
     F(pkcs11_keys)},
    {"preload", KG_CONF_T_PATH_LIST, "", "",
     "key references to release together: comma-separated absolute paths or glob patterns; the first "
     "release in a process (provider or PKCS#11 module) releases all of them with one attestation and "
     "parallel transfers, so that later loads find them ready; empty = each key at its own first use",
     F(preload)},
    {"backend", KG_CONF_T_ENUM, "local", "local|agent",
     "provider and PKCS#11 module: release and hold keys in this process (local), or have the keygate agent "
     "do every private-key operation over agent_socket (agent: no key bytes, no ITA/KBS access here)",
     F(backend)},
    {"agent_socket", KG_CONF_T_PATH, "/run/keygate/agent.sock", "",
     "the keygate agent's unix socket (mode 0660, in a directory only root may write)", F(agent_socket)},
    {"agent_keys", KG_CONF_T_STRING, "", "",
     "keygate agent: the keys it serves and who may use each, comma-separated "
     "REFERENCE[:uid=N|gid=N|user=NAME|group=NAME]... (REFERENCE an absolute path or glob pattern; a client "
     "is allowed when its SO_PEERCRED uid or primary gid is listed; supplementary groups are not consulted)",
     F(agent_keys)},
    {"agent_socket_group", KG_CONF_T_STRING, "", "",
     "keygate agent: group (name or number) owning the socket; empty = the agent's own group",
     F(agent_socket_group)},
    {"agent_max_clients", KG_CONF_T_INT, "64", "1..4096",
     "keygate agent: connections served at once; more are answered BUSY and closed", F(agent_max_clients)},
    {"agent_rate", KG_CONF_T_INT, "100000", "1..10000000",
     "keygate agent: private-key operations per second per connection (token bucket, burst of one second)",
     F(agent_rate)},
    {"agent_timeout_ms", KG_CONF_T_INT, "5000", "100..600000",
     "backend = agent: timeout of one operation, connect included; keygate agent: a request frame once "
     "started, and each reply, must complete within it (a stalled client holds only its own connection)",
     F(agent_timeout_ms)},
    {"pkcs11_release", KG_CONF_T_ENUM, "first-use", "first-use|login",
     "PKCS#11 module: attest and release a key at its first private-key operation, or all keys at C_Login",
     F(pkcs11_release)},
    {"pkcs11_pin_file", KG_CONF_T_PATH, "", "",
     "PKCS#11 module: file holding the user PIN C_Login must be given (one line); refused if group/others "
     "can read it; empty = no PIN (protected authentication path)",
     F(pkcs11_pin_file)},
    {"key_lease_s", KG_CONF_T_INT, "3600", "1..604800",
     "lease of a released key: renewed by a background re-attestation before it ends, wiped when it ends "
     "(at most key_lease_max_s)",
     F(key_lease_s)},
    {"key_lease_max_s", KG_CONF_T_INT, "86400", "1..604800", "upper bound for key_lease_s (site policy)",
     F(key_lease_max_s)},
    {"refresh_before_s", KG_CONF_T_INT, "300", "1..604800",
     "start the background refresh this long before the lease ends (at most 4/5 of the lease)",
     F(refresh_before_s)},
    {"on_revoke", KG_CONF_T_ENUM, "wipe", "wipe|keep",
     "KBS denial or local policy failure at refresh: wipe the key at once, or keep it until the lease ends "
     "(logged)",
     F(on_revoke)},
    {"token_leeway_s", KG_CONF_T_INT, "60", "0..600", "clock leeway for the token's exp/nbf/iat",
     F(token_leeway_s)},
    {"tls_ca_file", KG_CONF_T_PATH, "", "",
     "PEM CA bundle for ITA and KBS TLS, then the only trust (no system CA); empty = system store",
     F(tls_ca_file)},
    {"ita_tls_ca_file", KG_CONF_T_PATH, "", "",
     "PEM CA bundle for ITA TLS only (nonce, attest, JWKS, CRLs), then the only trust; empty = tls_ca_file",
     F(ita_tls_ca_file)},
    {"kbs_tls_ca_file", KG_CONF_T_PATH, "", "",
     "PEM CA bundle for KBS TLS only (Intel KBS, Trustee), then the only trust; empty = tls_ca_file",
     F(kbs_tls_ca_file)},
    {"allow_http_loopback", KG_CONF_T_BOOL, "no", "",
     "allow plain http:// to loopback IP literals only (127.0.0.0/8, [::1]; not localhost) for tests; never "
     "other hosts",
     F(allow_http_loopback)},
    {"kbs_url", KG_CONF_T_URL, "", "", "Key Broker Service URL", F(kbs_url)},
    {"kbs_type", KG_CONF_T_ENUM, "intel", "intel|trustee", "KBS protocol", F(kbs_type)},
    {"kbs_mode", KG_CONF_T_ENUM, "passport", "passport|background",
     "passport: keygate gets and verifies the token; background: the KBS asks ITA, after keygate has checked "
     "its own quote against allow_debug_td, require_mrtd and require_rtmr0..3",
     F(kbs_mode)},
    {"kbs_intel_generation", KG_CONF_T_ENUM, "auto", "auto|v1.3|2026",
     "Intel KBS generation (docs/protocols/intel-kbs.md §8): auto tells from the first background "
     "transfer's answer, or from GET /kbs/v1/version before a passport release with ita_api_version = v2; "
     "v1.3 (v1.3.0 and earlier) or 2026 pins it",
     F(kbs_intel_generation)},
    {"trustee_tee_key", KG_CONF_T_ENUM, "ec", "ec|rsa",
     "Trustee: TEE key the resources are wrapped to: EC P-256 (ECDH-ES+A256KW) or RSA-3072 (RSA-OAEP-256)",
     F(trustee_tee_key)},
    {"trustee_token", KG_CONF_T_ENUM, "ita", "ita|ear",
     "Trustee: the attestation token its KBS returns: ita (an ITA-backed Trustee; keygate verifies ITA's "
     "token) or ear (Trustee's built-in attestation service; an EAR signed by the key in trustee_as_cert)",
     F(trustee_token)},
    {"trustee_as_cert", KG_CONF_T_PATH, "", "",
     "trustee_token = ear: PEM certificate or public key (EC P-256 or P-384) of the attestation service's "
     "token signing key, pinned: the only trust of an EAR",
     F(trustee_as_cert)},
    {"trustee_ear_status", KG_CONF_T_ENUM, "affirming", "affirming|warning",
     "trustee_token = ear: the worst ear.status accepted in every appraisal (submod) of the token",
     F(trustee_ear_status)},
    {"timeout_ms", KG_CONF_T_INT, "10000", "100..600000", "connect and total timeout per HTTP request",
     F(timeout_ms)},
    {"retry_max", KG_CONF_T_INT, "2", "0..10",
     "retries after the first attempt of an HTTP request (0 = none; 2 = 3 attempts, as RetryMax of Intel's "
     "Go "
     "client)",
     F(retry_max)},
    {"retry_wait_min_ms", KG_CONF_T_INT, "200", "0..60000", "backoff lower bound", F(retry_wait_min_ms)},
    {"retry_wait_max_ms", KG_CONF_T_INT, "5000", "0..600000", "backoff upper bound", F(retry_wait_max_ms)},
    {"require_tcb_status", KG_CONF_T_STRING, "UpToDate", "",
     "comma list of acceptable attester_tcb_status values; setting it with kbs_mode = background is an error "
     "(only the KBS sees the token there: its key-transfer policy decides)",
     F(require_tcb_status)},
    {"require_mrtd", KG_CONF_T_HEX_LIST, "", "48", "comma list of allowed MRTDs (96 hex); empty = any",
     F(require_mrtd)},
    {"require_rtmr0", KG_CONF_T_HEX_LIST, "", "48", "allowed RTMR0 values; empty = any", F(require_rtmr[0])},
    {"require_rtmr1", KG_CONF_T_HEX_LIST, "", "48", "allowed RTMR1 values; empty = any", F(require_rtmr[1])},
    {"require_rtmr2", KG_CONF_T_HEX_LIST, "", "48", "allowed RTMR2 values; empty = any", F(require_rtmr[2])},
    {"require_rtmr3", KG_CONF_T_HEX_LIST, "", "48", "allowed RTMR3 values; empty = any", F(require_rtmr[3])},
    {"allow_debug_td", KG_CONF_T_BOOL, "no", "", "accept tokens for debug TDs (never in production)",
     F(allow_debug_td)},
    {"log_level", KG_CONF_T_INT, "1", "1..4",
     "what goes to stderr when KEYGATE_DEBUG is unset: 1 warnings and errors, 2 info, 3 debug, 4 trace",
     F(log_level)},
    {"tsm_report_dir", KG_CONF_T_PATH, "/sys/kernel/config/tsm/report", "",
     "tdx adapter: configfs-tsm report directory", F(ad.tsm_report_dir)},
    {"tdx_event_log", KG_CONF_T_BOOL, "no", "", "tdx adapter: send the CCEL event log with the quote",
     F(ad.event_log)},
    {"ccel_table", KG_CONF_T_PATH, "/sys/firmware/acpi/tables/CCEL", "", "tdx adapter: ACPI CCEL table",
     F(ad.ccel_table)},
    {"ccel_data", KG_CONF_T_PATH, "/sys/firmware/acpi/tables/data/CCEL", "", "tdx adapter: CCEL event log",
     F(ad.ccel_data)},
    {"tdx_guest_device", KG_CONF_T_PATH, "/dev/tdx_guest", "", "tdx-ioctl adapter: the TDX guest device",
     F(ad.tdx_guest_device)},
    {"azure_tcti", KG_CONF_T_STRING, "device:/dev/tpmrm0", "",
     "azure-tdx adapter: TSS2 TCTI of the vTPM (e.g. swtpm:host=127.0.0.1,port=2321)", F(ad.azure_tcti)},
    {"azure_imds_url", KG_CONF_T_URL, "http://169.254.169.254/acc/tdquote", "",
     "azure-tdx adapter: IMDS quote endpoint (plain http, link-local, by Azure's design)",
     F(ad.azure_imds_url)},
    {"azure_report_timeout_ms", KG_CONF_T_INT, "10000", "100..120000",
     "azure-tdx adapter: bound on waiting for the HCL report to carry our hash",
     F(ad.azure_report_timeout_ms)},
    {"sim_pck_key", KG_CONF_T_PATH, "", "", "sim adapter: PEM key of the simulated PCK",
     F(ad.sim.pck_key_file)},
    {"sim_pck_chain", KG_CONF_T_PATH, "", "", "sim adapter: PEM chain PCK, platform CA, root",
     F(ad.sim.pck_chain_file)},
    {"sim_mrtd", KG_CONF_T_HEX, "", "48", "sim adapter: MRTD (96 hex); unset = the built-in value",
     F(ad.sim.mrtd)},
    {"sim_mrseam", KG_CONF_T_HEX, "", "48", "sim adapter: MRSEAM (96 hex); unset = the built-in value",
     F(ad.sim.mrseam)},
    {"sim_rtmr0", KG_CONF_T_HEX, "", "48", "sim adapter: RTMR0; unset = the built-in value",
     F(ad.sim.rtmr[0])},
    {"sim_rtmr1", KG_CONF_T_HEX, "", "48", "sim adapter: RTMR1; unset = the built-in value",
     F(ad.sim.rtmr[1])},
    {"sim_rtmr2", KG_CONF_T_HEX, "", "48", "sim adapter: RTMR2; unset = the built-in value",
     F(ad.sim.rtmr[2])},
    {"sim_rtmr3", KG_CONF_T_HEX, "", "48", "sim adapter: RTMR3; unset = the built-in value",
     F(ad.sim.rtmr[3])},
    {"sim_tee_tcb_svn", KG_CONF_T_HEX, "", "16",
     "sim adapter: TEE_TCB_SVN (32 hex); unset = the built-in value", F(ad.sim.tee_tcb_svn)},
    {"sim_xfam", KG_CONF_T_HEX, "", "8", "sim adapter: XFAM (16 hex); unset = the built-in value",
     F(ad.sim.xfam)},
    {"sim_td_attributes", KG_CONF_T_HEX, "", "8",
     "sim adapter: TDATTRIBUTES, 16 hex, little-endian bytes (0100000000000000 = DEBUG); "
     "unset = 0000001000000000 (SEPT_VE_DISABLE)",
     F(ad.sim.td_attributes)},
    {"sim_quote_version", KG_CONF_T_INT, "4", "4..5",
     "sim adapter: DCAP quote version to emit: 4, or 5 (TD report 1.5 body, with TEE_TCB_SVN2 and "
     "MRSERVICETD)",
     F(ad.sim.quote_version)},
    {NULL, 0, NULL, NULL, NULL, 0, 0}};

static const kg_conf_key *find_key(const char *name)
{
    for (const kg_conf_key *k = kg_config_keys; k->name != NULL; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

/* Path keys naming a file that decides what keygate trusts (a pinned root, a CA bundle): whoever
 * can write one chooses whom keygate trusts, so kg_config_check refuses it when group or others
 * may write it. A new CA or anchor key is one more name here. */
static const char *const trust_file_keys[] = {"ita_trust_anchor", "tls_ca_file",     "ita_tls_ca_file",
                                              "kbs_tls_ca_file",  "trustee_as_cert", NULL};

/* Refuses a file group or others may write (mode & 022), in the words of ita_read_api_key's check
 * (which, for a secret, refuses reading too). what: the key naming the file, or "" for keygate.conf. */
static int check_not_writable_by_others(const struct stat *st, const char *what, const char *path,
                                        kg_err *err)
{
    if ((st->st_mode & 022) == 0)
        return 1;
    return kg_err_set(err, KG_STEP_CONFIG, "%s%s%s: writable by group or others (mode %03o); chmod go-w it",
                      what, *what != '\0' ? " " : "", path, (unsigned)(st->st_mode & 0777));
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parses exactly n bytes of hex (2n digits). */
static int parse_hex(const char *s, size_t slen, unsigned char *out, size_t n)
{
    if (slen != 2 * n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

static int enum_has(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    const char *p = choices;

    while (*p != '\0') {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncmp(p, value, len) == 0)
            return 1;
        if (bar == NULL)
            break;
        p = bar + 1;
    }
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"))
        *out = 1;
    else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off"))
        *out = 0;
    else
        return 0;
    return 1;
}

static int copy_str(char *dst, size_t size, const char *v)
{
    size_t len = strlen(v);
    if (len >= size)
        return 0;
    memcpy(dst, v, len + 1);
    return 1;
}

/* Splits a comma list; calls check on each trimmed item. Returns the count or -1. */
static int for_each_item(const char *v, int (*check)(const char *, size_t, void *), void *arg)
{
    int count = 0;
    const char *p = v;

    if (*v == '\0')
        return 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        while (p < end && isspace((unsigned char)*p))
            p++;
        while (end > p && isspace((unsigned char)end[-1]))
            end--;
        if (end == p || !check(p, (size_t)(end - p), arg))
            return -1;
        count++;
        if (comma == NULL)
            return count;
        p = comma + 1;
    }
}

static int check_hex_item(const char *s, size_t len, void *arg)
{
    unsigned char tmp[64];
    size_t n = *(size_t *)arg;
    return n <= sizeof(tmp) && parse_hex(s, len, tmp, n);
}

struct uuid_acc {
    kg_config *cfg;
};

static int add_uuid_item(const char *s, size_t len, void *arg)
{
    kg_config *cfg = ((struct uuid_acc *)arg)->cfg;
    if (!kg_uuid_ok(s, len) || cfg->ita_policy_id_count >= KG_CONF_MAX_POLICY_IDS)
        return 0;
    memcpy(cfg->ita_policy_ids[cfg->ita_policy_id_count], s, 36);
    cfg->ita_policy_ids[cfg->ita_policy_id_count][36] = '\0';
    cfg->ita_policy_id_count++;
    return 1;
}

static int check_abs_path_item(const char *s, size_t len, void *arg)
{
    (void)arg;
    return len > 1 && s[0] == '/';
}

static int url_ok(const char *v)
{
    return strncmp(v, "https://", 8) == 0 || strncmp(v, "http://", 7) == 0;
}

int kg_config_set(kg_config *cfg, const char *key, const char *value, kg_err *err)
{
    const kg_conf_key *k = find_key(key);
    char *slot;

    if (k == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "unknown key '%s'", key);
    slot = (char *)cfg + k->off;
    switch (k->type) {
    case KG_CONF_T_STRING:
    case KG_CONF_T_PATH:
        if (!copy_str(slot, k->size, value))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: value too long", key);
        if (slot == cfg->require_tcb_status) /* kg_config_check: background mode cannot enforce it */
            cfg->require_tcb_status_given = *value != '\0';
        return 1;
    case KG_CONF_T_URL:
        if (*value != '\0' && !url_ok(value))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: '%s' is not an http(s) URL", key, value);
        if (!copy_str(slot, k->size, value))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: value too long", key);
        /* a trailing '/' would double up when paths are appended */
        for (size_t n = strlen(slot); n > 8 && slot[n - 1] == '/'; n--)
            slot[n - 1] = '\0';
        return 1;
    case KG_CONF_T_ENUM:
        if (!enum_has(k->choices, value))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: '%s' is not one of %s", key, value, k->choices);
        return copy_str(slot, k->size, value);
    case KG_CONF_T_INT: {
        char *end;
        long lo, hi, v;
        errno = 0;
        v = strtol(value, &end, 10);
        sscanf(k->choices, "%ld..%ld", &lo, &hi);
        if (errno != 0 || end == value || *end != '\0' || v < lo || v > hi)
            return kg_err_set(err, KG_STEP_CONFIG, "%s: '%s' is not an integer in %s", key, value,
                              k->choices);
        if (k->size == sizeof(long))
            *(long *)slot = v;
        else
            *(int *)slot = (int)v;
        return 1;
    }
    case KG_CONF_T_BOOL:
        if (!parse_bool(value, (int *)slot))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: '%s' is not yes/no", key, value);
        return 1;
    case KG_CONF_T_UUID_LIST: {
        struct uuid_acc acc = {cfg};
        cfg->ita_policy_id_count = 0;
        if (for_each_item(value, add_uuid_item, &acc) < 0) {
            cfg->ita_policy_id_count = 0;
            return kg_err_set(err, KG_STEP_CONFIG, "%s: expected at most %d comma-separated UUIDs", key,
                              KG_CONF_MAX_POLICY_IDS);
        }
        return 1;
    }
    case KG_CONF_T_HEX_LIST: {
        size_t n = (size_t)atoi(k->choices);
        if (for_each_item(value, check_hex_item, &n) < 0)
            return kg_err_set(err, KG_STEP_CONFIG, "%s: expected comma-separated %zu-hex-digit values", key,
                              2 * n);
        if (!copy_str(slot, k->size, value))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: value too long", key);
        return 1;
    }
    case KG_CONF_T_PATH_LIST:
        /* absolute: a provider runs in any working directory (nginx's is /) */
        if (for_each_item(value, check_abs_path_item, NULL) < 0)
            return kg_err_set(err, KG_STEP_CONFIG,
                              "%s: expected comma-separated absolute paths or glob patterns", key);
        if (!copy_str(slot, k->size, value))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: value too long", key);
        return 1;
    case KG_CONF_T_HEX: {
        size_t n = (size_t)atoi(k->choices);
        unsigned char tmp[64];
        if (n > sizeof(tmp) || n != k->size || !parse_hex(value, strlen(value), tmp, n))
            return kg_err_set(err, KG_STEP_CONFIG, "%s: expected %zu hex digits", key, 2 * n);
        memcpy(slot, tmp, n);
        return 1;
    }
    }
    return kg_err_set(err, KG_STEP_INTERNAL, "config key '%s' has no type", key);
}

void kg_config_defaults(kg_config *cfg)
{
    kg_err ignored;

    memset(cfg, 0, sizeof(*cfg));
    kg_adapter_config_defaults(&cfg->ad);
    for (const kg_conf_key *k = kg_config_keys; k->name != NULL; k++)
        if (k->def[0] != '\0')
            kg_config_set(cfg, k->name, k->def, &ignored);
    cfg->require_tcb_status_given = 0; /* the default is not a setting */
}

int kg_config_load_file(kg_config *cfg, const char *path, kg_err *err)
{
    FILE *fp = fopen(path, "re");
    struct stat st;
    int ok;

    if (fp == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "%s: cannot open: %s", path, strerror(errno));
    /* the mode of what was opened (no stat-then-open race): it names the trust anchor and the URLs */
    if (fstat(fileno(fp), &st) != 0)
        ok = kg_err_set(err, KG_STEP_CONFIG, "%s: cannot stat: %s", path, strerror(errno));
    else
        ok = check_not_writable_by_others(&st, "", path, err) && kg_config_load_stream(cfg, fp, path, err);
    fclose(fp);
    return ok;
}

int kg_config_load_stream(kg_config *cfg, FILE *fp, const char *path, kg_err *err)
{
    char line[4096];
    int lineno = 0, ok = 0;

    while (fgets(line, sizeof(line), fp) != NULL) {
        char *p = line, *eq, *key, *val, *end;
        kg_err e;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(fp)) {
            kg_err_set(err, KG_STEP_CONFIG, "%s:%d: line too long", path, lineno);
            goto err;
        }
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        eq = strchr(p, '=');
        if (eq == NULL) {
            kg_err_set(err, KG_STEP_CONFIG, "%s:%d: expected 'key = value'", path, lineno);
            goto err;
        }
        key = p;
        end = eq;
        while (end > key && isspace((unsigned char)end[-1]))
            end--;
        *end = '\0';
        val = eq + 1;
        while (isspace((unsigned char)*val))
            val++;
        end = val + strlen(val);
        while (end > val && isspace((unsigned char)end[-1]))
            end--;
        *end = '\0';
        if (!kg_config_set(cfg, key, val, &e)) {
            /* e.msg is "config: <problem>": re-prefix with the location */
            kg_err_set(err, KG_STEP_CONFIG, "%s:%d: %s", path, lineno, e.msg + strlen("config: "));
            goto err;
        }
    }
    if (ferror(fp)) {
        kg_err_set(err, KG_STEP_CONFIG, "%s: read error", path);
        goto err;
    }
    ok = 1;
err:
    return ok;
}

/* Whether the Intel KBS may take ITA v2 tokens in passport mode. v1.3.0 does not: it reads
 * attester_type and attester_held_data at the top level of the token (docs/protocols/intel-kbs.md
 * §3.2). The 2026 generation (§8) does. With auto the answer waits for the KBS: the release asks
 * GET /kbs/v1/version before attesting (kg_intel_gen.h) and refuses there. */
static int kbs_intel_accepts_v2(const kg_config *cfg)
{
    return strcmp(cfg->kbs_intel_generation, "v1.3") != 0;
}

int kg_config_check_passport(const kg_config *cfg, kg_err *err)
{
    if (strcmp(cfg->kbs_type, "intel") == 0 && strcmp(cfg->kbs_mode, "passport") == 0 &&
        strcmp(cfg->ita_api_version, "v2") == 0 && !kbs_intel_accepts_v2(cfg))
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "ita_api_version = v2 cannot be used with kbs_type = intel, kbs_mode = passport and "
            "kbs_intel_generation = v1.3 (the Intel KBS v1.3.0 reads attester_type and "
            "attester_held_data at the top level of a v1 token and refuses a v2 token with 401); use "
            "ita_api_version = v1");
    return 1;
}

/* trustee_token and the keys that go with it (docs/supported-combinations.md, "Trustee tokens"). */
static int check_trustee_token(const kg_config *cfg, kg_err *err)
{
    int ear = strcmp(cfg->trustee_token, "ear") == 0;

    if (ear && strcmp(cfg->kbs_type, "trustee") != 0)
        return kg_err_set(err, KG_STEP_CONFIG,
                          "trustee_token = ear cannot be used with kbs_type = %s (only Trustee's KBS returns "
                          "EAR tokens); use kbs_type = trustee",
                          cfg->kbs_type);
    if (ear && cfg->trustee_as_cert[0] == '\0')
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "trustee_token = ear needs trustee_as_cert (the attestation service's token signing "
            "certificate or public key, the only trust of an EAR)");
    if (!ear && cfg->trustee_as_cert[0] != '\0')
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "trustee_as_cert is set but trustee_token = ita (an ITA token is verified against "
            "ita_trust_anchor, not an AS key); set trustee_token = ear or remove trustee_as_cert");
    /* an EAR carries Trustee's appraisal (ear.status), not ITA's attester_tcb_status */
    if (ear && cfg->require_tcb_status_given)
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "require_tcb_status cannot be enforced with trustee_token = ear (an EAR has no "
            "attester_tcb_status; the appraisal's ear.status, see trustee_ear_status, covers the "
            "TCB)");
    return 1;
}

/* The combinations that cannot work, one row each of docs/supported-combinations.md (whose test
 * checks this function against that table). Keys a combination ignores (kbs_mode and
 * ita_api_version with Trustee, ita_api_version in background mode) are no error. */
static int check_combinations(const kg_config *cfg, kg_err *err)
{
    int azure = strcmp(cfg->ad.name, "azure-tdx") == 0;

    if (strcmp(cfg->ad.name, "tdx-ioctl") == 0)
        return kg_err_set(err, KG_STEP_CONFIG,
                          "adapter = tdx-ioctl is not built yet (the name is reserved); use adapter = tdx "
                          "(configfs-tsm, Linux 6.7+)");
    if (azure && strcmp(cfg->kbs_type, "trustee") == 0)
        return kg_err_set(err, KG_STEP_CONFIG,
                          "adapter = azure-tdx cannot be used with kbs_type = trustee (Trustee wants Azure "
                          "evidence as az-tdx-vtpm, which keygate does not send); use adapter tdx or sim");
    /* the KBS forwards our quote to ITA itself, on the plain route: ITA would look for
     * SHA-512(nonce || user data) in REPORTDATA, where an Azure quote binds the runtime JSON */
    if (azure && strcmp(cfg->kbs_type, "intel") == 0 && strcmp(cfg->kbs_mode, "background") == 0)
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "adapter = azure-tdx cannot be used with kbs_type = intel and kbs_mode = background "
            "(the Intel KBS sends the quote to ITA's plain /appraisal/v1/attest route, not the "
            "Azure one, /appraisal/v1/attest/azure/tdxvm); use kbs_mode = passport");
    if (cfg->kbs_url[0] != '\0' && !kg_config_check_passport(cfg, err))
        return 0;
    return check_trustee_token(cfg, err);
}

int kg_config_check(const kg_config *cfg, kg_err *err)
{
    if (strcmp(cfg->ad.name, "sim") == 0 &&
        (cfg->ad.sim.pck_key_file[0] == '\0' || cfg->ad.sim.pck_chain_file[0] == '\0'))
        return kg_err_set(err, KG_STEP_CONFIG, "adapter = sim needs sim_pck_key and sim_pck_chain");
    if (!check_combinations(cfg, err))
        return 0;
    /* background: no token reaches keygate; the debug bit and the measurements are judged on our
     * own quote (kg_verify_evidence_policy), the TCB status only exists in ITA's appraisal */
    if (strcmp(cfg->kbs_type, "intel") == 0 && strcmp(cfg->kbs_mode, "background") == 0 &&
        cfg->require_tcb_status_given)
        return kg_err_set(err, KG_STEP_CONFIG,
                          "require_tcb_status cannot be enforced with kbs_mode = background (the TCB status "
                          "is in ITA's token, which only the KBS sees)");
    if (cfg->retry_wait_min_ms > cfg->retry_wait_max_ms)
        return kg_err_set(err, KG_STEP_CONFIG, "retry_wait_min_ms is larger than retry_wait_max_ms");
    for (const char *const *name = trust_file_keys; *name != NULL; name++) {
        const char *path = (const char *)cfg + find_key(*name)->off;
        struct stat st;
        /* the target of a symlink is what gets read; a missing file is left to its opener's message */
        if (path[0] != '\0' && stat(path, &st) == 0 && !check_not_writable_by_others(&st, *name, path, err))
            return 0;
    }
    return 1;
}

static void hex_of(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int kg_config_dump(const kg_config *cfg, char *buf, size_t len)
{
    size_t used = 0;

    for (const kg_conf_key *k = kg_config_keys; k->name != NULL; k++) {
        const char *slot = (const char *)cfg + k->off;
        char val[1300];
        int n;

        switch (k->type) {
        case KG_CONF_T_INT:
            snprintf(val, sizeof(val), "%ld",
                     k->size == sizeof(long) ? *(const long *)slot : (long)*(const int *)slot);
            break;
        case KG_CONF_T_BOOL: snprintf(val, sizeof(val), "%s", *(const int *)slot ? "yes" : "no"); break;
        case KG_CONF_T_HEX: hex_of((const unsigned char *)slot, k->size, val); break;
        case KG_CONF_T_UUID_LIST:
            val[0] = '\0';
            for (int i = 0; i < cfg->ita_policy_id_count; i++) {
                strcat(val, i ? "," : "");
                strcat(val, cfg->ita_policy_ids[i]);
            }
            break;
        default: snprintf(val, sizeof(val), "%s", slot);
        }
        n = snprintf(buf + used, len - used, "%s = %s\n", k->name, val);
        if (n < 0 || (size_t)n >= len - used)
            return 0;
        used += (size_t)n;
    }
    return 1;
}
