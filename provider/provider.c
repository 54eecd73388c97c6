/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate.so: provider entry point, algorithm tables, reason codes, configuration.
 * Nothing here touches the network: init reads keygate.conf (and inline overrides from the
 * openssl.cnf section) once and keeps it in memory; releases happen when keys are loaded.
 */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/version.h"
#include "kg_libctx.h"
#include "kg_log.h"
#include "provider.h"

static OSSL_FUNC_core_get_params_fn *core_get_params;
static pthread_mutex_t kg_instances_lock = PTHREAD_MUTEX_INITIALIZER;
static int kg_instances; /* provider instances alive in this process */
#define KG_MAX_INSTANCES 16
static kg_provctx *kg_instance_list[KG_MAX_INSTANCES]; /* for the atfork child handler */
static pthread_once_t kg_atfork_once = PTHREAD_ONCE_INIT;

/* After fork the child keeps the released keys (nginx workers use the master's) but a lock held
 * by another parent thread would stay locked forever: re-initialise ours. No I/O here. */
static void kg_atfork_child(void)
{
    pthread_mutex_init(&kg_instances_lock, NULL);
    for (int i = 0; i < KG_MAX_INSTANCES; i++) {
        if (kg_instance_list[i] == NULL)
            continue;
        kg_keysource_atfork_child(kg_instance_list[i]->keys_src);
        kg_agent_client_atfork_child(kg_instance_list[i]->agent);
    }
}

static void kg_atfork_register(void)
{
    pthread_atfork(NULL, NULL, kg_atfork_child);
}
static OSSL_FUNC_core_new_error_fn *core_new_error;
static OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug;
static OSSL_FUNC_core_vset_error_fn *core_vset_error;

static OSSL_FUNC_provider_gettable_params_fn kg_prov_gettable_params;
static OSSL_FUNC_provider_get_params_fn kg_prov_get_params;
static OSSL_FUNC_provider_query_operation_fn kg_prov_query;
static OSSL_FUNC_provider_get_reason_strings_fn kg_prov_reason_strings;
static OSSL_FUNC_provider_teardown_fn kg_prov_teardown;

#define KG_PROPS "provider=keygate"
#define KG_RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define KG_EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"

static const OSSL_ALGORITHM kg_keymgmt[] = {{KG_RSA_NAMES, KG_PROPS, kg_rsa_keymgmt_functions, NULL},
                                            {KG_EC_NAMES, KG_PROPS, kg_ec_keymgmt_functions, NULL},
                                            {NULL, NULL, NULL, NULL}};

/* Signature names of our own (keymgmt.c's query_operation_name returns them): with "RSA" or
 * "ECDSA", every EVP_DigestSignInit on a keygate key first fetched the default provider's
 * implementation, tried to export our key to it (refused, error raised and popped) and only
 * then came to ours: +11% instructions per P-256 signature (bench/RESULTS.md, P1). */
