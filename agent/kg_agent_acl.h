/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_acl: the agent_keys setting of keygate.conf, parsed (docs/agent.md):
 *
 *   agent_keys = REFERENCE[:uid=N|gid=N|user=NAME|group=NAME]... [, ...]
 *
 * REFERENCE is an absolute path or glob pattern of key-reference files (as in preload); each
 * entry must allow at least one uid or gid. user= and group= names are resolved here, once
 * (getpwnam_r/getgrnam_r), so a later change of /etc/passwd does not change who may use a key
 * until the agent restarts. No file system access besides that: globs are expanded by the agent.
 *
 * Ownership: kg_agent_acl_parse fills a caller-owned array; kg_agent_acl_free releases it.
 */
#ifndef KG_AGENT_ACL_H
#define KG_AGENT_ACL_H

#include <stddef.h>
#include <sys/types.h>

#include "kg_err.h"

#define KG_AGENT_ACL_MAX_IDS 32 /* uids + gids of one entry */

typedef struct kg_agent_acl {
    char *pattern; /* the REFERENCE part; owned */
    uid_t uids[KG_AGENT_ACL_MAX_IDS];
    size_t n_uids;
    gid_t gids[KG_AGENT_ACL_MAX_IDS];
    size_t n_gids;
} kg_agent_acl;

/* Parses spec (the agent_keys value). Returns 1 with *acls (malloc'ed, *n >= 1 entries), or 0 with
 * err (step config) naming the entry and the cause: an empty list or entry, a relative path, an
 * entry without uid/gid, a bad number, an unknown user or group, too many ids. */
int kg_agent_acl_parse(const char *spec, kg_agent_acl **acls, size_t *n, kg_err *err);

void kg_agent_acl_free(kg_agent_acl *acls, size_t n);

/* Whether an entry allows a client with this uid and (primary) gid. */
int kg_agent_acl_allows(const kg_agent_acl *acl, uid_t uid, gid_t gid);

#endif
