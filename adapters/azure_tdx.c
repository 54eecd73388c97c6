/* SPDX-License-Identifier: Apache-2.0 */
/* azure-tdx: Azure TDX CVMs through the vTPM NV indices and IMDS (azure_tdx.h). */
#include "azure_tdx.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "hcl_report.h"
#include "kg_time.h"
#include "tdx_quote.h"

#define AZ "adapter azure-tdx: "
#define POLL_FIRST_MS 5
#define POLL_MAX_MS 200
#define NV_BUFFER_FALLBACK 512

typedef struct vtpm {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
} vtpm;

static int tpm_fail(kg_err *err, const char *what, TSS2_RC rc)
{
    return kg_err_set(err, KG_STEP_EVIDENCE, AZ "vTPM %s: %s (0x%x)", what, Tss2_RC_Decode(rc), (unsigned)rc);
}

/* The TSS libraries log to stderr (e.g. three lines for a refused TCTI connection); our errors
 * are one line. Unless the user set TSS2_LOG (e.g. TSS2_LOG=all+debug to see them), silence
 * them, once, before the first TSS call (they read TSS2_LOG on first use). */
static void quiet_tss_log(void)
{
    setenv("TSS2_LOG", "all+none", 0);
}

static void vtpm_close(vtpm *t)
{
    if (t->esys != NULL)
        Esys_Finalize(&t->esys);
    if (t->tcti != NULL)
        Tss2_TctiLdr_Finalize(&t->tcti);
}

static int vtpm_open(const char *tcti_conf, vtpm *t, kg_err *err)
{
    TSS2_RC rc;

    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, quiet_tss_log);
    memset(t, 0, sizeof(*t));
    if ((rc = Tss2_TctiLdr_Initialize(tcti_conf, &t->tcti)) != TSS2_RC_SUCCESS) {
        t->tcti = NULL;
        return kg_err_set(err, KG_STEP_EVIDENCE, AZ "vTPM: cannot open TCTI '%s': %s (0x%x)", tcti_conf,
                          Tss2_RC_Decode(rc), (unsigned)rc);
    }
    if ((rc = Esys_Initialize(&t->esys, t->tcti, NULL)) != TSS2_RC_SUCCESS) {
        t->esys = NULL;
        vtpm_close(t);
        return tpm_fail(err, "ESYS initialization", rc);
    }
    return 1;
}

/* *exists = whether NV index h is defined (GetCapability: no TSS error logged when it is not). */
static int nv_exists(vtpm *t, TPM2_HANDLE h, int *exists, kg_err *err)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = 0;
    TSS2_RC rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, h, 1,
                                    &more, &cap);

    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(err, "GetCapability(handles)", rc);
    *exists = cap != NULL && cap->data.handles.count > 0 && cap->data.handles.handle[0] == h;
    Esys_Free(cap);
    return 1;
}

/* ESYS object and data size of a defined NV index. */
static int nv_open(vtpm *t, TPM2_HANDLE h, ESYS_TR *tr, uint16_t *size, kg_err *err)
{
    TPM2B_NV_PUBLIC *pub = NULL;
    TSS2_RC rc;

    if ((rc = Esys_TR_FromTPMPublic(t->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr)) !=
        TSS2_RC_SUCCESS)
        return kg_err_set(err, KG_STEP_EVIDENCE, AZ "vTPM NV index 0x%08x: %s (0x%x)", (unsigned)h,
                          Tss2_RC_Decode(rc), (unsigned)rc);
    if ((rc = Esys_NV_ReadPublic(t->esys, *tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL)) !=
        TSS2_RC_SUCCESS)
        return tpm_fail(err, "NV_ReadPublic", rc);
    *size = pub->nvPublic.dataSize;
    Esys_Free(pub);
    return 1;
}

