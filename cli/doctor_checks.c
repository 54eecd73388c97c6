/* SPDX-License-Identifier: Apache-2.0 */
/* keygate doctor: configuration, platform, ITA, clock, trust anchor, KBS and release checks. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "doctor.h"
#include "ita_client.h"
#include "ita_jwks.h"
#include "kg_attest.h"
#include "kg_b64.h"
#include "kg_http.h"
#include "kg_libctx.h"
#include "kg_release.h"

#define DOCTOR_HTTP_TIMEOUT_MS 5000L

doctor_status doctor_set(doctor_result *r, doctor_status st, const char *fix, const char *fmt, ...)
{
    va_list ap;

    r->status = st;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
    va_end(ap);
    snprintf(r->fix, sizeof(r->fix), "%s", fix ? fix : "");
    return st;
}

/* The cause without the "<step>: " prefix of a kg_err message. */
static const char *cause(const kg_err *err)
{
    const char *colon = strstr(err->msg, ": ");
    return colon != NULL && (size_t)(colon - err->msg) < 16 ? colon + 2 : err->msg;
}

/* One attempt, short timeouts: doctor reports, it does not wait out an outage. */
static void http_opts(const kg_config *cfg, kg_service svc, kg_http_opts *o)
{
    kg_config_http_opts(cfg, svc, o);
    o->max_attempts = 1;
    if (o->timeout_ms <= 0 || o->timeout_ms > DOCTOR_HTTP_TIMEOUT_MS)
        o->timeout_ms = DOCTOR_HTTP_TIMEOUT_MS;
}

/* The TLS trust of a service, for the detail line: "CA file <path>" or "system store". */
static const char *trust_of(const kg_config *cfg, kg_service svc, char *buf, size_t len)
{
    const char *ca = kg_config_ca_file(cfg, svc);
    if (ca[0] == '\0')
        return "system store";
    snprintf(buf, len, "CA file %s", ca);
    return buf;
}

/* The fix for a failed HTTP exchange (transport or TLS), from curl's message in err. */
static const char *transport_fix(const kg_err *err, const char *url_key)
{
    static char fix[512];

    if (strstr(err->msg, "SSL") != NULL || strstr(err->msg, "certificate") != NULL)
        snprintf(fix, sizeof(fix),
                 "TLS verification failed: set tls_ca_file (or %s for this service alone) to the CA "
                 "bundle that signs the server's certificate (empty = the system store), and check that "
                 "%s names the host in that certificate",
                 strncmp(url_key, "kbs", 3) == 0 ? "kbs_tls_ca_file" : "ita_tls_ca_file", url_key);
    else if (strstr(err->msg, "resolve") != NULL)
        snprintf(fix, sizeof(fix), "check the host name in %s and DNS (or the proxy variables)", url_key);
    else
        snprintf(fix, sizeof(fix),
                 "check that %s is right and reachable from here (firewall, proxy: https_proxy/no_proxy), "
                 "and that the service is up",
                 url_key);
    return fix;
}

doctor_status doctor_check_config(doctor_ctx *d, doctor_result *r)
{
    kg_err err;

    kg_err_clear(&err);
    d->cfg_ok = kg_cli_load_config(&d->common, &d->cfg, &err);
    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_FAIL,
                          "fix the line named (keys: docs/configuration.md, keygate.conf(5)); "
                          "point --config or KEYGATE_CONF at the file",
                          "%s", cause(&err));
    return doctor_set(r, DOCTOR_OK, NULL, "%s: adapter %s, ITA %s, KBS %s (%s, %s)", d->config_path,
                      d->cfg.ad.name, d->cfg.ita_api_url, d->cfg.kbs_url[0] ? d->cfg.kbs_url : "(none)",
                      d->cfg.kbs_type, d->cfg.kbs_mode);
}

static const char *platform_fix(const char *adapter)
{
    if (strcmp(adapter, "tdx") == 0)
        return "run inside a TDX guest with Linux 6.7+ and the tdx_guest driver; mount configfs "
               "(mount -t configfs none /sys/kernel/config) so tsm_report_dir exists; the host needs a "
               "quote generation service (QGS); run as root or with write access to the report dir";
    if (strcmp(adapter, "tdx-ioctl") == 0)
        return "run inside a TDX guest whose tdx_guest driver provides tdx_guest_device (/dev/tdx_guest), "
               "as root; or use adapter = tdx on Linux 6.7+";
    if (strcmp(adapter, "azure-tdx") == 0)
        return "run on an Azure TDX confidential VM (DCesv5/ECesv5/DCesv6) with access to the vTPM "
               "(root or group tss on /dev/tpmrm0, azure_tcti) and to IMDS (169.254.169.254)";
    return "set sim_pck_key and sim_pck_chain (the simulated TD is for demos and tests only)";
}

