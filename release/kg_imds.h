/* SPDX-License-Identifier: Apache-2.0 */
/* Azure IMDS quote conversion for the azure-tdx adapter (the HTTP part lives here, in release/,
 * so that adapters/ stays free of HTTP). */
#ifndef KG_IMDS_H
#define KG_IMDS_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define KG_IMDS_HOST "169.254.169.254"

/* POST {url} {"report": b64(td_report)} -> {"quote": b64url}. ctx is a const kg_config *.
 * Plain http is allowed only to 169.254.169.254 (Azure's design) and, with allow_http_loopback,
 * to loopback (tests). *quote is malloc'ed, caller frees. Returns 1, or 0 with err (evidence). */
int kg_imds_tdquote(void *ctx, const char *url, const uint8_t *td_report, size_t td_report_len,
                    uint8_t **quote, size_t *quote_len, kg_err *err);

#endif