static const OSSL_ALGORITHM kg_signature[] = {
    {KG_RSA_SIG_NAME, KG_PROPS, kg_rsa_signature_functions, NULL},
    {KG_ECDSA_SIG_NAME, KG_PROPS, kg_ecdsa_signature_functions, NULL},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM kg_asym_cipher[] = {{KG_RSA_NAMES, KG_PROPS, kg_rsa_asym_cipher_functions, NULL},
                                                {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM kg_keyexch[] = {{"ECDH", KG_PROPS, kg_ecdh_keyexch_functions, NULL},
                                            {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM kg_decoder[] = {
    {"DER", KG_PROPS ",input=pem", kg_pem_decoder_functions, NULL},
    {KG_RSA_NAMES, KG_PROPS ",input=der,structure=" KG_REF_STRUCTURE, kg_rsa_ref_decoder_functions, NULL},
    {KG_EC_NAMES, KG_PROPS ",input=der,structure=" KG_REF_STRUCTURE, kg_ec_ref_decoder_functions, NULL},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM kg_encoder[] = {
    {KG_RSA_NAMES, KG_PROPS ",output=der,structure=SubjectPublicKeyInfo", kg_rsa_spki_der_encoder_functions,
     NULL},
    {KG_RSA_NAMES, KG_PROPS ",output=pem,structure=SubjectPublicKeyInfo", kg_rsa_spki_pem_encoder_functions,
     NULL},
    {KG_RSA_NAMES, KG_PROPS ",output=text", kg_rsa_text_encoder_functions, NULL},
    {KG_EC_NAMES, KG_PROPS ",output=der,structure=SubjectPublicKeyInfo", kg_ec_spki_der_encoder_functions,
     NULL},
    {KG_EC_NAMES, KG_PROPS ",output=pem,structure=SubjectPublicKeyInfo", kg_ec_spki_pem_encoder_functions,
     NULL},
    {KG_EC_NAMES, KG_PROPS ",output=text", kg_ec_text_encoder_functions, NULL},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM kg_store[] = {{"keygate", KG_PROPS, kg_store_functions, NULL},
                                          {NULL, NULL, NULL, NULL}};

static const OSSL_PARAM kg_param_types[] = {
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0), OSSL_PARAM_END};

/* No colon in a string: OpenSSL prints its error lines colon-separated. The list with what each
 * means is in docs/man/keygate-provider.7.md (test_provider_errors.py compares the two). */
static const OSSL_ITEM kg_reason_strings[] = {
    {KG_R_NOT_AVAILABLE, "operation not available"},
    {KG_R_EXPORT_REFUSED, "private key export refused"},
    {KG_R_BAD_REFERENCE, "malformed key reference"},
    {KG_R_OPERATION, "operation failed"},
    {KG_R_REVOKED, "key revoked"},
    {KG_R_CONFIG, "configuration error (step config)"},
    {KG_R_WRAPKEY, "wrapping key failed (step wrapping-key)"},
    {KG_R_NONCE, "attestation nonce failed (step nonce)"},
    {KG_R_EVIDENCE, "TD evidence failed (step evidence)"},
    {KG_R_TOKEN, "attestation token failed (step token)"},
    {KG_R_VERIFY, "attestation token rejected (step verify)"},
    {KG_R_TRANSFER, "key transfer failed (step transfer)"},
    {KG_R_UNWRAP, "released key does not unwrap (step unwrap)"},
    {KG_R_HANDOVER, "key hand-over failed (step handover)"},
    {KG_R_INTERNAL, "internal error (step internal)"},
    {KG_R_MATCH, "released key is not the reference's key (step match)"},
    {0, NULL}};

static const OSSL_PARAM *kg_prov_gettable_params(void *provctx)
{
    return kg_param_types;
}

static int kg_prov_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, "keygate attested-key provider"))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, KEYGATE_VERSION_STR))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, KEYGATE_BUILD_INFO))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
    if (p != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ALGORITHM *kg_prov_query(void *provctx, int operation_id, int *no_cache)
{
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_KEYMGMT: return kg_keymgmt;
    case OSSL_OP_SIGNATURE: return kg_signature;
    case OSSL_OP_ASYM_CIPHER: return kg_asym_cipher;
    case OSSL_OP_KEYEXCH: return kg_keyexch;
    case OSSL_OP_DECODER: return kg_decoder;
    case OSSL_OP_ENCODER: return kg_encoder;
    case OSSL_OP_STORE: return kg_store;
    default: return NULL;
    }
}

static const OSSL_ITEM *kg_prov_reason_strings(void *provctx)
{
    return kg_reason_strings;
}

static void kg_prov_teardown(void *provctx)
{
    kg_provctx *ctx = provctx;

    if (ctx == NULL)
        return;
    /* stops and joins every lease refresh before anything they use goes (OSSL_PROVIDER_unload
     * may dlclose us next); the last key reference zeroizes (secure heap) */
    kg_keysource_free(ctx->keys_src);
    kg_agent_client_free(ctx->agent);
    OSSL_LIB_CTX_free(ctx->corelibctx);
    OPENSSL_cleanse(&ctx->cfg, sizeof(ctx->cfg));
    free(ctx);
    /* the last instance frees our private library context (leak checkers, clean unload) */
    pthread_mutex_lock(&kg_instances_lock);
    for (int i = 0; i < KG_MAX_INSTANCES; i++)
        if (kg_instance_list[i] == ctx)
            kg_instance_list[i] = NULL;
    if (--kg_instances == 0) {
        kg_signature_cleanup();
        kg_libctx_cleanup();
    }
    pthread_mutex_unlock(&kg_instances_lock);
}

