/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JWKS: ita_jwks_check (what is cached) and ita_jwks_select (entry choice by kid+alg, JWK n/e,
 * x5c base64 DER certificates) for the kid of every entry, with both allowed algs.
 */
#include <cjson/cJSON.h>

#include "fuzz_common.h"
#include "ita_jwks.h"

#define MAX_KIDS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const algs[] = {"PS384", "RS256"};
    char *json = fuzz_cstr(data, size), *kids[MAX_KIDS];
    int nkids = 0, miss;
    cJSON *root, *key;
    ita_jwk jwk;
    kg_err err;

    (void)ita_jwks_check(json, size, &err);
    /* the kids to ask for: every entry's (the fuzzer controls them), and one nobody has */
    kids[nkids++] = strdup("no-such-kid");
    root = cJSON_ParseWithLength(json, size);
    cJSON_ArrayForEach(key, cJSON_GetObjectItemCaseSensitive(root, "keys"))
    {
        const cJSON *kid = cJSON_GetObjectItemCaseSensitive(key, "kid");
        if (nkids < MAX_KIDS && cJSON_IsString(kid))
            kids[nkids++] = strdup(kid->valuestring);
    }
    cJSON_Delete(root);
    for (int i = 0; i < nkids; i++) {
        for (int a = 0; a < 2 && kids[i] != NULL; a++)
            if (ita_jwks_select(json, kids[i], algs[a], &jwk, &miss, &err))
                ita_jwk_clear(&jwk);
        free(kids[i]);
    }
    free(json);
    fuzz_err_queue_empty();
    return 0;
}
