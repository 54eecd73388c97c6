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

/* docs/supported-combinations.md: the table of adapter x kbs_type x kbs_mode x ita_api_version x
 * kbs_intel_generation is the contract of kg_config_check (issue 19, items 1 and 4). Every combination of the
 * parser's own choices (and both trustee_tee_key values), loaded from a file with kbs_url set, must match
 * exactly one row and be accepted exactly when that row says yes; a refusal is one line naming
 * the settings the row fixes. */
#define COMBO_COLS 5
#define COMBO_MAX_ROWS 32
#define COMBO_MAX_VALS 8

static const char *const combo_keys[COMBO_COLS] = {"adapter", "kbs_type", "kbs_mode", "ita_api_version",
                                                   "kbs_intel_generation"};

typedef struct combo_row {
    char vals[COMBO_COLS][COMBO_MAX_VALS][24];
    int nvals[COMBO_COLS]; /* 0 = any */
    int supported;
    int line;
} combo_row;

static const kg_conf_key *conf_key(const char *name)
{
    for (const kg_conf_key *k = kg_config_keys; k->name != NULL; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    fail_msg("no config key '%s'", name);
    return NULL;
}

/* The n-th value of an ENUM's "a|b|c" choices into out; 0 past the end. */
static int choice(const char *choices, int n, char *out, size_t size)
{
    const char *p = choices;
    for (int i = 0; i < n; i++) {
        if ((p = strchr(p, '|')) == NULL)
            return 0;
        p++;
    }
    snprintf(out, size, "%.*s", (int)strcspn(p, "|"), p);
    return 1;
}

static int is_choice(const char *choices, const char *v)
{
    char c[24];
    for (int i = 0; choice(choices, i, c, sizeof(c)); i++)
        if (strcmp(c, v) == 0)
            return 1;
    return 0;
}

/* One cell: "`any`" or "`a`, `b`". */
static void parse_cell(const char *cell, size_t len, combo_row *r, int col)
{
    const char *p = cell, *end = cell + len;
    r->nvals[col] = 0;
    while ((p = memchr(p, '`', (size_t)(end - p))) != NULL) {
        const char *q = memchr(p + 1, '`', (size_t)(end - p - 1));
        if (q == NULL)
            fail_msg("supported-combinations.md:%d: unbalanced ` in column %s", r->line, combo_keys[col]);
        if ((size_t)(q - p - 1) == 3 && strncmp(p + 1, "any", 3) == 0) {
            if (r->nvals[col] != 0)
                fail_msg("supported-combinations.md:%d: `any` with other values", r->line);
            return;
        }
        if (r->nvals[col] == COMBO_MAX_VALS || (size_t)(q - p - 1) >= sizeof(r->vals[0][0]))
            fail_msg("supported-combinations.md:%d: too many or too long values", r->line);
        snprintf(r->vals[col][r->nvals[col]], sizeof(r->vals[0][0]), "%.*s", (int)(q - p - 1), p + 1);
        if (!is_choice(conf_key(combo_keys[col])->choices, r->vals[col][r->nvals[col]]))
            fail_msg("supported-combinations.md:%d: '%s' is not a value of %s", r->line,
                     r->vals[col][r->nvals[col]], combo_keys[col]);
        r->nvals[col]++;
        p = q + 1;
    }
    if (r->nvals[col] == 0)
        fail_msg("supported-combinations.md:%d: column %s is empty", r->line, combo_keys[col]);
}

static int read_combo_table(combo_row *rows)
{
    FILE *fp = fopen(KG_SOURCE_DIR "/docs/supported-combinations.md", "r");
    char line[4096];
    int n = 0, lineno = 0, in_table = 0;

    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp) != NULL) {
        const char *cell;
        lineno++;
        static const char header[] =
            "| adapter | kbs_type | kbs_mode | ita_api_version | kbs_intel_generation | supported |";
        if (strncmp(line, header, sizeof(header) - 1) == 0) {
            in_table = 1;
            continue;
        }
        if (!in_table || strncmp(line, "| ---", 5) == 0)
            continue;
        if (line[0] != '|')
            break;
        assert_true(n < COMBO_MAX_ROWS);
        memset(&rows[n], 0, sizeof(rows[n]));
        rows[n].line = lineno;
        cell = line + 1;
        for (int col = 0; col <= COMBO_COLS; col++) {
            const char *bar = strchr(cell, '|');
            if (bar == NULL)
                fail_msg("supported-combinations.md:%d: too few columns", lineno);
            if (col < COMBO_COLS) {
                parse_cell(cell, (size_t)(bar - cell), &rows[n], col);
            } else if (strncmp(cell, " yes ", 5) == 0 || strncmp(cell, " no ", 4) == 0) {
                rows[n].supported = cell[1] == 'y';
            } else {
                fail_msg("supported-combinations.md:%d: 'supported' is neither yes nor no", lineno);
            }
            cell = bar + 1;
        }
        n++;
    }
    fclose(fp);
    assert_true(n > 0);
    return n;
}

