/* SPDX-License-Identifier: Apache-2.0 */
/*
 * UUIDs in their text form (RFC 4122: 8-4-4-4-12 hex digits): ITA policy ids, Intel KBS key ids.
 */
#ifndef KG_UUID_H
#define KG_UUID_H

#include <stddef.h>

/* 1 when s[0..len) is a UUID in text form (any version, either case), else 0. */
int kg_uuid_ok(const char *s, size_t len);

/* 1 when s (NUL-terminated) is a version-4 UUID with the RFC 4122 variant, else 0. */
int kg_uuid_is_v4(const char *s);

#endif