/* Fails fast, before touching any NV state, when this is not an Azure CVM's vTPM. */
static int require_hcl_index(vtpm *t, kg_err *err)
{
    int exists = 0;
    if (!nv_exists(t, AZURE_NV_HCL_REPORT, &exists, err))
        return 0;
    if (!exists)
        return kg_err_set(
            err, KG_STEP_EVIDENCE,
            AZ "vTPM NV index 0x%08x (HCL report) is not defined: not an Azure TDX confidential VM?",
            AZURE_NV_HCL_REPORT);
    return 1;
}

/* Defines NV 0x01400002 if missing (owner hierarchy, 64 bytes, empty auth) and writes h. */
static int write_user_data(const kg_adapter_config *cfg, const uint8_t h[64], kg_err *err)
{
    TPM2B_NV_PUBLIC pub;
    TPM2B_AUTH auth;
    TPM2B_MAX_NV_BUFFER data;
    ESYS_TR tr = ESYS_TR_NONE;
    uint16_t size = 0;
    int exists = 0, ok = 0;
    TSS2_RC rc;
    vtpm t;

    if (!vtpm_open(cfg->azure_tcti, &t, err))
        return 0;
    if (!require_hcl_index(&t, err) || !nv_exists(&t, AZURE_NV_USER_DATA, &exists, err))
        goto err;
    if (!exists) {
        memset(&pub, 0, sizeof(pub));
        memset(&auth, 0, sizeof(auth));
        pub.nvPublic.nvIndex = AZURE_NV_USER_DATA;
        pub.nvPublic.nameAlg = TPM2_ALG_SHA256;
        pub.nvPublic.attributes =
            TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD | TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD;
        pub.nvPublic.dataSize = 64;
        if ((rc = Esys_NV_DefineSpace(t.esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                      &auth, &pub, &tr)) != TSS2_RC_SUCCESS) {
            tpm_fail(err, "NV_DefineSpace(0x01400002)", rc);
            goto err;
        }
    } else {
        if (!nv_open(&t, AZURE_NV_USER_DATA, &tr, &size, err))
            goto err;
        if (size != 64) {
            kg_err_set(err, KG_STEP_EVIDENCE, AZ "vTPM NV index 0x%08x holds %u bytes, not 64",
                       AZURE_NV_USER_DATA, (unsigned)size);
            goto err;
        }
    }
    data.size = 64;
    memcpy(data.buffer, h, 64);
    if ((rc = Esys_NV_Write(t.esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &data,
                            0)) != TSS2_RC_SUCCESS) {
        tpm_fail(err, "NV_Write(0x01400002)", rc);
        goto err;
    }
    ok = 1;
err:
    vtpm_close(&t);
    return ok;
}

/* Reads the whole HCL report index (<= HCL_REPORT_MAX) into buf, in chunks of the TPM's
 * maximum NV buffer size. */
