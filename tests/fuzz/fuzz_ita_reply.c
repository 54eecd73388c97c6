/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ITA JSON replies: the nonce reply of GET /appraisal/v2/nonce and the token envelope of
 * POST /appraisal/v{1,2}/attest (ita_parse_nonce_reply, ita_parse_token_reply), both on every
 * input. A parsed token is also taken apart by kg_jws_split, as the verifier would next.
 */
#include "fuzz_common.h"
#include "ita_client.h"
#include "kg_jws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *body = (uint8_t *)fuzz_cstr(data, size); /* kg_http NUL-terminates bodies */
    const char *why;
    char *token = NULL;
    ita_nonce nonce;
    kg_jws jws;
    kg_err err;

    if (ita_parse_nonce_reply(body, size, &nonce, &why))
        ita_nonce_clear(&nonce);
    if (ita_parse_token_reply(body, size, &token, &why)) {
        if (kg_jws_split(token, &jws, &err))
            kg_jws_clear(&jws);
        free(token);
    }
    free(body);
    fuzz_err_queue_empty();
    return 0;
}
