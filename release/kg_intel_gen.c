/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_intel_gen.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "kg_log.h"

#define GEN_CACHE_SIZE 8

static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char url[KG_CONF_STR];
    kbs_intel_gen gen;
} gen_cache[GEN_CACHE_SIZE];
static unsigned gen_next; /* the slot a new URL takes (round robin) */

kbs_intel_gen kg_intel_gen_pinned(const kg_config *cfg)
{
    if (strcmp(cfg->kbs_intel_generation, "v1.3") == 0)
        return KBS_INTEL_GEN_V13;
    if (strcmp(cfg->kbs_intel_generation, "2026") == 0)
        return KBS_INTEL_GEN_2026;
    return KBS_INTEL_GEN_UNKNOWN;
}

kbs_intel_gen kg_intel_gen_known(const kg_config *cfg, const char *kbs_url)
{
    kbs_intel_gen gen = kg_intel_gen_pinned(cfg);

    if (gen != KBS_INTEL_GEN_UNKNOWN)
        return gen;
    pthread_mutex_lock(&gen_lock);
    for (int i = 0; i < GEN_CACHE_SIZE; i++)
        if (gen_cache[i].gen != KBS_INTEL_GEN_UNKNOWN && strcmp(gen_cache[i].url, kbs_url) == 0)
            gen = gen_cache[i].gen;
    pthread_mutex_unlock(&gen_lock);
    return gen;
}

void kg_intel_gen_remember(const char *kbs_url, kbs_intel_gen gen)
{
    int slot = -1;

    pthread_mutex_lock(&gen_lock);
    for (int i = 0; i < GEN_CACHE_SIZE && slot < 0; i++)
        if (gen_cache[i].gen != KBS_INTEL_GEN_UNKNOWN && strcmp(gen_cache[i].url, kbs_url) == 0)
            slot = i;
    if (slot < 0 && gen != KBS_INTEL_GEN_UNKNOWN)
        slot = (int)(gen_next++ % GEN_CACHE_SIZE);
    if (slot >= 0) {
        snprintf(gen_cache[slot].url, sizeof(gen_cache[slot].url), "%s", kbs_url);
        gen_cache[slot].gen = gen;
    }
    pthread_mutex_unlock(&gen_lock);
}

void kg_intel_gen_atfork_child(void)
{
    pthread_mutex_init(&gen_lock, NULL);
}

int kg_intel_gen_check_passport(const kg_config *cfg, kg_http *h, const char *kbs_url, kg_err *err)
{
    char version[64] = "";
    kbs_intel_gen gen;

    if (strcmp(cfg->kbs_type, "intel") != 0 || strcmp(cfg->kbs_mode, "passport") != 0 ||
        strcmp(cfg->ita_api_version, "v2") != 0 || kg_intel_gen_pinned(cfg) != KBS_INTEL_GEN_UNKNOWN)
        return 1;
    if ((gen = kg_intel_gen_known(cfg, kbs_url)) == KBS_INTEL_GEN_2026)
        return 1;
    if (gen == KBS_INTEL_GEN_UNKNOWN) {
        if (!kbs_intel_get_version(h, kbs_url, version, sizeof(version), err)) {
            size_t len = strlen(err->msg);
            snprintf(
                err->msg + len, sizeof(err->msg) - len,
                " (ita_api_version = v2 with kbs_intel_generation = auto asks the KBS whether it takes v2 "
                "tokens; pin kbs_intel_generation = 2026 or use ita_api_version = v1)");
            return 0;
        }
        if ((gen = kbs_intel_gen_of_version(version)) != KBS_INTEL_GEN_UNKNOWN)
            kg_intel_gen_remember(kbs_url, gen);
        KG_DEBUG("Intel KBS %s reports version %s", kbs_url, version);
        if (gen == KBS_INTEL_GEN_2026)
            return 1;
    }
    if (gen == KBS_INTEL_GEN_V13)
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "ita_api_version = v2 cannot be used with the Intel KBS at %.200s: GET /kbs/v1/version "
            "reports %s, a generation that reads v1 tokens only and refuses a v2 token with "
            "401; use ita_api_version = v1",
            kbs_url, version[0] != '\0' ? version : "v1.3 or earlier");
    return kg_err_set(
        err, KG_STEP_CONFIG,
        "ita_api_version = v2 cannot be used with the Intel KBS at %.200s: its version '%s' does "
        "not tell whether it takes v2 tokens; pin kbs_intel_generation = 2026 if it does, else "
        "use ita_api_version = v1",
        kbs_url, version);
}