static void raise_str(const kg_provctx *ctx, const char *file, int line, const char *func, int reason,
                      const char *fmt, ...)
{
    const OSSL_CORE_HANDLE *handle = ctx != NULL ? ctx->handle : NULL;
    va_list ap;

    if (handle == NULL) { /* keymgmt load has no provctx: any instance's handle names keygate */
        pthread_mutex_lock(&kg_instances_lock);
        for (int i = 0; i < KG_MAX_INSTANCES && handle == NULL; i++)
            if (kg_instance_list[i] != NULL)
                handle = kg_instance_list[i]->handle;
        pthread_mutex_unlock(&kg_instances_lock);
    }
    if (handle == NULL || core_new_error == NULL || core_vset_error == NULL)
        return;
    core_new_error(handle);
    if (core_set_error_debug != NULL)
        core_set_error_debug(handle, file, line, func);
    va_start(ap, fmt);
    core_vset_error(handle, (uint32_t)reason, fmt, ap);
    va_end(ap);
}

void kg_prov_raise(const kg_provctx *ctx, const char *file, int line, const char *func, int reason,
                   const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    raise_str(ctx, file, line, func, reason, "%s", msg);
}

void kg_prov_error(const kg_provctx *ctx, const char *file, int line, const char *func, int reason,
                   const char *fmt, ...)
{
    /* libcrypto asks for these and falls back (an export to the default provider, say): not
     * worth an error line on a server's stderr */
    int level = reason == KG_R_EXPORT_REFUSED || reason == KG_R_NOT_AVAILABLE ? KG_LOG_DEBUG : KG_LOG_ERROR;
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (kg_log_enabled(level))
        kg_log_write(level, file, line, "%s", msg);
    raise_str(ctx, file, line, func, reason, "%s", msg);
}

int kg_prov_step_message(const char *key_id, const kg_err *err, char *buf, size_t len)
{
    char extra[320] = "";
    int n = 0;

    /* kg_http_status_error puts them in the message; other failures of an exchange may not */
    if (err->http_status != 0 && strstr(err->msg, "HTTP ") == NULL)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, ", HTTP %ld", err->http_status);
    if (err->request_id[0] != '\0' && strstr(err->msg, err->request_id) == NULL)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, ", request-id %.128s", err->request_id);
    if (err->trace_id[0] != '\0' && strstr(err->msg, err->trace_id) == NULL)
        snprintf(extra + n, sizeof(extra) - (size_t)n, ", trace-id %.128s", err->trace_id);
    snprintf(buf, len, "keygate: %s%s%s%s%s%s%s", key_id ? "key " : "", key_id ? key_id : "",
             key_id ? ": " : "", err->msg[0] ? err->msg : kg_step_name((kg_step)err->step),
             extra[0] ? " (" : "", extra[0] ? extra + 2 : "", extra[0] ? ")" : "");
    return err->step >= KG_STEP_CONFIG && err->step <= KG_STEP_MATCH ? err->step : KG_R_INTERNAL;
}

void kg_prov_step_error(const kg_provctx *ctx, const char *file, int line, const char *func,
                        const char *key_id, const kg_err *err)
{
    char msg[1024];
    int reason = kg_prov_step_message(key_id, err, msg, sizeof(msg));

    kg_prov_error(ctx, file, line, func, reason, "%s", msg);
}

static const OSSL_DISPATCH kg_prov_dispatch[] = {
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))kg_prov_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))kg_prov_get_params},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))kg_prov_query},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))kg_prov_reason_strings},
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))kg_prov_teardown},
    {0, NULL}};

/* Reads the provider section: "config" names keygate.conf; any other key of keygate.conf may be
 * given inline and overrides the file. Only local file I/O here, never the network. */
