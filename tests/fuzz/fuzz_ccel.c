/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CCEL: the ACPI table (ccel_table_parse) and the TCG2 crypto-agile event log replay
 * (ccel_replay: Spec ID event, digest list, event sizes, RTMR extension), both on every input,
 * with a callback that reads every event's data (so a bad pointer or length is an ASan report).
 */
#include "ccel.h"
#include "fuzz_common.h"

static void touch(void *arg, const ccel_event *ev)
{
    unsigned *sum = arg;
    for (size_t i = 0; i < ev->data_len; i++)
        *sum += ev->data[i];
    if (ev->sha384 != NULL)
        for (size_t i = 0; i < CCEL_SHA384_LEN; i++)
            *sum += ev->sha384[i];
    (void)ccel_event_type_name(ev->event_type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_dup(data, size), rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN];
    unsigned sum = 0;
    size_t events_len;
    ccel_table t;
    kg_err err;

    fuzz_note("ccel_table_parse", ccel_table_parse(buf, size, &t, &err), err.msg);
    fuzz_note("ccel_replay", ccel_replay(buf, size, rtmr, &events_len, touch, &sum, &err), err.msg);
    free(buf);
    fuzz_err_queue_empty();
    return (int)(sum & 0);
}
