/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kg_config.h"

static char tmp_path[64];

static const char *write_conf(const char *text)
{
    int fd;
    strcpy(tmp_path, "/tmp/kg-conf-XXXXXX");
    fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return tmp_path;
}

static void defaults(void **state)
{
    kg_config c;
    kg_config_defaults(&c);
    assert_string_equal(c.ad.name, "tdx");
    assert_string_equal(c.kbs_type, "intel");
    assert_string_equal(c.kbs_mode, "passport");
    assert_string_equal(c.ita_api_version, "v1");
    assert_string_equal(c.ita_token_alg, "PS384");
    assert_int_equal(c.timeout_ms, 10000);
    assert_int_equal(c.retry_max, 2);
    assert_int_equal(c.allow_debug_td, 0);
    assert_int_equal(c.allow_http_loopback, 0);
    assert_string_equal(c.ita_base_url, "https://portal.trustauthority.intel.com");
}

static void parse_good_file(void **state)
{
    kg_config c;
    kg_err e;
    const char *p = write_conf(
        "# comment\n\n  adapter = sim  \n"
        "ita_api_url=https://127.0.0.1:8443/\n"
        "ita_policy_ids = 4f5c2a3e-1b2c-4d5e-8f90-0123456789ab, "
        "5f5c2a3e-1b2c-4d5e-8f90-0123456789ab\n"
        "timeout_ms = 2500\nallow_debug_td = yes\n"
        "sim_td_attributes = 0100000000000000\n"
        "sim_pck_key = /k\nsim_pck_chain = /c\n"
        "require_mrtd = "
        "aa"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n");
    kg_config_defaults(&c);
    assert_int_equal(kg_config_load_file(&c, p, &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1);
    assert_string_equal(c.ad.name, "sim");
    assert_string_equal(c.ita_api_url, "https://127.0.0.1:8443"); /* trailing slash dropped */
    assert_int_equal(c.ita_policy_id_count, 2);
    assert_string_equal(c.ita_policy_ids[1], "5f5c2a3e-1b2c-4d5e-8f90-0123456789ab");
    assert_int_equal(c.timeout_ms, 2500);
    assert_int_equal(c.allow_debug_td, 1);
    assert_int_equal(c.ad.sim.td_attributes & 1, 1);
    unlink(p);
}

static void expect_line_error(const char *text, const char *needle)
{
    kg_config c;
    kg_err e;
    const char *p = write_conf(text);
    kg_config_defaults(&c);
    kg_err_clear(&e);
    assert_int_equal(kg_config_load_file(&c, p, &e), 0);
    assert_int_equal(e.step, KG_STEP_CONFIG);
    assert_non_null(strstr(e.msg, p));
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, e.msg);
    assert_null(strchr(e.msg, '\n'));
    unlink(p);
}

static void rejects_bad_lines(void **state)
{
    expect_line_error("adapter = sim\nbogus = 1\n", ":2: unknown key 'bogus'");
    expect_line_error("adapter sim\n", ":1: expected 'key = value'");
    expect_line_error("adapter = sgx\n", "adapter: 'sgx' is not one of");
    expect_line_error("timeout_ms = 10s\n", "timeout_ms: '10s' is not an integer");
    expect_line_error("timeout_ms = 0\n", "timeout_ms");
    expect_line_error("retry_max = 99999999999999999999\n", "retry_max");
    expect_line_error("allow_debug_td = maybe\n", "yes/no");
    expect_line_error("ita_policy_ids = not-a-uuid\n", "UUIDs");
    expect_line_error("ita_api_url = ftp://x\n", "not an http(s) URL");
    expect_line_error("sim_mrtd = 00\n", "96 hex digits");
    expect_line_error("require_rtmr0 = zz\n", "require_rtmr0");
    expect_line_error("ita_policy_ids = "
                      "4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,"
                      "4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,"
                      "4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,"
                      "4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,"
                      "4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,4f5c2a3e-1b2c-4d5e-8f90-0123456789ab,"
                      "4f5c2a3e-1b2c-4d5e-8f90-0123456789ab\n",
                      "at most 10");
}

static void missing_file_and_sim_check(void **state)
{
    kg_config c;
    kg_err e;
    kg_config_defaults(&c);
    assert_int_equal(kg_config_load_file(&c, "/nonexistent/keygate.conf", &e), 0);
    assert_non_null(strstr(e.msg, "cannot open"));
    assert_int_equal(kg_config_set(&c, "adapter", "sim", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 0);
    assert_non_null(strstr(e.msg, "sim_pck_key"));
}

/* keygate.conf must not be writable by group or others (issue 17, 10c): whoever can write it
 * chooses the trust anchor, the URLs and the policy. Modes that only let others read are fine. */
static void conf_writable_by_others_is_refused(void **state)
{
    static const mode_t bad[] = {0666, 0664, 0662, 0660, 0646, 0622, 0602, 0620};
    static const mode_t good[] = {0600, 0640, 0644, 0444, 0400};
    char want[256];
    kg_config c;
    kg_err e;
    const char *p = write_conf("adapter = sim\n");

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(chmod(p, bad[i]), 0);
        kg_config_defaults(&c);
        kg_err_clear(&e);
        assert_int_equal(kg_config_load_file(&c, p, &e), 0);
        assert_int_equal(e.step, KG_STEP_CONFIG);
        snprintf(want, sizeof(want), "config: %s: writable by group or others (mode %03o); chmod go-w it", p,
                 (unsigned)bad[i]);
        assert_string_equal(e.msg, want);
        assert_string_equal(c.ad.name, "tdx"); /* nothing of it was applied */
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(chmod(p, good[i]), 0);
        kg_config_defaults(&c);
        assert_int_equal(kg_config_load_file(&c, p, &e), 1);
        assert_string_equal(c.ad.name, "sim");
    }
    unlink(p);
}

/* The same for the files that decide what keygate trusts: the pinned token root and the TLS CA
 * bundle, checked by kg_config_check; a symlink is judged by its target. A missing file is left to
 * the code that opens it. */
static void trust_files_writable_by_others_are_refused(void **state)
{
    static const char *const keys[] = {"ita_trust_anchor", "tls_ca_file"};
    char want[512], link_path[80];
    kg_config c;
    kg_err e;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char file[64];
        snprintf(file, sizeof(file), "%s", write_conf("-----BEGIN CERTIFICATE-----\n"));
        kg_config_defaults(&c);
        assert_int_equal(kg_config_set(&c, keys[i], file, &e), 1);
        assert_int_equal(chmod(file, 0644), 0);
        assert_int_equal(kg_config_check(&c, &e), 1);
        assert_int_equal(chmod(file, 0664), 0);
        kg_err_clear(&e);
        assert_int_equal(kg_config_check(&c, &e), 0);
        assert_int_equal(e.step, KG_STEP_CONFIG);
        snprintf(want, sizeof(want), "config: %s %s: writable by group or others (mode 664); chmod go-w it",
                 keys[i], file);
        assert_string_equal(e.msg, want);
        assert_int_equal(chmod(file, 0602), 0);
        assert_int_equal(kg_config_check(&c, &e), 0);
        assert_non_null(strstr(e.msg, "(mode 602)"));

        /* through a symlink (itself always 0777): the target's mode counts */
        snprintf(link_path, sizeof(link_path), "%s.link", file);
        assert_int_equal(symlink(file, link_path), 0);
        assert_int_equal(kg_config_set(&c, keys[i], link_path, &e), 1);
        assert_int_equal(kg_config_check(&c, &e), 0);
        assert_non_null(strstr(e.msg, link_path));
        assert_int_equal(chmod(file, 0600), 0);
        assert_int_equal(kg_config_check(&c, &e), 1);
        unlink(link_path);
        unlink(file);
        assert_int_equal(kg_config_check(&c, &e), 1); /* gone: the opener will say so */
    }
}

