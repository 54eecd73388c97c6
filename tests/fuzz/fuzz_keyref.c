/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key references: kg_keyref_from_der on the bytes and kg_keyref_from_pem on the same bytes as
 * text (other PEM blocks skipped, base64 body, DER inside). What parses must round-trip:
 * to_der/to_pem and back give the same key id, KBS fields and SPKI (a violation aborts).
 */
#include <openssl/evp.h>

#include "fuzz_common.h"
#include "kg_keyref.h"

static void round_trip(const kg_keyref *ref)
{
    uint8_t *der = NULL;
    char *pem = NULL;
    size_t len = 0;
    kg_keyref again;
    kg_err err;

    if (!kg_keyref_to_der(ref, &der, &len, &err) || !kg_keyref_from_der(der, len, &again, &err))
        abort();
    if (strcmp(again.key_id, ref->key_id) != 0 || strcmp(again.kbs_url, ref->kbs_url) != 0 ||
        strcmp(again.kbs_type, ref->kbs_type) != 0 || strcmp(again.description, ref->description) != 0 ||
        again.spki_der_len != ref->spki_der_len ||
        memcmp(again.spki_der, ref->spki_der, ref->spki_der_len) != 0)
        abort();
    kg_keyref_clear(&again);
    if (!kg_keyref_to_pem(ref, &pem, &err) || !kg_keyref_from_pem(pem, strlen(pem), &again, &err))
        abort();
    kg_keyref_clear(&again);
    free(pem);
    free(der);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_dup(data, size);
    kg_keyref ref;
    kg_err err;
    int ok;

    ok = kg_keyref_from_der(buf, size, &ref, &err);
    fuzz_note("kg_keyref_from_der", ok, err.msg);
    if (ok) {
        round_trip(&ref);
        kg_keyref_clear(&ref);
    }
    ok = kg_keyref_from_pem((const char *)buf, size, &ref, &err);
    fuzz_note("kg_keyref_from_pem", ok, err.msg);
    if (ok) {
        round_trip(&ref);
        kg_keyref_clear(&ref);
    }
    free(buf);
    fuzz_err_queue_empty();
    return 0;
}
