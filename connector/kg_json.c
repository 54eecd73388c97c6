/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_json.h"

#include <stdlib.h>

#include "kg_b64.h"

int kg_json_add_b64(cJSON *obj, const char *name, const uint8_t *p, size_t len)
{
    char *s = kg_b64_encode(p, len);
    int ok = s != NULL && cJSON_AddStringToObject(obj, name, s) != NULL;

    free(s);
    return ok;
}
