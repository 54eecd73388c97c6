/* SPDX-License-Identifier: Apache-2.0 */
/* The verification cache's file-safety checks (connector/ita_cache.c): which directories and
 * entries are used, atomic replacement, the JWKS age rule. What is read is verified by ita_verify
 * (tests/integration/test_verification_cache.py); here only what reaches that verification. */
#include "kg_test.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ita_cache.h"

#define URL "https://portal.example/certs"
#define JWKS "{\"keys\":[]}"
#define NOBODY 65534

static char base[64], dir[128];

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof(base), "/tmp/kg-cache-XXXXXX");
    assert_non_null(mkdtemp(base));
    assert_int_equal(chmod(base, 0711), 0); /* the non-root case below must reach dir */
    snprintf(dir, sizeof(dir), "%s/c", base);
    assert_int_equal(mkdir(dir, 0700), 0);
    return 0;
}

static int teardown(void **state)
{
    char cmd[200];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void entry_path(const char *kind, char *out, size_t size)
{
    char name[ITA_CACHE_NAME_MAX];
    assert_true(ita_cache_entry_name(kind, URL, name));
    snprintf(out, size, "%s/%s", dir, name);
}

/* Reads the "jwks" entry: 1 when it is handed out. */
static int readable(const char **why)
{
    unsigned char *buf = NULL;
    size_t len;
    time_t mtime;
    int ok = ita_cache_read(dir, "jwks", URL, 4096, &buf, &len, &mtime, why);
    if (ok)
        assert_memory_equal(buf, JWKS, len);
    free(buf);
    return ok;
}

static void test_entry_name_is_the_url_hash(void **state)
{
    char name[ITA_CACHE_NAME_MAX], expect[ITA_CACHE_NAME_MAX] = "crl-";
    unsigned char md[32];
    (void)state;
    assert_true(EVP_Digest(URL, strlen(URL), md, NULL, EVP_sha256(), NULL));
    for (int i = 0; i < 32; i++)
        snprintf(expect + 4 + 2 * i, 3, "%02x", md[i]);
    assert_true(ita_cache_entry_name("crl", URL, name));
    assert_string_equal(name, expect);
    assert_true(ita_cache_entry_name("crl", URL "x", name));
    assert_string_not_equal(name, expect);
    assert_false(ita_cache_entry_name("a-kind-too-long", URL, name));
}

static void test_directory_checks(void **state)
{
    char p[200];
    const char *why = NULL;
    (void)state;
    assert_true(ita_cache_dir_ok(dir, &why));
    snprintf(p, sizeof(p), "%s/absent", base);
    assert_false(ita_cache_dir_ok(p, &why));
    assert_string_equal(why, "does not exist");
    assert_false(ita_cache_dir_ok("relative/dir", &why));
    snprintf(p, sizeof(p), "%s/link", base);
    assert_int_equal(symlink(dir, p), 0);
    assert_false(ita_cache_dir_ok(p, &why));
    assert_string_equal(why, "is a symbolic link");
    snprintf(p, sizeof(p), "%s/file", base);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    assert_false(ita_cache_dir_ok(p, &why));
    assert_string_equal(why, "is not a directory");
    for (mode_t m = 0701; m <= 0770; m = m == 0701 ? 0710 : m == 0710 ? 0750 : 0777) {
        assert_int_equal(chmod(dir, m), 0);
        assert_false(ita_cache_dir_ok(dir, &why));
        assert_string_equal(why, "gives group or others access (mode 0700 required)");
        if (m == 0777)
            break;
    }
    assert_int_equal(chmod(dir, 0700), 0);
    if (geteuid() == 0) {
        assert_int_equal(chown(dir, NOBODY, NOBODY), 0);
        assert_false(ita_cache_dir_ok(dir, &why));
        assert_string_equal(why, "is owned by another user (root or the process's user required)");
        assert_false(readable(&why));
        assert_int_equal(chown(dir, 0, 0), 0);
    }
}

static void test_write_then_read(void **state)
{
    char p[300];
    const char *why = NULL;
    struct stat st;
    mode_t old = umask(0);
    (void)state;
    assert_true(ita_cache_write(dir, "jwks", URL, JWKS, strlen(JWKS), &why));
    umask(old);
    entry_path("jwks", p, sizeof(p));
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(readable(&why));
    /* a second write replaces it; no temporary file stays behind */
    assert_true(ita_cache_write(dir, "jwks", URL, JWKS, strlen(JWKS), &why));
    snprintf(p, sizeof(p), "ls -A '%s' | wc -l | grep -qx 1", dir);
    assert_int_equal(system(p), 0);
}

static void test_unsafe_entries_are_not_read(void **state)
{
    char p[300], other[200];
    const char *why = NULL;
    (void)state;
    entry_path("jwks", p, sizeof(p));
    assert_false(readable(&why));
    assert_string_equal(why, "no entry");
    /* a symlink to a good copy */
    snprintf(other, sizeof(other), "%s/good", base);
    assert_true(ita_cache_write(dir, "jwks", URL, JWKS, strlen(JWKS), &why));
    assert_int_equal(rename(p, other), 0);
    assert_int_equal(symlink(other, p), 0);
    assert_false(readable(&why));
    assert_string_equal(why, "entry is a symbolic link");
    /* replaced by rename, never written through: the link's target stays as it was */
    assert_true(ita_cache_write(dir, "jwks", URL, "{\"keys\":[1]}", 12, &why));
    {
        size_t n;
        char *target = kg_test_read_text(other, &n);
        struct stat st;
        assert_string_equal(target, JWKS);
        free(target);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISREG(st.st_mode));
    }
    assert_int_equal(unlink(p), 0);
    /* a FIFO: refused without blocking */
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_false(readable(&why));
    assert_string_equal(why, "entry is not a regular file");
    assert_int_equal(unlink(p), 0);
    /* group- or world-accessible, a second hard link, another owner, empty, too large */
    assert_true(ita_cache_write(dir, "jwks", URL, JWKS, strlen(JWKS), &why));
    assert_true(readable(&why));
    assert_int_equal(chmod(p, 0620), 0);
    assert_false(readable(&why));
    assert_int_equal(chmod(p, 0604), 0);
    assert_false(readable(&why));
    assert_string_equal(why, "entry has an unsafe owner, mode or link count");
    assert_int_equal(chmod(p, 0600), 0);
    snprintf(other, sizeof(other), "%s/c/hardlink", base);
    assert_int_equal(link(p, other), 0);
    assert_false(readable(&why));
    assert_int_equal(unlink(other), 0);
    assert_true(readable(&why));
    if (geteuid() == 0) {
        assert_int_equal(chown(p, NOBODY, NOBODY), 0);
        assert_false(readable(&why));
        assert_int_equal(chown(p, 0, 0), 0);
    }
    assert_int_equal(truncate(p, 0), 0);
    assert_false(readable(&why));
    assert_string_equal(why, "entry is empty or too large");
    assert_int_equal(truncate(p, 4097), 0);
    assert_false(readable(&why));
    assert_string_equal(why, "entry is empty or too large");
}

