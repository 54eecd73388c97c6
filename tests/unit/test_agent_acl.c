/* SPDX-License-Identifier: Apache-2.0 */
/* agent/kg_agent_acl.c: the agent_keys parser (the agent's allow lists). */
#include "kg_test.h"

#include <string.h>

#include "kg_agent_acl.h"

static void parses_entries_and_grants(void **state)
{
    kg_agent_acl *a = NULL;
    size_t n = 0;
    kg_err err;

    (void)state;
    assert_int_equal(
        kg_agent_acl_parse(" /etc/keygate/web.ref.pem:uid=33:gid=0 , /etc/keygate/*.ref.pem : user=root "
                           ":group=nogroup:uid=1000",
                           &a, &n, &err),
        1);
    assert_int_equal(n, 2);
    assert_string_equal(a[0].pattern, "/etc/keygate/web.ref.pem");
    assert_int_equal(a[0].n_uids, 1);
    assert_int_equal(a[0].uids[0], 33);
    assert_int_equal(a[0].n_gids, 1);
    assert_int_equal(a[0].gids[0], 0);
    assert_string_equal(a[1].pattern, "/etc/keygate/*.ref.pem");
    assert_int_equal(a[1].n_uids, 2);
    assert_int_equal(a[1].uids[0], 0); /* root */
    assert_int_equal(a[1].uids[1], 1000);
    assert_int_equal(a[1].n_gids, 1);
    assert_int_equal(a[1].gids[0], 65534); /* nogroup (Debian) */
    assert_true(kg_agent_acl_allows(&a[0], 33, 100));
    assert_true(kg_agent_acl_allows(&a[0], 99, 0));
    assert_false(kg_agent_acl_allows(&a[0], 99, 100));
    assert_true(kg_agent_acl_allows(&a[1], 5, 65534));
    kg_agent_acl_free(a, n);
}

static void refuses(const char *spec, const char *expect)
{
    kg_agent_acl *a = (kg_agent_acl *)1;
    size_t n = 7;
    kg_err err;

    kg_err_clear(&err);
    assert_int_equal(kg_agent_acl_parse(spec, &a, &n, &err), 0);
    assert_null(a);
    assert_int_equal(n, 0);
    if (strstr(err.msg, expect) == NULL)
        fail_msg("'%s': message '%s' lacks '%s'", spec, err.msg, expect);
    assert_int_equal(err.step, KG_STEP_CONFIG);
}

static void refuses_bad_entries(void **state)
{
    char many[2048] = "/k.pem";

    (void)state;
    refuses("", "entry 1 is empty");
    refuses("/a.pem:uid=1,,/b.pem:uid=2", "entry 2 is empty");
    refuses("/a.pem", "entry 1 (/a.pem) allows nobody");
    refuses("/a.pem:uid=1,/b.pem", "entry 2 (/b.pem) allows nobody");
    refuses("a.pem:uid=1", "'a.pem' is not an absolute path");
    refuses("/a.pem:uid=x", "uid=x is not a number");
    refuses("/a.pem:uid=-1", "uid=-1 is not a number");
    refuses("/a.pem:gid=4294967295", "gid=4294967295 is not a number");
    refuses("/a.pem:uid=12abc", "uid=12abc is not a number");
    refuses("/a.pem:uid=", "'uid=' is not uid=N");
    refuses("/a.pem:root", "'root' is not uid=N");
    refuses("/a.pem:pid=1", "unknown grant 'pid'");
    refuses("/a.pem:user=no-such-user-kg", "no such user 'no-such-user-kg'");
    refuses("/a.pem:group=no-such-group-kg", "no such group 'no-such-group-kg'");
    for (int i = 0; i <= KG_AGENT_ACL_MAX_IDS; i++)
        strcat(many, ":uid=1");
    refuses(many, "more than 32 uids");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_entries_and_grants),
        cmocka_unit_test(refuses_bad_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
