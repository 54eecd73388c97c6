/* SPDX-License-Identifier: Apache-2.0 */
/* kg_agent_acl: the agent_keys setting, parsed (see kg_agent_acl.h). */
#include "kg_agent_acl.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

static char *trim(char *s)
{
    char *end = s + strlen(s);

    while (*s == ' ' || *s == '\t')
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return s;
}

/* A decimal id 0..2^32-2 (uid_t -1 means "no change" to the kernel). */
static int parse_id(const char *s, unsigned long *id)
{
    char *end;

    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    *id = strtoul(s, &end, 10);
    return errno == 0 && *end == '\0' && *id < 0xFFFFFFFFUL;
}

/* One "uid=N" / "gid=N" / "user=NAME" / "group=NAME" of entry number idx. */
static int parse_grant(char *g, kg_agent_acl *a, size_t idx, kg_err *err)
{
    char *eq = strchr(g, '='), buf[4096];
    unsigned long id;

    if (eq == NULL || eq[1] == '\0')
        return kg_err_set(err, KG_STEP_CONFIG,
                          "agent_keys: entry %zu: '%s' is not uid=N, gid=N, user=NAME or group=NAME", idx, g);
    *eq++ = '\0';
    if (strcmp(g, "uid") == 0 || strcmp(g, "user") == 0) {
        if (a->n_uids == KG_AGENT_ACL_MAX_IDS)
            return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: more than %d uids", idx,
                              KG_AGENT_ACL_MAX_IDS);
        if (g[0] == 'u' && g[1] == 'i') {
            if (!parse_id(eq, &id))
                return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: uid=%s is not a number", idx,
                                  eq);
        } else {
            struct passwd pw, *res = NULL;

            if (getpwnam_r(eq, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
                return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: no such user '%s'", idx, eq);
            id = pw.pw_uid;
        }
        a->uids[a->n_uids++] = (uid_t)id;
        return 1;
    }
    if (strcmp(g, "gid") == 0 || strcmp(g, "group") == 0) {
        if (a->n_gids == KG_AGENT_ACL_MAX_IDS)
            return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: more than %d gids", idx,
                              KG_AGENT_ACL_MAX_IDS);
        if (g[0] == 'g' && g[1] == 'i') {
            if (!parse_id(eq, &id))
                return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: gid=%s is not a number", idx,
                                  eq);
        } else {
            struct group gr, *res = NULL;

            if (getgrnam_r(eq, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
                return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: no such group '%s'", idx, eq);
            id = gr.gr_gid;
        }
        a->gids[a->n_gids++] = (gid_t)id;
        return 1;
    }
    return kg_err_set(err, KG_STEP_CONFIG,
                      "agent_keys: entry %zu: unknown grant '%s' (uid, gid, user or group)", idx, g);
}

int kg_agent_acl_parse(const char *spec, kg_agent_acl **acls, size_t *n, kg_err *err)
{
    char *list = strdup(spec);
    kg_agent_acl *out = NULL;
    size_t count = 0, cap = 0;

    *acls = NULL;
    *n = 0;
    if (list == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "agent_keys: out of memory");
    /* strtok_r would skip empty entries silently: an empty one (",,") is a typo worth naming */
    for (char *item = list, *next; item != NULL; item = next) {
        char *entry, *gsave = NULL, *tok;
        kg_agent_acl *a;

        if ((next = strchr(item, ',')) != NULL)
            *next++ = '\0';
        entry = trim(item);
        if (*entry == '\0') {
            kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu is empty", count + 1);
            goto err;
        }
        if (count == cap) {
            kg_agent_acl *grown = realloc(out, (cap = cap ? cap * 2 : 4) * sizeof(*out));

            if (grown == NULL) {
                kg_err_set(err, KG_STEP_INTERNAL, "agent_keys: out of memory");
                goto err;
            }
            out = grown;
        }
        a = &out[count++];
        memset(a, 0, sizeof(*a));
        tok = trim(strtok_r(entry, ":", &gsave));
        if (tok[0] != '/') {
            kg_err_set(err, KG_STEP_CONFIG, "agent_keys: entry %zu: '%s' is not an absolute path", count,
                       tok);
            goto err;
        }
        if ((a->pattern = strdup(tok)) == NULL) {
            kg_err_set(err, KG_STEP_INTERNAL, "agent_keys: out of memory");
            goto err;
        }
        while ((tok = strtok_r(NULL, ":", &gsave)) != NULL)
            if (!parse_grant(trim(tok), a, count, err))
                goto err;
        if (a->n_uids == 0 && a->n_gids == 0) {
            kg_err_set(
                err, KG_STEP_CONFIG,
                "agent_keys: entry %zu (%s) allows nobody: add :uid=N, :gid=N, :user=NAME or :group=NAME",
                count, a->pattern);
            goto err;
        }
    }
    free(list);
    *acls = out;
    *n = count;
    return 1;
err:
    free(list);
    kg_agent_acl_free(out, count);
    return 0;
}

void kg_agent_acl_free(kg_agent_acl *acls, size_t n)
{
    for (size_t i = 0; acls != NULL && i < n; i++)
        free(acls[i].pattern);
    free(acls);
}

int kg_agent_acl_allows(const kg_agent_acl *acl, uid_t uid, gid_t gid)
{
    for (size_t i = 0; i < acl->n_uids; i++)
        if (acl->uids[i] == uid)
            return 1;
    for (size_t i = 0; i < acl->n_gids; i++)
        if (acl->gids[i] == gid)
            return 1;
    return 0;
}