static void set_age(const char *p, long age_s)
{
    struct timespec ts[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void test_jwks_age(void **state)
{
    char p[300], *text;
    const char *why = NULL;
    time_t fetched = 0, now = time(NULL);
    (void)state;
    assert_true(ita_cache_write(dir, "jwks", URL, JWKS, strlen(JWKS), &why));
    entry_path("jwks", p, sizeof(p));
    set_age(p, 10);
    assert_non_null(text = ita_cache_get_jwks(dir, URL, 3600, now, &fetched));
    assert_string_equal(text, JWKS);
    assert_true(fetched <= now - 10 && fetched >= now - 11);
    free(text);
    set_age(p, 3600);
    assert_null(ita_cache_get_jwks(dir, URL, 3600, time(NULL), &fetched));
    set_age(p, -600); /* in the future: no age at all */
    assert_null(ita_cache_get_jwks(dir, URL, 3600, time(NULL), &fetched));
    assert_true(ita_cache_write(dir, "jwks", URL, "[1]", 3, &why)); /* not a JWKS */
    assert_null(ita_cache_get_jwks(dir, URL, 3600, time(NULL), &fetched));
    assert_true(ita_cache_write(dir, "crl", URL, "not a CRL", 9, &why));
    assert_null(ita_cache_get_crl(dir, URL));
}

/* A non-root process: its own 0700 directory works; root's is not usable (it cannot open it). */
static void test_directory_of_the_process_user(void **state)
{
    const char *why = NULL;
    char own[200];
    (void)state;
    if (geteuid() != 0)
        skip();
    snprintf(own, sizeof(own), "%s/own", base);
    assert_int_equal(mkdir(own, 0700), 0);
    assert_int_equal(chown(own, NOBODY, NOBODY), 0);
    assert_int_equal(setegid(NOBODY), 0);
    assert_int_equal(seteuid(NOBODY), 0);
    assert_true(ita_cache_dir_ok(own, &why));
    assert_true(ita_cache_write(own, "jwks", URL, JWKS, strlen(JWKS), &why));
    assert_false(ita_cache_dir_ok(dir, &why)); /* root's, mode 0700 */
    assert_string_equal(why, "cannot be opened");
    assert_int_equal(seteuid(0), 0);
    assert_int_equal(setegid(0), 0);
    /* root does not use a directory a less trusted user controls */
    assert_false(ita_cache_dir_ok(own, &why));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_name_is_the_url_hash),
        cmocka_unit_test_setup_teardown(test_directory_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_then_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsafe_entries_are_not_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_of_the_process_user, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
