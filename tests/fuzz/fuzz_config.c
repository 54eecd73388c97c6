/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate.conf: the line parser (kg_config_load_stream: comments, "key = value", trimming, line
 * length) and every key's value parser (kg_config_set: URL, enum, int range, bool, UUID list,
 * hex list, hex), then the cross-key checks and the dump of what was accepted.
 */
#include "fuzz_common.h"
#include "kg_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kg_config cfg; /* large: not on the stack */
    static char dump[64 * 1024];
    FILE *fp;
    kg_err err;
    int ok;

    if (size == 0)
        return 0;
    kg_config_defaults(&cfg);
    fp = fmemopen((void *)data, size, "r");
    FUZZ_REQUIRE(fp != NULL);
    ok = kg_config_load_stream(&cfg, fp, "fuzz.conf", &err);
    fuzz_note("kg_config_load_stream", ok, err.msg);
    if (ok) {
        (void)kg_config_check(&cfg, &err);
        FUZZ_REQUIRE(kg_config_dump(&cfg, dump, sizeof(dump)));
    }
    FUZZ_REQUIRE(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
    fclose(fp);
    fuzz_err_queue_empty();
    return 0;
}
