/* SPDX-License-Identifier: Apache-2.0 */
/* CCEL table parser and TCG2 event log replay (adapters/ccel.h) on the real GCP vectors and on
 * malformed input. Every malformed buffer is an exact-size heap copy, so ASan sees any overread. */
#include "kg_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccel.h"
#include "tdx_quote.h"
#include "tdx_tsm.h"

#define TABLE_FILE KG_VECTORS_DIR "/tdx-ccel-table-gcp-cos113.bin"
#define DATA_FILE KG_VECTORS_DIR "/tdx-ccel-data-gcp-cos113.bin"
#define QUOTE_FILE KG_VECTORS_DIR "/tdx-quote-gcp-cos113.bin"
#define GCP_EVENTS_LEN 18101
#define GCP_EVENTS 43
#define FIRST_EVENT2 65 /* 32-byte SHA-1 header + 33-byte Spec ID */

/* An exact-size heap copy of buf[0, len) (one byte for len 0). */
static uint8_t *exact_copy(const uint8_t *buf, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, buf, len);
    return p;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void fix_checksum(uint8_t *table, size_t len)
{
    uint8_t sum = 0;
    table[9] = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + table[i]);
    table[9] = (uint8_t)(0x100 - sum);
}

static void test_table_real(void **state)
{
    size_t len;
    uint8_t *buf = kg_test_read_file(TABLE_FILE, &len);
    ccel_table t;
    kg_err err;

    kg_err_clear(&err);
    assert_int_equal(len, CCEL_TABLE_LEN);
    assert_int_equal(ccel_table_parse(buf, len, &t, &err), 1);
    assert_int_equal(t.length, 56);
    assert_int_equal(t.revision, 1);
    assert_string_equal(t.oem_id, "INTEL ");
    assert_string_equal(t.oem_table_id, "EDK2    ");
    assert_int_equal(t.cc_type, CCEL_CC_TYPE_TDX);
    assert_int_equal(t.cc_subtype, 0);
    assert_true(t.laml == 0x40000);
    assert_true(t.lasa == 0xBEDBF000);
    free(buf);
    (void)state;
}

static void test_table_malformed(void **state)
{
    size_t len;
    uint8_t *real = kg_test_read_file(TABLE_FILE, &len), *p;
    ccel_table t;
    kg_err err;

    for (size_t n = 0; n < len; n++) { /* every truncation */
        p = exact_copy(real, n);
        assert_int_equal(ccel_table_parse(p, n, &t, &err), 0);
        assert_int_equal(err.step, KG_STEP_EVIDENCE);
        free(p);
    }
    assert_int_equal(ccel_table_parse(NULL, 0, &t, &err), 0);

    p = exact_copy(real, len);
    p[20] ^= 1; /* checksum */
    assert_int_equal(ccel_table_parse(p, len, &t, &err), 0);
    assert_non_null(strstr(err.msg, "checksum"));
    memcpy(p, real, len);
    p[0] = 'X'; /* signature */
    assert_int_equal(ccel_table_parse(p, len, &t, &err), 0);
    assert_non_null(strstr(err.msg, "signature"));
    memcpy(p, real, len);
    p[36] = 1; /* SEV */
    fix_checksum(p, len);
    assert_int_equal(ccel_table_parse(p, len, &t, &err), 0);
    assert_non_null(strstr(err.msg, "CC type 1 is not TDX"));
    memcpy(p, real, len);
    put_u32(p + 4, 57); /* length larger than the buffer */
    assert_int_equal(ccel_table_parse(p, len, &t, &err), 0);
    put_u32(p + 4, 40); /* shorter than the table */
    assert_int_equal(ccel_table_parse(p, len, &t, &err), 0);
    free(p);
    free(real);
    (void)state;
}

typedef struct event_count {
    size_t events, extended;
    uint32_t last_offset;
} event_count;

static void count_event(void *arg, const ccel_event *ev)
{
    event_count *c = arg;
    assert_int_equal(ev->number, c->events);
    c->events++;
    c->extended += (size_t)ev->extended;
    c->last_offset = (uint32_t)ev->offset;
    if (ev->number > 0)
        assert_non_null(ev->sha384);
}

