/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RFC 8785 JSON Canonicalization Scheme (JCS) of a cJSON tree.
 *
 *  - objects: members sorted by their names as arrays of UTF-16 code units, duplicates refused;
 *  - strings: UTF-8 as is, escaping only '"', '\\' and U+0000..U+001F (\b \t \n \f \r, else
 *    \u00xx in lower case); '/' and non-ASCII are never escaped (the trap of libraries that
 *    write "\/"); invalid UTF-8 and lone surrogates are refused;
 *  - numbers: IEEE-754 doubles printed as ECMAScript's Number.prototype.toString (shortest
 *    round-trip digits, exponent form below 1e-6 and from 1e21); NaN/Infinity refused; -0 is 0;
 *  - no whitespace. cJSON_Raw and invalid nodes are refused; nesting is bounded.
 * The output is what the Trustee KBS hashes into REPORTDATA (docs/protocols/trustee-rcar.md §3).
 */
#ifndef KG_JCS_H
#define KG_JCS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "kg_err.h"

#define KG_JCS_MAX_DEPTH 128

/* Serialises value. Returns 1 with *out (malloc'ed, NUL-terminated, caller frees) and *out_len
 * (may be NULL), or 0 with err (step `step`) naming the offending node. */
int kg_jcs_serialize(const cJSON *value, kg_step step, char **out, size_t *out_len, kg_err *err);

/* One double in ECMAScript form into buf (>= 32 bytes). Returns 1, or 0 for NaN/Infinity. */
int kg_jcs_number(double v, char *buf, size_t size);

#endif