doctor_status doctor_check_platform(doctor_ctx *d, doctor_result *r)
{
    kg_evidence ev;
    kg_err err;
    const char *what;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    memset(&ev, 0, sizeof(ev));
    kg_err_clear(&err);
    /* a real quote without nonce or user data: proves the whole path down to the QGS/IMDS */
    if (!kg_collect_evidence(&d->cfg, NULL, NULL, 0, &ev, &err)) {
        kg_evidence_clear(&ev);
        return doctor_set(r, DOCTOR_FAIL, platform_fix(d->cfg.ad.name), "%s", cause(&err));
    }
    if (strcmp(d->cfg.ad.name, "tdx") == 0)
        what = "configfs-tsm at tsm_report_dir, provider tdx_guest";
    else if (strcmp(d->cfg.ad.name, "tdx-ioctl") == 0)
        what = "tdx_guest_device";
    else if (strcmp(d->cfg.ad.name, "azure-tdx") == 0)
        what = "vTPM NV indices 0x01400001/0x01400002 and IMDS";
    else
        what = "SIMULATED TD: demos and tests only, its quotes verify only against the local stack";
    doctor_set(r, DOCTOR_OK, NULL, "adapter %s: a %zu-byte quote from %s", d->cfg.ad.name, ev.quote_len,
               what);
    kg_evidence_clear(&ev);
    return DOCTOR_OK;
}

doctor_status doctor_check_ita(doctor_ctx *d, doctor_result *r)
{
    char trust[KG_CONF_STR + 16];
    ita_client_opts copts;
    ita_client *ita = NULL;
    ita_nonce nonce;
    kg_err err;
    const ita_call_meta *meta;
    doctor_status st;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    memset(&copts, 0, sizeof(copts));
    memset(&nonce, 0, sizeof(nonce));
    kg_err_clear(&err);
    copts.api_url = d->cfg.ita_api_url;
    copts.base_url = d->cfg.ita_base_url;
    copts.api_key_file = d->cfg.ita_api_key_file;
    copts.api_key = d->api_key;
    http_opts(&d->cfg, KG_SVC_ITA, &copts.http);
    if ((ita = ita_client_new(&copts, &err)) == NULL) {
        st = doctor_set(r, DOCTOR_FAIL,
                        "put the ITA API key (one line) in ita_api_key_file, owned by root, chmod 600; or "
                        "pass it on stdin with --api-key-file -",
                        "%s", cause(&err));
        goto end;
    }
    if (!ita_get_nonce(ita, &nonce, &err)) {
        meta = ita_client_last_meta(ita);
        if (meta->status == 401 || meta->status == 403)
            st = doctor_set(r, DOCTOR_FAIL,
                            "ITA rejected the API key: put a valid attestation API key of your ITA "
                            "subscription (portal: API keys) in ita_api_key_file",
                            "API key rejected: %s", cause(&err));
        else if (meta->status != 0)
            st = doctor_set(r, DOCTOR_FAIL,
                            "check ita_api_url (https://api.trustauthority.intel.com or the EU host)", "%s",
                            cause(&err));
        else
            st = doctor_set(r, DOCTOR_FAIL, transport_fix(&err, "ita_api_url"), "%s", cause(&err));
        goto end;
    }
    meta = ita_client_last_meta(ita);
    st = doctor_set(r, DOCTOR_OK, NULL, "nonce from %s: HTTP %ld, TLS verified (%s), API key accepted%s%s",
                    d->cfg.ita_api_url, meta->status, trust_of(&d->cfg, KG_SVC_ITA, trust, sizeof(trust)),
                    meta->trace_id[0] ? " (trace-id " : "", meta->trace_id);
    if (meta->trace_id[0])
        strncat(r->detail, ")", sizeof(r->detail) - strlen(r->detail) - 1);
end:
    ita_nonce_clear(&nonce);
    ita_client_free(ita);
    return st;
}

