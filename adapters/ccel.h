/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CCEL: the Confidential Computing Event Log of a TD (ACPI table "CCEL", ACPI 6.5 §5.2.34) and its
 * TCG2 crypto-agile event log (TCG PC Client Platform Firmware Profile, §10).
 *
 * Table: 36-byte ACPI header (signature "CCEL", length, checksum over `length` bytes), CC type
 * (2 = TDX), CC subtype, 2 reserved bytes, LAML (log area minimum length, u64) and LASA (log area
 * start address, u64): 56 bytes.
 *
 * Log: the first event is a TCG_PCClientPCREvent in SHA-1 format whose data is the
 * "Spec ID Event03" structure listing the digest algorithms and their sizes; every following
 * event is a TCG_PCR_EVENT2 (MR index, event type, digest count, (algorithm id, digest) per
 * algorithm, event size, event data). The log ends at the first MR index 0xFFFFFFFF (the 0xFF
 * fill of the unused log area) or at the end of the buffer.
 *
 * Replay (TDX): MR index 0 is MRTD (not extended by the log); MR index i in 1..4 extends
 * RTMR[i-1] = SHA-384(RTMR[i-1] || sha384 digest), starting from 48 zero bytes. EV_NO_ACTION
 * events are informational and never extended.
 *
 * Everything here is a pure function over caller buffers: nothing is read past `len`, sizes are
 * bounded, and a malformed log fails with err (step evidence) naming the event and its offset.
 */
#ifndef KG_CCEL_H
#define KG_CCEL_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define CCEL_TABLE_LEN 56
#define CCEL_CC_TYPE_TDX 2
#define CCEL_MR_COUNT 4 /* RTMR0..3 */
#define CCEL_SHA384_LEN 48
#define CCEL_ALG_SHA384 0x000C
#define CCEL_EV_NO_ACTION 0x00000003
#define CCEL_LOG_MAX (16u * 1024 * 1024) /* logs larger than this are rejected */
#define CCEL_EVENTS_MAX 100000
#define CCEL_EVENT_DATA_MAX (1024u * 1024)

typedef struct ccel_table {
    uint32_t length;
    uint8_t revision;
    char oem_id[7];       /* NUL-terminated copy */
    char oem_table_id[9]; /* NUL-terminated copy */
    uint8_t cc_type;      /* 2 = TDX */
    uint8_t cc_subtype;
    uint64_t laml; /* log area minimum length */
    uint64_t lasa; /* log area start address */
} ccel_table;

/* One event as the replay sees it. Pointers point into the caller's log buffer. */
typedef struct ccel_event {
    size_t number;     /* 0 = the Spec ID event, then 1, 2, ... */
    size_t offset;     /* byte offset of the event in the log */
    uint32_t mr_index; /* 0 = MRTD, 1..4 = RTMR0..3 */
    uint32_t event_type;
    const uint8_t *sha384; /* 48 bytes; NULL for the Spec ID event */
    int extended;          /* 1 when the digest went into an RTMR */
    const uint8_t *data;   /* event data */
    size_t data_len;
} ccel_event;

typedef void (*ccel_event_cb)(void *arg, const ccel_event *ev);

/* Parses and checks the ACPI CCEL table (signature, length, checksum, TDX type).
 * Returns 1, or 0 with err. */
int ccel_table_parse(const uint8_t *buf, size_t len, ccel_table *table, kg_err *err);

/*
 * Walks the event log in log[0, len), calling cb (may be NULL) for every event, and replays the
 * SHA-384 digests into rtmr (overwritten; starts from zeros). *events_len (may be NULL) receives
 * the byte length of the events, i.e. the offset of the terminator or len.
 * Returns 1, or 0 with err; on failure rtmr holds zeros.
 */
int ccel_replay(const uint8_t *log, size_t len, uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN],
                size_t *events_len, ccel_event_cb cb, void *arg, kg_err *err);

/* A short name for well-known TCG event types ("EV_EFI_VARIABLE_BOOT", ...), or NULL. */
const char *ccel_event_type_name(uint32_t event_type);

#endif
