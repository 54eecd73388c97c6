/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tdx: the Intel TDX adapter over configfs-tsm (Linux 6.7+ with tdx_guest: bare-metal TDX hosts,
 * GCP TDX VMs). Kernel ABI: Documentation/ABI/testing/configfs-tsm; docs/protocols/tdx-quote.md
 * §1.1.
 *
 * Per attempt: mkdir a private entry with a random name under the report directory, check that
 * `provider` is "tdx_guest", read `generation` (g), write the 64-byte REPORTDATA to `inblob`
 * (now g+1), read `outblob` in bulk, and re-read `generation` after every read, requiring
 * exactly g (before the write) or g+1 (after it), as google/go-configfs-tsm does. Any mismatch
 * means another writer touched the entry: the attempt is dropped (never mixed data) and retried
 * with a fresh entry, up to TDX_TSM_ATTEMPTS times. The entry is removed on every path.
 * The quote's REPORTDATA (568 in v4, 574 in v5) is checked against what was written.
 *
 * With cfg->event_log, the CCEL table and event log (ccel.h) are read, checked, and the log is
 * returned trimmed to its events.
 */
#ifndef KG_TDX_TSM_H
#define KG_TDX_TSM_H

#include <stddef.h>
#include <stdint.h>

#include "kg_adapter.h"
#include "kg_err.h"

#define TDX_TSM_ATTEMPTS 3
#define TDX_TSM_OUTBLOB_MAX (64 * 1024) /* a TD quote is ~5 KiB */
#define TDX_TSM_PROVIDER "tdx_guest"

/* The adapter entry point (kg_adapter.c's dispatch table): fills ev->quote, ev->runtime_data
 * (a copy of the user data), ev->event_log (when configured) and ev->kind from
 * ev->report_data. Returns 1, or 0 with err "adapter tdx: ..." (step evidence). */
int tdx_tsm_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                    kg_err *err);

/* Produces a quote carrying report_data through the configfs-tsm report directory report_dir.
 * *quote is malloc'ed, caller frees. Returns 1, or 0 with err "adapter tdx: ...". */
int tdx_tsm_get_quote(const char *report_dir, const uint8_t report_data[64], uint8_t **quote,
                      size_t *quote_len, kg_err *err);

/* Reads the CCEL table (checked with ccel_table_parse) and the event log data (at most
 * CCEL_LOG_MAX bytes), replays the log and returns it trimmed to its events. *log is malloc'ed,
 * caller frees. table_path may be NULL to skip the table. Errors name the file ("CCEL ...",
 * without the adapter prefix). Returns 1/0. */
int tdx_ccel_read_log(const char *table_path, const char *data_path, uint8_t **log, size_t *log_len,
                      kg_err *err);

#endif