/* GET {ita_base_url}/certs: reachability of the portal host, the JWKS for the anchor check and
 * the Date header for the clock check. No API key is sent there. */
doctor_status doctor_check_jwks(doctor_ctx *d, doctor_result *r)
{
    char trust[KG_CONF_STR + 16];
    kg_http_opts o;
    kg_http_response resp;
    kg_http *h = NULL;
    kg_err err;
    char url[KG_CONF_STR + 16];
    cJSON *doc = NULL, *keys;
    doctor_status st;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    memset(&resp, 0, sizeof(resp));
    kg_err_clear(&err);
    http_opts(&d->cfg, KG_SVC_ITA, &o);
    snprintf(url, sizeof(url), "%s/certs", d->cfg.ita_base_url);
    if ((h = kg_http_new(&o, &err)) == NULL ||
        !kg_http_request(h, KG_STEP_VERIFY, "GET", url, NULL, NULL, 0, ITA_JWKS_MAX_LEN, &resp, &err)) {
        st = doctor_set(r, DOCTOR_FAIL, transport_fix(&err, "ita_base_url"), "%s", cause(&err));
        goto end;
    }
    if (resp.date[0] != '\0') {
        time_t t = curl_getdate(resp.date, NULL);
        if (t > 0) {
            d->have_date = 1;
            d->date_skew_s = (long)(time(NULL) - t);
        }
    }
    if (resp.status != 200) {
        kg_http_status_error(&err, KG_STEP_VERIFY, "GET", url, &resp);
        st = doctor_set(r, DOCTOR_FAIL,
                        "check ita_base_url: the portal host (https://portal.trustauthority.intel.com), "
                        "not the API host",
                        "%s", cause(&err));
        goto end;
    }
    if (!ita_jwks_check((const char *)resp.body, resp.body_len, &err) || resp.body_len >= sizeof(d->jwks)) {
        st = doctor_set(r, DOCTOR_FAIL, "check ita_base_url: it must serve ITA's JWKS at /certs", "%s: %s",
                        url, cause(&err));
        goto end;
    }
    memcpy(d->jwks, resp.body, resp.body_len + 1);
    d->jwks_len = resp.body_len;
    doc = cJSON_Parse(d->jwks);
    keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    st = doctor_set(r, DOCTOR_OK, NULL, "JWKS from %s: HTTP 200, TLS verified (%s), %d signing key%s", url,
                    trust_of(&d->cfg, KG_SVC_ITA, trust, sizeof(trust)), cJSON_GetArraySize(keys),
                    cJSON_GetArraySize(keys) == 1 ? "" : "s");
end:
    cJSON_Delete(doc);
    kg_http_response_clear(&resp);
    kg_http_free(h);
    return st;
}

doctor_status doctor_check_clock(doctor_ctx *d, doctor_result *r)
{
    long skew = d->date_skew_s, limit = d->cfg.token_leeway_s;

    if (!d->have_date)
        return doctor_set(r, DOCTOR_SKIP, NULL,
                          "no Date header from ITA to compare with (see the ITA checks)");
    if (labs(skew) > limit)
        return doctor_set(r, DOCTOR_FAIL,
                          "synchronise the clock (timedatectl set-ntp true, or chrony/systemd-timesyncd); "
                          "tokens are checked against it",
                          "local clock is %ld s %s ITA's Date header (token_leeway_s = %ld)", labs(skew),
                          skew > 0 ? "ahead of" : "behind", limit);
    return doctor_set(r, DOCTOR_OK, NULL,
                      "local clock within %ld s of ITA's Date header (token_leeway_s = %ld)", labs(skew),
                      limit);
}

/* Decodes x5c (standard base64 DER, leaf first) into certificates. Returns NULL if malformed. */
static STACK_OF(X509) * x5c_chain(const cJSON *x5c)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    const cJSON *item;

    if (chain == NULL || !cJSON_IsArray(x5c) || cJSON_GetArraySize(x5c) == 0 ||
        cJSON_GetArraySize(x5c) > ITA_JWKS_MAX_X5C)
        goto err;
    cJSON_ArrayForEach(item, x5c)
    {
        unsigned char *der = NULL;
        size_t len = 0;
        X509 *cert;

        if (!cJSON_IsString(item) || !kg_b64_decode(item->valuestring, strlen(item->valuestring), &der, &len))
            goto err;
        cert = ita_x509_from_der(der, len);
        free(der);
        if (cert == NULL || !sk_X509_push(chain, cert)) {
            X509_free(cert);
            goto err;
        }
    }
    return chain;