static int kg_prov_load_config(kg_provctx *ctx)
{
    char *config = NULL;
    OSSL_PARAM p[] = {OSSL_PARAM_utf8_ptr("config", &config, 0), OSSL_PARAM_END};
    kg_err err;

    kg_config_defaults(&ctx->cfg);
    if (core_get_params == NULL || !core_get_params(ctx->handle, p))
        return 1;
    if (config != NULL && *config != '\0')
        snprintf(ctx->config_path, sizeof(ctx->config_path), "%s", config);
    if (ctx->config_path[0] != '\0' && !kg_config_load_file(&ctx->cfg, ctx->config_path, &err)) {
        KG_PROV_STEP_ERROR(ctx, NULL, &err);
        return 0;
    }
    for (const kg_conf_key *k = kg_config_keys; k->name != NULL; k++) {
        char *val = NULL;
        OSSL_PARAM q[] = {OSSL_PARAM_utf8_ptr(k->name, &val, 0), OSSL_PARAM_END};
        if (core_get_params(ctx->handle, q) && val != NULL && !kg_config_set(&ctx->cfg, k->name, val, &err)) {
            KG_PROV_ERROR(ctx, KG_R_CONFIG, "keygate: openssl.cnf: %s", err.msg);
            return 0;
        }
    }
    if (!kg_config_check(&ctx->cfg, &err)) {
        KG_PROV_STEP_ERROR(ctx, NULL, &err);
        return 0;
    }
    ctx->release_lazy = strcmp(ctx->cfg.release_mode, "lazy") == 0;
    kg_log_set_default_level(ctx->cfg.log_level);
    if (strcmp(ctx->cfg.backend, "agent") == 0) {
        /* the agent releases and holds the keys: no key source, no release context, no API key
         * read, no connection yet (the first key load opens one) */
        if ((ctx->agent = kg_agent_client_new(ctx->cfg.agent_socket, ctx->cfg.agent_timeout_ms, &err)) ==
            NULL) {
            KG_PROV_STEP_ERROR(ctx, NULL, &err);
            return 0;
        }
    } else if ((ctx->keys_src = kg_keysource_new(&ctx->cfg, &err)) == NULL) {
        /* the key source's release context reads the API key now: in nginx this is the master,
         * as root, and the workers (nobody, cleared environment) must never need the file. No
         * network. */
        KG_PROV_STEP_ERROR(ctx, NULL, &err);
        return 0;
    }
    if (kg_log_enabled(KG_LOG_DEBUG)) {
        char dump[16384];
        if (kg_config_dump(&ctx->cfg, dump, sizeof(dump)))
            KG_DEBUG("effective configuration (%s):\n%s", ctx->config_path, dump);
    }
    return 1;
}

__attribute__((visibility("default"))) int OSSL_provider_init(const OSSL_CORE_HANDLE *handle,
                                                              const OSSL_DISPATCH *in,
                                                              const OSSL_DISPATCH **out, void **provctx)
{
    const OSSL_DISPATCH *d;
    kg_provctx *ctx;

    for (d = in; d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS: core_get_params = OSSL_FUNC_core_get_params(d); break;
        case OSSL_FUNC_CORE_NEW_ERROR: core_new_error = OSSL_FUNC_core_new_error(d); break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG: core_set_error_debug = OSSL_FUNC_core_set_error_debug(d); break;
        case OSSL_FUNC_CORE_VSET_ERROR: core_vset_error = OSSL_FUNC_core_vset_error(d); break;
        default: break;
        }
    }
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return 0;
    ctx->handle = handle;
    pthread_once(&kg_atfork_once, kg_atfork_register);
    pthread_mutex_lock(&kg_instances_lock);
    kg_instances++;
    for (int i = 0; i < KG_MAX_INSTANCES; i++)
        if (kg_instance_list[i] == NULL) {
            kg_instance_list[i] = ctx;
            break;
        }
    pthread_mutex_unlock(&kg_instances_lock);
    /* a library context that knows the core's BIO methods, for BIO_new_from_core_bio */
    if ((ctx->corelibctx = OSSL_LIB_CTX_new_from_dispatch(handle, in)) == NULL || !kg_prov_load_config(ctx)) {
        kg_prov_teardown(ctx);
        return 0;
    }
    KG_DEBUG("keygate provider %s initialised", KEYGATE_VERSION_STR);
    *out = kg_prov_dispatch;
    *provctx = ctx;
    return 1;
}