/* docs/configuration.md keeps the one complete table of keys; it must match the parser's table
 * exactly. */
static void docs_table_matches_parser(void **state)
{
    FILE *fp = fopen(KG_SOURCE_DIR "/docs/configuration.md", "r");
    char line[2048];
    int in_table = 0, rows = 0, table_keys = 0;

    assert_non_null(fp);
    for (const kg_conf_key *k = kg_config_keys; k->name != NULL; k++)
        table_keys++;
    while (fgets(line, sizeof(line), fp) != NULL) {
        char key[128], def[256];
        const kg_conf_key *k;
        if (strncmp(line, "<!-- config-keys:begin -->", 26) == 0) {
            in_table = 1;
            continue;
        }
        if (strncmp(line, "<!-- config-keys:end -->", 24) == 0)
            break;
        if (!in_table || strncmp(line, "| `", 3) != 0)
            continue;
        /* | `key` | `default` or — | meaning | */
        assert_int_equal(sscanf(line, "| `%127[^`]` | %255[^|]|", key, def), 2);
        for (char *e = def + strlen(def); e > def && e[-1] == ' '; e--)
            e[-1] = '\0';
        for (k = kg_config_keys; k->name != NULL; k++)
            if (strcmp(k->name, key) == 0)
                break;
        if (k->name == NULL)
            fail_msg("docs/configuration.md documents unknown key '%s'", key);
        if (k->def[0] == '\0') {
            if (strcmp(def, "—") != 0)
                fail_msg("docs/configuration.md default of '%s' is '%s', parser has none (write —)", key,
                         def);
        } else {
            char want[300];
            snprintf(want, sizeof(want), "`%s`", k->def);
            if (strcmp(def, want) != 0)
                fail_msg("docs/configuration.md default of '%s' is '%s', parser has %s", key, def, want);
        }
        rows++;
    }
    fclose(fp);
    assert_int_equal(rows, table_keys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(parse_good_file),
        cmocka_unit_test(rejects_bad_lines),
        cmocka_unit_test(missing_file_and_sim_check),
        cmocka_unit_test(conf_writable_by_others_is_refused),
        cmocka_unit_test(trust_files_writable_by_others_are_refused),
        cmocka_unit_test(docs_table_matches_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
