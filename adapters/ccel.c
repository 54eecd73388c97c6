/* SPDX-License-Identifier: Apache-2.0 */
/* CCEL table parser and TCG2 crypto-agile event log replay (ccel.h). */
#include "ccel.h"

#include <openssl/evp.h>
#include <string.h>

#include "kg_libctx.h"

#define ACPI_HEADER_LEN 36
#define SPEC_ID_SIGNATURE "Spec ID Event03" /* 16 bytes with its NUL */
#define SPEC_ID_FIXED_LEN 28                /* signature .. numberOfAlgorithms */
#define SPEC_ID_ALGS_MAX 16
#define DIGEST_SIZE_MAX 64
#define MR_INDEX_END 0xFFFFFFFFu
#define SHA1_EVENT_HEADER_LEN 32 /* index, type, SHA-1 digest, event size */

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | ((uint64_t)get_u32(p + 4) << 32);
}

int ccel_table_parse(const uint8_t *buf, size_t len, ccel_table *table, kg_err *err)
{
    uint8_t sum = 0;

    memset(table, 0, sizeof(*table));
    if (buf == NULL || len < CCEL_TABLE_LEN)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL table: %zu bytes, need %d", buf ? len : 0,
                          CCEL_TABLE_LEN);
    if (memcmp(buf, "CCEL", 4) != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL table: signature is not 'CCEL'");
    table->length = get_u32(buf + 4);
    if (table->length < CCEL_TABLE_LEN || table->length > len)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL table: length field %u does not fit the %zu bytes read", table->length, len);
    for (uint32_t i = 0; i < table->length; i++)
        sum = (uint8_t)(sum + buf[i]);
    if (sum != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL table: checksum mismatch");
    table->revision = buf[8];
    memcpy(table->oem_id, buf + 10, 6);
    memcpy(table->oem_table_id, buf + 16, 8);
    table->cc_type = buf[ACPI_HEADER_LEN];
    table->cc_subtype = buf[ACPI_HEADER_LEN + 1];
    table->laml = get_u64(buf + 40);
    table->lasa = get_u64(buf + 48);
    if (table->cc_type != CCEL_CC_TYPE_TDX)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL table: CC type %u is not TDX (2)", table->cc_type);
    return 1;
}

const char *ccel_event_type_name(uint32_t event_type)
{
    static const struct {
        uint32_t type;
        const char *name;
    } names[] = {
        {0x0, "EV_PREBOOT_CERT"},
        {0x1, "EV_POST_CODE"},
        {0x3, "EV_NO_ACTION"},
        {0x4, "EV_SEPARATOR"},
        {0x5, "EV_ACTION"},
        {0x6, "EV_EVENT_TAG"},
        {0x7, "EV_S_CRTM_CONTENTS"},
        {0x8, "EV_S_CRTM_VERSION"},
        {0x9, "EV_CPU_MICROCODE"},
        {0xA, "EV_PLATFORM_CONFIG_FLAGS"},
        {0xB, "EV_TABLE_OF_DEVICES"},
        {0xC, "EV_COMPACT_HASH"},
        {0xD, "EV_IPL"},
        {0xE, "EV_IPL_PARTITION_DATA"},
        {0xF, "EV_NONHOST_CODE"},
        {0x10, "EV_NONHOST_CONFIG"},
        {0x11, "EV_NONHOST_INFO"},
        {0x12, "EV_OMIT_BOOT_DEVICE_EVENTS"},
        {0x80000001, "EV_EFI_VARIABLE_DRIVER_CONFIG"},
        {0x80000002, "EV_EFI_VARIABLE_BOOT"},
        {0x80000003, "EV_EFI_BOOT_SERVICES_APPLICATION"},
        {0x80000004, "EV_EFI_BOOT_SERVICES_DRIVER"},
        {0x80000005, "EV_EFI_RUNTIME_SERVICES_DRIVER"},
        {0x80000006, "EV_EFI_GPT_EVENT"},
        {0x80000007, "EV_EFI_ACTION"},
        {0x80000008, "EV_EFI_PLATFORM_FIRMWARE_BLOB"},
        {0x80000009, "EV_EFI_HANDOFF_TABLES"},
        {0x8000000A, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"},
        {0x8000000B, "EV_EFI_HANDOFF_TABLES2"},
        {0x8000000C, "EV_EFI_VARIABLE_BOOT2"},
        {0x80000010, "EV_EFI_HCRTM_EVENT"},
        {0x800000E0, "EV_EFI_VARIABLE_AUTHORITY"},
        {0x800000E1, "EV_EFI_SPDM_FIRMWARE_BLOB"},
        {0x800000E2, "EV_EFI_SPDM_FIRMWARE_CONFIG"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].type == event_type)
            return names[i].name;
    return NULL;
}

/* The digest algorithms the Spec ID event declares. */
typedef struct spec_algs {
    uint32_t count;
    uint16_t id[SPEC_ID_ALGS_MAX];
    uint16_t size[SPEC_ID_ALGS_MAX];
} spec_algs;

/* Reads the first (SHA-1 format) event and its Spec ID Event03 data. On success *next is the
 * offset after it. */
static int parse_spec_id(const uint8_t *log, size_t len, spec_algs *algs, ccel_event *ev, size_t *next,
                         kg_err *err)
{
    const uint8_t *spec;
    uint32_t data_len, vendor_len;
    size_t pos;
    int have_sha384 = 0;

    if (len < SHA1_EVENT_HEADER_LEN)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: %zu bytes, too short for the first event",
                          len);
    ev->mr_index = get_u32(log);
    ev->event_type = get_u32(log + 4);
    data_len = get_u32(log + 28);
    if (ev->event_type != CCEL_EV_NO_ACTION)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL event log: first event has type 0x%x, not EV_NO_ACTION", ev->event_type);
    if (data_len > len - SHA1_EVENT_HEADER_LEN || data_len < SPEC_ID_FIXED_LEN)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: first event data size %u is invalid",
                          data_len);
    spec = log + SHA1_EVENT_HEADER_LEN;
    if (memcmp(spec, SPEC_ID_SIGNATURE, sizeof(SPEC_ID_SIGNATURE)) != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL event log: first event is not 'Spec ID Event03' (not a crypto-agile log)");
    algs->count = get_u32(spec + 24);
    if (algs->count == 0 || algs->count > SPEC_ID_ALGS_MAX ||
        (size_t)algs->count * 4 + 1 > data_len - SPEC_ID_FIXED_LEN)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: Spec ID lists %u algorithms, invalid",
                          algs->count);
    pos = SPEC_ID_FIXED_LEN;
    for (uint32_t i = 0; i < algs->count; i++, pos += 4) {
        algs->id[i] = get_u16(spec + pos);
        algs->size[i] = get_u16(spec + pos + 2);
        if (algs->size[i] == 0 || algs->size[i] > DIGEST_SIZE_MAX)
            return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: algorithm 0x%04x has digest size %u",
                              algs->id[i], algs->size[i]);
        if (algs->id[i] == CCEL_ALG_SHA384) {
            if (algs->size[i] != CCEL_SHA384_LEN)
                return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: SHA-384 digest size %u is not 48",
                                  algs->size[i]);
            have_sha384 = 1;
        }
    }
    vendor_len = spec[pos];
    if (vendor_len > data_len - pos - 1)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: Spec ID vendor info overruns the event");
    if (!have_sha384)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: Spec ID lists no SHA-384 digest");
    ev->number = 0;
    ev->offset = 0;
    ev->sha384 = NULL;
    ev->extended = 0;
    ev->data = spec;
    ev->data_len = data_len;
    *next = SHA1_EVENT_HEADER_LEN + (size_t)data_len;
    return 1;
}

