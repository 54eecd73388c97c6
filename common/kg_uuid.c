/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_uuid.h"

#include <ctype.h>
#include <string.h>

int kg_uuid_ok(const char *s, size_t len)
{
    if (s == NULL || len != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

int kg_uuid_is_v4(const char *s)
{
    /* the Intel KBS routes only version-4 UUIDs (others get a plain 404) */
    return s != NULL && kg_uuid_ok(s, strlen(s)) && s[14] == '4' && strchr("89abAB", s[19]) != NULL;
}