err:
    sk_X509_pop_free(chain, X509_free);
    return NULL;
}

/* Verifies one JWKS entry's x5c to the pinned store. Returns 1, or 0 with why filled. */
static int entry_chains(X509_STORE *store, const cJSON *entry, char *why, size_t why_len)
{
    STACK_OF(X509) *chain = x5c_chain(cJSON_GetObjectItemCaseSensitive(entry, "x5c"));
    X509_STORE_CTX *vctx = NULL;
    int ok = 0;

    if (chain == NULL) {
        snprintf(why, why_len, "x5c missing or malformed");
        return 0;
    }
    if ((vctx = X509_STORE_CTX_new_ex(kg_libctx(), NULL)) == NULL ||
        !X509_STORE_CTX_init(vctx, store, sk_X509_value(chain, 0), chain)) {
        snprintf(why, why_len, "out of memory");
        goto end;
    }
    ok = X509_verify_cert(vctx) == 1;
    if (!ok)
        snprintf(why, why_len, "%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
end:
    X509_STORE_CTX_free(vctx);
    sk_X509_pop_free(chain, X509_free);
    return ok;
}

static const char *anchor_fix =
    "ita_trust_anchor must be the PEM root that signs ITA's token-signing chain (Intel's ITA root "
    "for the production service; the stack's ita-root-ca.pem for the local stack); never a root "
    "taken from the JWKS";

doctor_status doctor_check_anchor(doctor_ctx *d, doctor_result *r)
{
    X509_STORE *store = NULL;
    STACK_OF(X509_OBJECT) * objs;
    cJSON *doc = NULL, *keys, *entry;
    kg_err err;
    char subject[256] = "", why[256] = "";
    int total = 0, good = 0;
    doctor_status st;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    if (d->cfg.ita_trust_anchor[0] == '\0')
        return doctor_set(r, DOCTOR_FAIL, anchor_fix,
                          "ita_trust_anchor is not set: no token can be verified");
    kg_err_clear(&err);
    if ((store = X509_STORE_new()) == NULL || !ita_load_anchors(store, d->cfg.ita_trust_anchor, &err)) {
        st = doctor_set(r, DOCTOR_FAIL, anchor_fix, "%s", cause(&err));
        goto end;
    }
    /* the anchors themselves: in date and CAs */
    objs = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *c = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (c == NULL)
            continue;
        X509_NAME_oneline(X509_get_subject_name(c), subject, sizeof(subject));
        if (X509_cmp_current_time(X509_get0_notAfter(c)) <= 0 ||
            X509_cmp_current_time(X509_get0_notBefore(c)) >= 0) {
            st = doctor_set(r, DOCTOR_FAIL, anchor_fix, "%s: %s is outside its validity period",
                            d->cfg.ita_trust_anchor, subject);
            goto end;
        }
        if (X509_check_ca(c) == 0) {
            st = doctor_set(r, DOCTOR_FAIL, anchor_fix, "%s: %s is not a CA certificate",
                            d->cfg.ita_trust_anchor, subject);
            goto end;
        }
    }
    if (d->jwks_len == 0) {
        st = doctor_set(r, DOCTOR_FAIL, "see the ita-certs line: the JWKS could not be fetched",
                        "%s (%s) loads, but without the JWKS the chain cannot be checked",
                        d->cfg.ita_trust_anchor, subject);
        goto end;
    }
    doc = cJSON_Parse(d->jwks);
    keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    cJSON_ArrayForEach(entry, keys)
    {
        char this_why[160];
        total++;
        if (entry_chains(store, entry, this_why, sizeof(this_why)))
            good++;
        else if (why[0] == '\0') {
            const cJSON *kid = cJSON_GetObjectItemCaseSensitive(entry, "kid");
            snprintf(why, sizeof(why), "kid %.40s: %s", cJSON_IsString(kid) ? kid->valuestring : "?",
                     this_why);
        }
    }
    if (good == 0)
        st = doctor_set(r, DOCTOR_FAIL, anchor_fix, "no JWKS signing key chains to the pinned %s (%s): %s",
                        d->cfg.ita_trust_anchor, subject, total ? why : "the JWKS has no keys");
    else
        st = doctor_set(r, DOCTOR_OK, NULL, "%d of %d JWKS signing key%s chain%s to the pinned root %s", good,
                        total, total == 1 ? "" : "s", good == 1 ? "s" : "", subject);
end:
    cJSON_Delete(doc);
    X509_STORE_free(store);
    return st;
}