static void test_replay_real_log_equals_quote(void **state)
{
    size_t len, qlen, events_len = 0;
    uint8_t *log = kg_test_read_file(DATA_FILE, &len), *quote = kg_test_read_file(QUOTE_FILE, &qlen);
    uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN];
    event_count c = {0, 0, 0};
    tdx_quote q;
    kg_err err;

    kg_err_clear(&err);
    assert_int_equal(tdx_quote_parse(quote, qlen, &q, &err), 1);
    assert_int_equal(ccel_replay(log, len, rtmr, &events_len, count_event, &c, &err), 1);
    assert_int_equal(events_len, GCP_EVENTS_LEN);
    assert_int_equal(c.events, GCP_EVENTS + 1);
    assert_int_equal(c.extended, GCP_EVENTS);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(rtmr[i], q.rtmr[i], CCEL_SHA384_LEN);
    assert_memory_equal(rtmr[3], q.rtmr[3], CCEL_SHA384_LEN); /* both zero */
    /* without the 0xFF fill the log ends at the end of the buffer: same result */
    assert_int_equal(ccel_replay(log, GCP_EVENTS_LEN, rtmr, &events_len, NULL, NULL, &err), 1);
    assert_int_equal(events_len, GCP_EVENTS_LEN);
    assert_memory_equal(rtmr[2], q.rtmr[2], CCEL_SHA384_LEN);
    free(log);
    free(quote);
    (void)state;
}

/* Every prefix: either a clean failure, or success on an event boundary with fewer events. */
static void test_replay_truncated_at_every_length(void **state)
{
    size_t len, events_len, ok_count = 0;
    uint8_t *log = kg_test_read_file(DATA_FILE, &len), *p;
    uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN], zero[CCEL_SHA384_LEN] = {0};
    kg_err err;

    for (size_t n = 0; n <= GCP_EVENTS_LEN + 3; n++) {
        p = exact_copy(log, n);
        kg_err_clear(&err);
        if (ccel_replay(p, n, rtmr, &events_len, NULL, NULL, &err)) {
            assert_true(events_len <= n && n - events_len < 4);
            ok_count++;
        } else {
            assert_int_equal(err.step, KG_STEP_EVIDENCE);
            assert_null(strchr(err.msg, '\n'));
            assert_memory_equal(rtmr[0], zero, sizeof(zero)); /* nothing half-replayed */
        }
        free(p);
    }
    /* the prefixes that end on one of the 44 event boundaries (up to 3 trailing bytes) */
    assert_true(ok_count >= GCP_EVENTS + 1 && ok_count <= 4 * (GCP_EVENTS + 1));
    free(log);
    (void)state;
}

static int replay_mutated(const uint8_t *log, size_t off, uint32_t value, const char *needle)
{
    uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN];
    uint8_t *p = exact_copy(log, GCP_EVENTS_LEN);
    kg_err err;
    int ok;

    kg_err_clear(&err);
    put_u32(p + off, value);
    ok = ccel_replay(p, GCP_EVENTS_LEN, rtmr, NULL, NULL, NULL, &err);
    if (!ok && needle != NULL && strstr(err.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, err.msg);
    free(p);
    return ok;
}

static void test_replay_malformed_fields(void **state)
{
    size_t len;
    uint8_t *log = kg_test_read_file(DATA_FILE, &len);
    const size_t e1 = FIRST_EVENT2;

    assert_int_equal(replay_mutated(log, 4, 1, "not EV_NO_ACTION"), 0);     /* first event type */
    assert_int_equal(replay_mutated(log, 28, 0xFFFFFFF0u, "data size"), 0); /* Spec ID size */
    assert_int_equal(replay_mutated(log, 28, 20, "data size"), 0);
    assert_int_equal(replay_mutated(log, 32, 0x12345678, "Spec ID Event03"), 0); /* signature */
    assert_int_equal(replay_mutated(log, 32 + 24, 0, "algorithms"), 0);          /* no algorithms */
    assert_int_equal(replay_mutated(log, 32 + 24, 1000000, "algorithms"), 0);
    assert_int_equal(replay_mutated(log, 32 + 24, 2, "algorithms"), 0);          /* overruns the event */
    assert_int_equal(replay_mutated(log, 32 + 28, 0x0020000C, "not 48"), 0);     /* SHA-384 size 32 */
    assert_int_equal(replay_mutated(log, 32 + 28, 0x0030000B, "no SHA-384"), 0); /* only SHA-256/48 */
    assert_int_equal(replay_mutated(log, 32 + 28, 0x0000000C, "digest size 0"), 0);
    assert_int_equal(replay_mutated(log, e1, 7, "MR index 7"), 0);
    assert_int_equal(replay_mutated(log, e1 + 8, 0, "0 digests"), 0);
    assert_int_equal(replay_mutated(log, e1 + 8, 0xFFFFFFFFu, "digests"), 0);
    assert_int_equal(replay_mutated(log, e1 + 12, 0x0000000B, "not in the Spec ID"), 0); /* alg id */
    assert_int_equal(replay_mutated(log, e1 + 12 + 50, 0xFFFFFFFFu, "too large"), 0);    /* data size */
    assert_int_equal(replay_mutated(log, e1 + 12 + 50, 0x100000, "truncated"), 0);
    /* an event header of 0xFFFFFFFF is the end: the log is then just the Spec ID */
    assert_int_equal(replay_mutated(log, e1, 0xFFFFFFFFu, NULL), 1);
    /* MR index 0 (MRTD) is not extended: RTMR0 then differs from the quote, replay still works */
    assert_int_equal(replay_mutated(log, e1, 0, NULL), 1);

    {
        uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN];
        kg_err err;
        assert_int_equal(ccel_replay(NULL, 0, rtmr, NULL, NULL, NULL, &err), 0);
        assert_int_equal(ccel_replay(log, 0, rtmr, NULL, NULL, NULL, &err), 0);
        assert_int_equal(ccel_replay(log, (size_t)CCEL_LOG_MAX + 1, rtmr, NULL, NULL, NULL, &err), 0);
        assert_non_null(strstr(err.msg, "more than"));
    }
    free(log);
    (void)state;
}