/* Reads one TCG_PCR_EVENT2 at log[pos]. Sets *end when the terminator is reached. */
static int parse_event2(const uint8_t *log, size_t len, size_t pos, const spec_algs *algs, ccel_event *ev,
                        size_t *next, int *end, kg_err *err)
{
    size_t p = pos;
    uint32_t count, data_len;

    *end = 0;
    if (len - pos < 4 || get_u32(log + pos) == MR_INDEX_END) {
        *end = 1;
        return 1;
    }
    if (len - pos < 12)
        return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: event %zu at offset %zu is truncated",
                          ev->number, pos);
    ev->offset = pos;
    ev->mr_index = get_u32(log + p);
    ev->event_type = get_u32(log + p + 4);
    count = get_u32(log + p + 8);
    p += 12;
    if (ev->mr_index > CCEL_MR_COUNT)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL event log: event %zu at offset %zu: MR index %u out of range", ev->number,
                          pos, ev->mr_index);
    if (count == 0 || count > algs->count)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL event log: event %zu at offset %zu: %u digests, invalid", ev->number, pos,
                          count);
    ev->sha384 = NULL;
    for (uint32_t i = 0; i < count; i++) {
        uint16_t alg, size = 0;
        if (len - p < 2)
            goto truncated;
        alg = get_u16(log + p);
        for (uint32_t a = 0; a < algs->count; a++)
            if (algs->id[a] == alg)
                size = algs->size[a];
        if (size == 0)
            return kg_err_set(err, KG_STEP_EVIDENCE,
                              "CCEL event log: event %zu at offset %zu: algorithm 0x%04x not in the Spec ID",
                              ev->number, pos, alg);
        if (len - p - 2 < size)
            goto truncated;
        if (alg == CCEL_ALG_SHA384)
            ev->sha384 = log + p + 2;
        p += 2 + (size_t)size;
    }
    if (ev->sha384 == NULL)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL event log: event %zu at offset %zu has no SHA-384 digest", ev->number, pos);
    if (len - p < 4)
        goto truncated;
    data_len = get_u32(log + p);
    p += 4;
    if (data_len > CCEL_EVENT_DATA_MAX)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "CCEL event log: event %zu at offset %zu: data size %u too large", ev->number, pos,
                          data_len);
    if (len - p < data_len)
        goto truncated;
    ev->data = log + p;
    ev->data_len = data_len;
    *next = p + data_len;
    return 1;