static int row_matches(const combo_row *r, char v[COMBO_COLS][24])
{
    for (int col = 0; col < COMBO_COLS; col++) {
        int hit = r->nvals[col] == 0;
        for (int i = 0; i < r->nvals[col] && !hit; i++)
            hit = strcmp(r->vals[col][i], v[col]) == 0;
        if (!hit)
            return 0;
    }
    return 1;
}

static void supported_combinations_table(void **state)
{
    combo_row rows[COMBO_MAX_ROWS];
    int nrows = read_combo_table(rows), idx[COMBO_COLS + 1] = {0}, total = 0, used[COMBO_MAX_ROWS] = {0};
    const char *tee_choices = conf_key("trustee_tee_key")->choices;

    for (;;) {
        char v[COMBO_COLS + 1][24], text[1024], want[160];
        const combo_row *row = NULL;
        int ok, col;
        kg_config c;
        kg_err e;
        const char *p;

        /* the next combination, the last column fastest; done when the first one runs out */
        for (col = 0; col < COMBO_COLS; col++)
            if (!choice(conf_key(combo_keys[col])->choices, idx[col], v[col], sizeof(v[0])))
                break;
        if (col < COMBO_COLS) {
            if (col == 0)
                break;
            idx[col] = 0;
            idx[col - 1]++;
            continue;
        }
        if (!choice(tee_choices, idx[COMBO_COLS], v[COMBO_COLS], sizeof(v[0]))) {
            idx[COMBO_COLS] = 0;
            idx[COMBO_COLS - 1]++;
            continue;
        }
        idx[COMBO_COLS]++;
        total++;
        for (int i = 0; i < nrows; i++) {
            if (!row_matches(&rows[i], v))
                continue;
            if (row != NULL)
                fail_msg("%s/%s/%s/%s/%s matches the rows of lines %d and %d", v[0], v[1], v[2], v[3], v[4],
                         row->line, rows[i].line);
            row = &rows[i];
            used[i] = 1;
        }
        if (row == NULL)
            fail_msg(
                "adapter = %s, kbs_type = %s, kbs_mode = %s, ita_api_version = %s, kbs_intel_generation = %s "
                "is in no row",
                v[0], v[1], v[2], v[3], v[4]);
        snprintf(
            text, sizeof(text),
            "adapter = %s\nkbs_type = %s\nkbs_mode = %s\nita_api_version = %s\nkbs_intel_generation = %s\n"
            "trustee_tee_key = %s\nkbs_url = https://kbs.example:9443\nsim_pck_key = /k\nsim_pck_chain = "
            "/c\n",
            v[0], v[1], v[2], v[3], v[4], v[5]);
        p = write_conf(text);
        kg_config_defaults(&c);
        kg_err_clear(&e);
        assert_int_equal(kg_config_load_file(&c, p, &e), 1);
        unlink(p);
        ok = kg_config_check(&c, &e);
        if (ok != row->supported)
            fail_msg(
                "%s/%s/%s/%s/%s (trustee_tee_key %s): kg_config_check %s, the table (line %d) says %s: %s",
                v[0], v[1], v[2], v[3], v[4], v[5], ok ? "accepts" : "refuses", row->line,
                row->supported ? "yes" : "no", ok ? "" : e.msg);
        if (ok)
            continue;
        assert_int_equal(e.step, KG_STEP_CONFIG);
        assert_null(strchr(e.msg, '\n'));
        for (col = 0; col < COMBO_COLS; col++) {
            if (row->nvals[col] != 1)
                continue;
            snprintf(want, sizeof(want), "%s = %s", combo_keys[col], v[col]);
            if (strstr(e.msg, want) == NULL)
                fail_msg("the refusal of line %d does not name '%s': %s", row->line, want, e.msg);
        }
    }
    assert_int_equal(total, 4 * 2 * 2 * 2 * 3 * 2); /* the parser's choices today: all of them were tried */
    for (int i = 0; i < nrows; i++)
        if (!used[i])
            fail_msg("the row of line %d matches no combination", rows[i].line);
}

/* ita_api_version = v2 with the default intel/passport is what `keygate token` and `verify` use
 * when keygate.conf names no KBS; with a kbs_url it is refused when the KBS is pinned to v1.3 (the
 * table's v2 row); with auto, the release asks the KBS (kg_intel_gen_check_passport). */