static void test_replay_no_action_is_not_extended(void **state)
{
    size_t len;
    uint8_t *log = kg_test_read_file(DATA_FILE, &len), *p = exact_copy(log, GCP_EVENTS_LEN);
    uint8_t want[CCEL_MR_COUNT][CCEL_SHA384_LEN], got[CCEL_MR_COUNT][CCEL_SHA384_LEN];
    event_count c = {0, 0, 0};
    kg_err err;

    assert_int_equal(ccel_replay(p, GCP_EVENTS_LEN, want, NULL, NULL, NULL, &err), 1);
    put_u32(p + FIRST_EVENT2 + 4, CCEL_EV_NO_ACTION); /* the first RTMR0 event becomes informational */
    assert_int_equal(ccel_replay(p, GCP_EVENTS_LEN, got, NULL, count_event, &c, &err), 1);
    assert_int_equal(c.extended, GCP_EVENTS - 1);
    assert_memory_not_equal(got[0], want[0], CCEL_SHA384_LEN);
    assert_memory_equal(got[1], want[1], CCEL_SHA384_LEN);
    free(p);
    free(log);
    (void)state;
}

/* Deterministic byte flips over the events: no crash, no overread, one-line errors. */
static void test_replay_random_mutations(void **state)
{
    size_t len;
    uint8_t *log = kg_test_read_file(DATA_FILE, &len), *p;
    uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN];
    uint32_t seed = 12345;
    kg_err err;

    for (int i = 0; i < 3000; i++) {
        size_t n = GCP_EVENTS_LEN;
        p = exact_copy(log, n);
        for (int k = 0; k < 1 + i % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            /* bias towards headers: the first 4 KiB hold many of them */
            size_t off = (seed >> 8) % (i % 2 ? 4096 : n);
            seed = seed * 1103515245u + 12345u;
            p[off] = (uint8_t)(seed >> 16);
        }
        kg_err_clear(&err);
        if (!ccel_replay(p, n, rtmr, NULL, NULL, NULL, &err))
            assert_null(strchr(err.msg, '\n'));
        free(p);
    }
    free(log);
    (void)state;
}

static void test_read_log_from_files(void **state)
{
    uint8_t *log = NULL;
    size_t len = 0, full_len;
    uint8_t *full = kg_test_read_file(DATA_FILE, &full_len);
    kg_err err;

    kg_err_clear(&err);
    assert_int_equal(tdx_ccel_read_log(TABLE_FILE, DATA_FILE, &log, &len, &err), 1);
    assert_int_equal(len, GCP_EVENTS_LEN);
    assert_memory_equal(log, full, GCP_EVENTS_LEN);
    free(log);
    assert_int_equal(tdx_ccel_read_log(NULL, DATA_FILE, &log, &len, &err), 1);
    free(log);
    assert_int_equal(tdx_ccel_read_log(KG_VECTORS_DIR "/none", DATA_FILE, &log, &len, &err), 0);
    assert_null(log);
    assert_non_null(strstr(err.msg, "CCEL table"));
    assert_int_equal(tdx_ccel_read_log(DATA_FILE, DATA_FILE, &log, &len, &err), 0);   /* too big a table */
    assert_int_equal(tdx_ccel_read_log(TABLE_FILE, QUOTE_FILE, &log, &len, &err), 0); /* not a log */
    assert_null(log);
    free(full);
    (void)state;
}

static void test_event_type_names(void **state)
{
    assert_string_equal(ccel_event_type_name(0x4), "EV_SEPARATOR");
    assert_string_equal(ccel_event_type_name(0x80000002), "EV_EFI_VARIABLE_BOOT");
    assert_null(ccel_event_type_name(0x7777));
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_real),
        cmocka_unit_test(test_table_malformed),
        cmocka_unit_test(test_replay_real_log_equals_quote),
        cmocka_unit_test(test_replay_truncated_at_every_length),
        cmocka_unit_test(test_replay_malformed_fields),
        cmocka_unit_test(test_replay_no_action_is_not_extended),
        cmocka_unit_test(test_replay_random_mutations),
        cmocka_unit_test(test_read_log_from_files),
        cmocka_unit_test(test_event_type_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