truncated:
    return kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: event %zu at offset %zu is truncated",
                      ev->number, pos);
}

static int extend(EVP_MD_CTX *md, const EVP_MD *sha384, uint8_t mr[CCEL_SHA384_LEN], const uint8_t *digest)
{
    unsigned int n = 0;

    return EVP_DigestInit_ex2(md, sha384, NULL) && EVP_DigestUpdate(md, mr, CCEL_SHA384_LEN) &&
           EVP_DigestUpdate(md, digest, CCEL_SHA384_LEN) && EVP_DigestFinal_ex(md, mr, &n) &&
           n == CCEL_SHA384_LEN;
}

int ccel_replay(const uint8_t *log, size_t len, uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN],
                size_t *events_len, ccel_event_cb cb, void *arg, kg_err *err)
{
    EVP_MD_CTX *md = NULL;
    EVP_MD *sha384 = NULL;
    spec_algs algs;
    ccel_event ev;
    size_t pos = 0, next = 0;
    int end = 0;

    memset(rtmr, 0, CCEL_MR_COUNT * CCEL_SHA384_LEN);
    memset(&ev, 0, sizeof(ev));
    memset(&algs, 0, sizeof(algs));
    if (events_len != NULL)
        *events_len = 0;
    if (log == NULL || len == 0) {
        kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log is empty");
        goto err;
    }
    if (len > CCEL_LOG_MAX) {
        kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: %zu bytes, more than %u", len, CCEL_LOG_MAX);
        goto err;
    }
    if ((md = EVP_MD_CTX_new()) == NULL ||
        (sha384 = EVP_MD_fetch(kg_libctx(), "SHA384", NULL)) == NULL) { /* never the app's context */
        kg_err_set(err, KG_STEP_INTERNAL, "CCEL replay: SHA-384 is not available");
        goto err;
    }
    if (!parse_spec_id(log, len, &algs, &ev, &pos, err))
        goto err;
    if (cb != NULL)
        cb(arg, &ev);
    for (ev.number = 1;; ev.number++) {
        if (ev.number > CCEL_EVENTS_MAX) {
            kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log: more than %d events", CCEL_EVENTS_MAX);
            goto err;
        }
        if (!parse_event2(log, len, pos, &algs, &ev, &next, &end, err))
            goto err;
        if (end)
            break;
        ev.extended = ev.mr_index >= 1 && ev.event_type != CCEL_EV_NO_ACTION;
        if (ev.extended && !extend(md, sha384, rtmr[ev.mr_index - 1], ev.sha384)) {
            kg_err_set(err, KG_STEP_INTERNAL, "CCEL replay: SHA-384 failed");
            goto err;
        }
        if (cb != NULL)
            cb(arg, &ev);
        pos = next;
    }
    if (events_len != NULL)
        *events_len = pos;
    EVP_MD_CTX_free(md);
    EVP_MD_free(sha384);
    return 1;
err:
    memset(rtmr, 0, CCEL_MR_COUNT * CCEL_SHA384_LEN);
    EVP_MD_CTX_free(md);
    EVP_MD_free(sha384);
    return 0;
}
