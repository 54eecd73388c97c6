/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which generation of the Intel KBS (docs/protocols/intel-kbs.md §8) serves a KBS URL: pinned by
 * kbs_intel_generation, or learnt from the KBS and remembered per URL for the life of the process
 * (shared by every release context: a lease's refreshes, the keys of a front end), so that it
 * costs no round trip once known. Thread-safe.
 */
#ifndef KG_INTEL_GEN_H
#define KG_INTEL_GEN_H

#include "kbs_intel.h"
#include "kg_config.h"
#include "kg_err.h"
#include "kg_http.h"

/* The pinned generation, KBS_INTEL_GEN_UNKNOWN for kbs_intel_generation = auto. */
kbs_intel_gen kg_intel_gen_pinned(const kg_config *cfg);

/* The pinned generation, else the one remembered for kbs_url, else KBS_INTEL_GEN_UNKNOWN. */
kbs_intel_gen kg_intel_gen_known(const kg_config *cfg, const char *kbs_url);

/* Remembers gen for kbs_url (KBS_INTEL_GEN_UNKNOWN forgets it). The oldest entry makes room. */
void kg_intel_gen_remember(const char *kbs_url, kbs_intel_gen gen);

/* In a forked child: the lock may have been held by a thread that does not exist there. */
void kg_intel_gen_atfork_child(void);

/* Passport mode with ita_api_version = v2 and kbs_intel_generation = auto: 1 if the Intel KBS at
 * kbs_url takes v2 tokens, asking GET /kbs/v1/version unless the answer is remembered; else 0
 * with err (step config) naming the settings, the KBS and its version. Any other configuration:
 * 1 without a request (kg_config_check_passport judged the pinned ones). */
int kg_intel_gen_check_passport(const kg_config *cfg, kg_http *h, const char *kbs_url, kg_err *err);

#endif
