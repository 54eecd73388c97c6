/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small cJSON helpers shared by the request builders (ITA, Intel KBS, Trustee, the CLI).
 */
#ifndef KG_JSON_H
#define KG_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* Adds name: base64(p[0..len)) (standard alphabet, padded) to obj. Returns 1, or 0 when out of
 * memory. */
int kg_json_add_b64(cJSON *obj, const char *name, const uint8_t *p, size_t len);

#endif