doctor_status doctor_check_kbs(doctor_ctx *d, doctor_result *r)
{
    char trust[KG_CONF_STR + 16];
    kg_http_opts o;
    kg_http_response resp;
    kg_http *h = NULL;
    kg_err err;
    char url[KG_CONF_STR + 32];
    int intel;
    doctor_status st;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    if (d->cfg.kbs_url[0] == '\0')
        return doctor_set(r, DOCTOR_SKIP, NULL,
                          "kbs_url is not set (needed to release keys; references may name their KBS)");
    memset(&resp, 0, sizeof(resp));
    kg_err_clear(&err);
    http_opts(&d->cfg, KG_SVC_KBS, &o);
    intel = strcmp(d->cfg.kbs_type, "intel") == 0;
    /* a read-only route: never a transfer (the stack's request log proves it in the tests) */
    snprintf(url, sizeof(url), "%s%s", d->cfg.kbs_url, intel ? "/kbs/v1/version" : "/");
    if ((h = kg_http_new(&o, &err)) == NULL ||
        !kg_http_request(h, KG_STEP_TRANSFER, "GET", url, NULL, NULL, 0, 64 * 1024, &resp, &err)) {
        st = doctor_set(r, DOCTOR_FAIL, transport_fix(&err, "kbs_url"), "%s", cause(&err));
        goto end;
    }
    if (intel && resp.status != 200) {
        kg_http_status_error(&err, KG_STEP_TRANSFER, "GET", url, &resp);
        st = doctor_set(r, DOCTOR_FAIL,
                        "check kbs_url: the Intel KBS base URL, without /kbs/v1 (e.g. https://kbs:9443)",
                        "%s", cause(&err));
        goto end;
    }
    st = doctor_set(r, DOCTOR_OK, NULL, "%s KBS at %s: HTTP %ld, TLS verified (%s; no key requested)",
                    d->cfg.kbs_type, d->cfg.kbs_url, resp.status,
                    trust_of(&d->cfg, KG_SVC_KBS, trust, sizeof(trust)));
end:
    kg_http_response_clear(&resp);
    kg_http_free(h);
    return st;
}

doctor_status doctor_check_release(doctor_ctx *d, doctor_result *r)
{
    struct stat stbuf;
    kg_release_ctx *ctx = NULL;
    kg_keyref ref;
    EVP_PKEY *key = NULL;
    kg_err err;
    doctor_status st;
    int is_file = stat(d->release_test, &stbuf) == 0;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    memset(&ref, 0, sizeof(ref));
    kg_err_clear(&err);
    if (!(is_file ? kg_keyref_load(d->release_test, &ref, &err)
                  : kg_keyref_for_id(&d->cfg, d->release_test, NULL, &ref, &err)) ||
        (ctx = kg_release_ctx_new(&d->cfg, &err)) == NULL ||
        (d->api_key != NULL && !kg_release_ctx_set_api_key(ctx, d->api_key, &err)) ||
        !kg_release_key(ctx, &ref, &key, NULL, &err)) {
        st = doctor_set(
            r, DOCTOR_FAIL,
            "the message names the failed step; for policy refusals compare the KBS key's policy "
            "with 'keygate evidence --no-nonce --out q.bin && keygate evidence --parse-quote q.bin'",
            "%s", err.msg);
        goto end;
    }
    st = doctor_set(r, DOCTOR_OK, NULL, "released key %s (%s, %d bits)%s; only its public key was kept",
                    ref.key_id, EVP_PKEY_get0_type_name(key), EVP_PKEY_get_bits(key),
                    is_file ? ", equal to the reference's public key" : "");
end:
    EVP_PKEY_free(key);
    kg_keyref_clear(&ref);
    kg_release_ctx_free(ctx);
    return st;
}