static int read_report(const kg_adapter_config *cfg, uint8_t *buf, size_t *len, kg_err *err)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = 0;
    TPM2B_MAX_NV_BUFFER *data = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    uint16_t size = 0, chunk = NV_BUFFER_FALLBACK;
    int ok = 0;
    TSS2_RC rc;
    vtpm t;

    if (!vtpm_open(cfg->azure_tcti, &t, err))
        return 0;
    if (!require_hcl_index(&t, err) || !nv_open(&t, AZURE_NV_HCL_REPORT, &tr, &size, err))
        goto err;
    if (size < HCL_RUNTIME_DATA_OFFSET || size > HCL_REPORT_MAX) {
        kg_err_set(err, KG_STEP_EVIDENCE, AZ "vTPM NV index 0x%08x is %u bytes, not %d..%d",
                   AZURE_NV_HCL_REPORT, (unsigned)size, HCL_RUNTIME_DATA_OFFSET, HCL_REPORT_MAX);
        goto err;
    }
    rc = Esys_GetCapability(t.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                            TPM2_PT_NV_BUFFER_MAX, 1, &more, &cap);
    if (rc == TSS2_RC_SUCCESS && cap->data.tpmProperties.count > 0 &&
        cap->data.tpmProperties.tpmProperty[0].property == TPM2_PT_NV_BUFFER_MAX &&
        cap->data.tpmProperties.tpmProperty[0].value > 0)
        chunk = (uint16_t)(cap->data.tpmProperties.tpmProperty[0].value < TPM2_MAX_NV_BUFFER_SIZE
                               ? cap->data.tpmProperties.tpmProperty[0].value
                               : TPM2_MAX_NV_BUFFER_SIZE);
    Esys_Free(cap);
    for (uint16_t off = 0; off < size; off = (uint16_t)(off + data->size)) {
        uint16_t n = (uint16_t)(size - off < chunk ? size - off : chunk);
        Esys_Free(data);
        data = NULL;
        if ((rc = Esys_NV_Read(t.esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n,
                               off, &data)) != TSS2_RC_SUCCESS) {
            tpm_fail(err, "NV_Read(0x01400001)", rc);
            goto err;
        }
        if (data->size != n) {
            kg_err_set(err, KG_STEP_EVIDENCE, AZ "vTPM NV_Read(0x01400001) returned %u bytes, asked %u",
                       (unsigned)data->size, (unsigned)n);
            goto err;
        }
        memcpy(buf + off, data->buffer, n);
    }
    *len = size;
    ok = 1;
err:
    Esys_Free(data);
    vtpm_close(&t);
    return ok;
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/*
 * Checks one read of the HCL report. Returns 1 when it carries h and binds its runtime JSON;
 * 0 otherwise with *why set: "stale" (user-data is another value: keep waiting) or a parse
 * error (perr filled).
 */
static int report_ready(const uint8_t *buf, size_t len, const uint8_t h[64], hcl_report *r, int *stale,
                        kg_err *perr)
{
    uint8_t ud[64];

    *stale = 0;
    if (!hcl_report_parse(buf, len, r, perr) ||
        !hcl_runtime_user_data(r->runtime_data, r->runtime_data_len, ud, perr))
        return 0;
    if (CRYPTO_memcmp(ud, h, 64) != 0) {
        *stale = 1;
        return 0;
    }
    return hcl_report_check_runtime_hash(r, perr);
}

/* Polls NV 0x01400001 until report_ready, bounded by azure_report_timeout_ms. A malformed report
 * that reads the same twice in a row fails at once (not a torn read across our chunks). */
static int wait_for_report(const kg_adapter_config *cfg, const uint8_t h[64], uint8_t *buf, uint8_t *prev,
                           size_t *len, hcl_report *r, kg_err *err)
{
    long long start = kg_mono_ms_int(), deadline = start + cfg->azure_report_timeout_ms, wait = POLL_FIRST_MS,
              left;
    size_t prev_len = 0;
    int stale = 0, have_prev = 0;
    kg_err perr;

    for (;;) {
        kg_err_clear(&perr);
        if (!read_report(cfg, buf, len, err))
            return 0;
        if (report_ready(buf, *len, h, r, &stale, &perr))
            return 1;
        if (!stale && have_prev && prev_len == *len && memcmp(prev, buf, *len) == 0) {
            *err = perr;
            return 0;
        }
        left = deadline - kg_mono_ms_int();
        if (left <= 0) {
            const char *p = strstr(perr.msg, AZ);
            return kg_err_set(err, KG_STEP_EVIDENCE,
                              AZ
                              "timed out after %lld ms waiting for the HCL report (vTPM NV index 0x%08x) to "
                              "carry our hash in its runtime JSON user-data%s%s",
                              kg_mono_ms_int() - start, AZURE_NV_HCL_REPORT,
                              stale ? "" : "; last read: ", stale ? "" : (p ? p + strlen(AZ) : perr.msg));
        }
        memcpy(prev, buf, *len);
        prev_len = *len;
        have_prev = 1;
        sleep_ms(wait < left ? wait : left);
        wait = wait * 2 > POLL_MAX_MS ? POLL_MAX_MS : wait * 2;
    }
}