static void v2_is_refused_only_with_an_intel_kbs(void **state)
{
    kg_config c;
    kg_err e;

    kg_config_defaults(&c);
    assert_int_equal(kg_config_set(&c, "ita_api_version", "v2", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1);
    assert_int_equal(kg_config_set(&c, "kbs_url", "https://kbs.example:9443", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1); /* auto: decided at the release */
    assert_int_equal(kg_config_set(&c, "kbs_intel_generation", "2026", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1);
    assert_int_equal(kg_config_set(&c, "kbs_intel_generation", "v1.3", &e), 1);
    kg_err_clear(&e);
    assert_int_equal(kg_config_check(&c, &e), 0);
    assert_string_equal(e.msg,
                        "config: ita_api_version = v2 cannot be used with kbs_type = intel, kbs_mode = "
                        "passport and kbs_intel_generation = v1.3 (the Intel KBS v1.3.0 reads attester_type "
                        "and attester_held_data at the top level of a v1 token and refuses a v2 token with "
                        "401); use ita_api_version = v1");
    /* the same, asked directly, whatever kbs_url says (release: a KBS named by a key reference) */
    assert_int_equal(kg_config_set(&c, "kbs_url", "", &e), 1);
    assert_int_equal(kg_config_check_passport(&c, &e), 0);
    assert_int_equal(kg_config_set(&c, "ita_api_version", "v1", &e), 1);
    assert_int_equal(kg_config_check_passport(&c, &e), 1);
}

/* trustee_token = ear needs trustee_as_cert (and kbs_type = trustee); the AS certificate alone
 * means a forgotten trustee_token; require_tcb_status cannot be enforced on an EAR; the AS
 * certificate is a trust file. Each refusal is one line naming the settings. */
static void trustee_token_and_its_keys(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"kbs_type = trustee\ntrustee_token = ear\n", "config: trustee_token = ear needs trustee_as_cert "
                                                      "(the attestation service's token signing certificate "
                                                      "or public key, the only trust of an EAR)"},
        {"kbs_type = trustee\ntrustee_as_cert = /etc/keygate/as.pem\n",
         "config: trustee_as_cert is set but trustee_token = ita (an ITA token is verified against "
         "ita_trust_anchor, not an AS key); set trustee_token = ear or remove trustee_as_cert"},
        {"trustee_token = ear\ntrustee_as_cert = /etc/keygate/as.pem\n",
         "config: trustee_token = ear cannot be used with kbs_type = intel (only Trustee's KBS returns EAR "
         "tokens); use kbs_type = trustee"},
        {"kbs_type = trustee\ntrustee_token = ear\ntrustee_as_cert = /etc/keygate/as.pem\n"
         "require_tcb_status = UpToDate\n",
         "config: require_tcb_status cannot be enforced with trustee_token = ear (an EAR has no "
         "attester_tcb_status; the appraisal's ear.status, see trustee_ear_status, covers the TCB)"},
        {"kbs_type = trustee\ntrustee_token = ear\ntrustee_as_cert = /etc/keygate/as.pem\n"
         "trustee_ear_status = warning\n",
         NULL},
        {"kbs_type = trustee\ntrustee_token = ita\ntrustee_ear_status = warning\n", NULL}, /* no effect: ok */
    };
    char file[64];
    kg_config c;
    kg_err e;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *p = write_conf(cases[i].text);
        kg_config_defaults(&c);
        kg_err_clear(&e);
        assert_int_equal(kg_config_load_file(&c, p, &e), 1);
        unlink(p);
        assert_int_equal(kg_config_check(&c, &e), cases[i].want == NULL);
        if (cases[i].want != NULL)
            assert_string_equal(e.msg, cases[i].want);
    }
    assert_string_equal(c.trustee_ear_status, "warning");
    kg_config_defaults(&c);
    assert_string_equal(c.trustee_token, "ita");
    assert_string_equal(c.trustee_ear_status, "affirming");
    assert_int_equal(kg_config_set(&c, "trustee_ear_status", "contraindicated", &e), 0);
    assert_int_equal(kg_config_set(&c, "trustee_token", "jwt", &e), 0);
    /* a trust file like ita_trust_anchor */
    snprintf(file, sizeof(file), "%s", write_conf("-----BEGIN CERTIFICATE-----\n"));
    assert_int_equal(kg_config_set(&c, "kbs_type", "trustee", &e), 1);
    assert_int_equal(kg_config_set(&c, "trustee_token", "ear", &e), 1);
    assert_int_equal(kg_config_set(&c, "trustee_as_cert", file, &e), 1);
    assert_int_equal(chmod(file, 0644), 0);
    assert_int_equal(kg_config_check(&c, &e), 1);
    assert_int_equal(chmod(file, 0646), 0);
    assert_int_equal(kg_config_check(&c, &e), 0);
    assert_non_null(strstr(e.msg, "trustee_as_cert"));
    assert_non_null(strstr(e.msg, "writable by group or others (mode 646)"));
    unlink(file);
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
        cmocka_unit_test(supported_combinations_table),
        cmocka_unit_test(v2_is_refused_only_with_an_intel_kbs),
        cmocka_unit_test(trustee_token_and_its_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