/* The IMDS callback's transport errors ("evidence: POST ...: Couldn't connect") name the adapter
 * too, so that every failure of this adapter reads "adapter azure-tdx: ...". */
static void name_adapter(kg_err *err)
{
    char rest[sizeof(err->msg)];
    const char *step = kg_step_name((kg_step)err->step), *p = err->msg;
    size_t n = strlen(step);

    if (strstr(err->msg, AZ) != NULL)
        return;
    if (strncmp(p, step, n) == 0 && p[n] == ':' && p[n + 1] == ' ')
        p += n + 2;
    snprintf(rest, sizeof(rest), "%s", p);
    kg_err_set(err, (kg_step)err->step, AZ "IMDS: %s", rest); /* keeps http_status, request/trace ids */
}

static int dup_bytes(const uint8_t *src, size_t n, uint8_t **dst, size_t *dst_len, kg_err *err)
{
    if (n == 0)
        return 1;
    if ((*dst = malloc(n)) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    memcpy(*dst, src, n);
    *dst_len = n;
    return 1;
}

int azure_tdx_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                      kg_err *err)
{
    uint8_t h[64], *buf = NULL, *prev = NULL, *quote = NULL;
    size_t len = 0, quote_len = 0;
    hcl_report r;
    tdx_quote q;
    int ok = 0;

    if (req->imds_tdquote == NULL)
        return kg_err_set(err, KG_STEP_EVIDENCE, AZ "no IMDS quote callback supplied");
    if (cfg->azure_report_timeout_ms <= 0)
        return kg_err_set(err, KG_STEP_EVIDENCE, AZ "azure_report_timeout_ms must be positive");
    /* Azure convention: 64 zero bytes when there is neither nonce nor user data */
    if (req->nonce_val_len == 0 && req->nonce_iat_len == 0 && req->user_data_len == 0)
        memset(h, 0, sizeof(h));
    else if (!tdx_report_data_compute(req->nonce_val, req->nonce_val_len, req->nonce_iat, req->nonce_iat_len,
                                      req->user_data, req->user_data_len, h))
        return kg_err_set(err, KG_STEP_EVIDENCE, AZ "SHA-512 of the user data failed");
    if ((buf = malloc(HCL_REPORT_MAX)) == NULL || (prev = malloc(HCL_REPORT_MAX)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (!write_user_data(cfg, h, err) || !wait_for_report(cfg, h, buf, prev, &len, &r, err))
        goto err;
    if (!req->imds_tdquote(req->imds_ctx, cfg->azure_imds_url, r.td_report, HCL_TD_REPORT_LEN, &quote,
                           &quote_len, err)) {
        name_adapter(err);
        goto err;
    }
    if (!tdx_quote_parse(quote, quote_len, &q, err))
        goto err;
    if (CRYPTO_memcmp(q.report_data, r.td_report + TD_REPORT_REPORTDATA_OFFSET, 64) != 0 ||
        CRYPTO_memcmp(q.mrtd, r.td_report + TD_REPORT_MRTD_OFFSET, 48) != 0) {
        kg_err_set(err, KG_STEP_EVIDENCE,
                   AZ "IMDS quote is not of our TD report (REPORTDATA or MRTD differ)");
        goto err;
    }
    if (!dup_bytes(r.runtime_data, r.runtime_data_len, &ev->runtime_data, &ev->runtime_data_len, err) ||
        !dup_bytes(req->user_data, req->user_data_len, &ev->user_data, &ev->user_data_len, err))
        goto err;
    ev->quote = quote;
    ev->quote_len = quote_len;
    quote = NULL;
    memcpy(ev->report_data, h, sizeof(h));
    ev->kind = KG_EVIDENCE_AZURE_TDX;
    ok = 1;
err:
    free(quote);
    free(buf);
    free(prev);
    return ok;
}
