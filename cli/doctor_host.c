/* SPDX-License-Identifier: Apache-2.0 */
/* keygate doctor: checks of the host (file permissions, openssl.cnf, p11-kit) and the helper
 * that runs openssl / p11-kit with a bounded wait. */
#define _GNU_SOURCE /* environ, secure_getenv */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "doctor.h"
#include "ita_client.h"
#include "kg_release.h"
#include "kg_time.h"

#define RUN_OUTPUT_MAX (64 * 1024)

int doctor_run(char *const argv[], const char *env_name, const char *env_value, char *out, size_t size,
               long timeout_ms)
{
    int pipefd[2], status = 0;
    size_t len = 0, nenv = 0;
    long long deadline = kg_mono_ms_int() + timeout_ms;
    char **envp, *entry = NULL;
    pid_t pid;

    out[0] = '\0';
    /* the child's environment is built here: between fork and exec only async-signal-safe calls */
    while (environ[nenv] != NULL)
        nenv++;
    if ((envp = calloc(nenv + 2, sizeof(*envp))) == NULL)
        return -1;
    for (size_t i = 0, j = 0; i < nenv; i++) {
        size_t n = env_name != NULL ? strlen(env_name) : 0;
        if (n == 0 || strncmp(environ[i], env_name, n) != 0 || environ[i][n] != '=')
            envp[j++] = environ[i];
        if (i + 1 == nenv && env_name != NULL && asprintf(&entry, "%s=%s", env_name, env_value) > 0)
            envp[j] = entry;
    }
    if (nenv == 0 && env_name != NULL && asprintf(&entry, "%s=%s", env_name, env_value) > 0)
        envp[0] = entry;
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        free(entry);
        free(envp);
        return -1;
    }
    fflush(NULL);
    if ((pid = fork()) < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        free(entry);
        free(envp);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(pipefd[1], STDOUT_FILENO);
        dup2(pipefd[1], STDERR_FILENO);
        execvpe(argv[0], argv, envp);
        _exit(127);
    }
    free(entry);
    free(envp);
    close(pipefd[1]);
    for (;;) {
        struct pollfd p = {pipefd[0], POLLIN, 0};
        long long left = deadline - kg_mono_ms_int();
        char buf[4096];
        ssize_t n;

        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            kill(pid, SIGKILL); /* by its pid: the only process we started */
            waitpid(pid, NULL, 0);
            close(pipefd[0]);
            return -2;
        }
        n = read(pipefd[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (len + 1 < size) {
            size_t take = (size_t)n < size - 1 - len ? (size_t)n : size - 1 - len;
            memcpy(out + len, buf, take);
            len += take;
            out[len] = '\0';
        }
    }
    close(pipefd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

/* "group/others may read" check of a secret file, as ita_read_api_key does. */
static int secret_file_ok(const char *path, char *why, size_t why_len)
{
    struct stat st;

    if (lstat(path, &st) != 0) {
        snprintf(why, why_len, "%s: %s", path, strerror(errno));
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "%s: not a regular file (symlinks are refused)", path);
        return 0;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(why, why_len, "%s: mode %03o lets group or others read it", path,
                 (unsigned)(st.st_mode & 0777));
        return 0;
    }
    if (access(path, R_OK) != 0) {
        snprintf(why, why_len, "%s: not readable by this user: %s", path, strerror(errno));
        return 0;
    }
    return 1;
}

static int readable(const char *path, char *why, size_t why_len)
{
    if (access(path, R_OK) != 0) {
        snprintf(why, why_len, "%s: %s", path, strerror(errno));
        return 0;
    }
    return 1;
}

doctor_status doctor_check_files(doctor_ctx *d, doctor_result *r)
{
    char why[640], fix[512];
    char *key = NULL;
    int nfiles = 0;
    kg_err err;

    if (!d->cfg_ok)
        return doctor_set(r, DOCTOR_SKIP, NULL, "no usable configuration");
    kg_err_clear(&err);
    if (d->api_key == NULL) {
        if (d->cfg.ita_api_key_file[0] == '\0')
            return doctor_set(r, DOCTOR_FAIL,
                              "set ita_api_key_file (or pass the key on stdin: --api-key-file -)",
                              "ita_api_key_file is not set");
        snprintf(fix, sizeof(fix), "chown root: %.200s && chmod 600 %.200s (one line: the key)",
                 d->cfg.ita_api_key_file, d->cfg.ita_api_key_file);
        if (!secret_file_ok(d->cfg.ita_api_key_file, why, sizeof(why)))
            return doctor_set(r, DOCTOR_FAIL, fix, "API key file %s", why);
        if (!ita_read_api_key(d->cfg.ita_api_key_file, &key, &err))
            return doctor_set(r, DOCTOR_FAIL, fix, "%s", err.msg);
        OPENSSL_secure_clear_free(key, ITA_MAX_API_KEY + 1);
        nfiles++;
    }
    if (d->cfg.ita_trust_anchor[0] != '\0') {
        if (!readable(d->cfg.ita_trust_anchor, why, sizeof(why)))
            return doctor_set(r, DOCTOR_FAIL, "install the ITA root PEM and set ita_trust_anchor to it",
                              "trust anchor %s", why);
        nfiles++;
    }
    if (d->cfg.tls_ca_file[0] != '\0') {
        if (!readable(d->cfg.tls_ca_file, why, sizeof(why)))
            return doctor_set(r, DOCTOR_FAIL, "fix tls_ca_file, or leave it empty for the system store",
                              "tls_ca_file %s", why);
        nfiles++;
    }
    if (strcmp(d->cfg.ad.name, "sim") == 0 && d->cfg.ad.sim.pck_key_file[0] != '\0') {
        if (!secret_file_ok(d->cfg.ad.sim.pck_key_file, why, sizeof(why)))
            return doctor_set(r, DOCTOR_FAIL, "chmod 600 the sim_pck_key file", "sim_pck_key %s", why);
        nfiles++;
    }
    for (size_t i = 0; i < d->nrefs; i++) {
        kg_keyref ref;
        if (!kg_keyref_load(d->refs[i], &ref, &err))
            return doctor_set(
                r, DOCTOR_FAIL,
                "make the key reference readable by the service user (it holds no secret: 644 is "
                "fine), or recreate it with keygate ref create",
                "%s", err.msg);
        kg_keyref_clear(&ref);
        nfiles++;
    }
    return doctor_set(r, DOCTOR_OK, NULL, "%d file%s fine (API key file %s)", nfiles, nfiles == 1 ? "" : "s",
                      d->api_key != NULL ? "not used: key from stdin" : "not readable by group/others");
}

/* The openssl.cnf the applications will read. */
static const char *openssl_conf_path(const doctor_ctx *d, char *buf, size_t len)
{
    const char *env = secure_getenv("OPENSSL_CONF") /* as OpenSSL reads it */;
    char out[1024], *q1, *q2;
    char *argv[] = {"openssl", "version", "-d", NULL};

    if (d->openssl_conf != NULL)
        return d->openssl_conf;
    if (env != NULL && env[0] != '\0')
        return env;
    /* OPENSSLDIR: "/usr/lib/ssl" */
    if (doctor_run(argv, NULL, NULL, out, sizeof(out), 5000) != 0 || (q1 = strchr(out, '"')) == NULL ||
        (q2 = strchr(q1 + 1, '"')) == NULL)
        return NULL;
    *q2 = '\0';
    snprintf(buf, len, "%s/openssl.cnf", q1 + 1);
    return buf;
}

/* Finds the provider block "  keygate\n    name: ...\n    status: active" in list output. */
static int keygate_active(const char *out, char *version, size_t vlen)
{
    const char *p = strstr(out, "\n  keygate\n");
    const char *end, *v;

    if (p == NULL)
        return 0;
    p += strlen("\n  keygate\n");
    end = strstr(p, "\n  ");
    while (end != NULL && end[3] == ' ') /* deeper indentation: still this block */
        end = strstr(end + 1, "\n  ");
    if (end == NULL)
        end = p + strlen(p);
    if ((v = strstr(p, "version: ")) != NULL && v < end) {
        size_t n = strcspn(v + 9, "\n");
        snprintf(version, vlen, "%.*s", (int)(n < vlen ? n : vlen - 1), v + 9);
    }
    v = strstr(p, "status: active");
    return v != NULL && v < end;
}

doctor_status doctor_check_openssl_cnf(doctor_ctx *d, doctor_result *r)
{
    char path_buf[1024], version[64] = "?", fix[1024];
    char *out = malloc(RUN_OUTPUT_MAX);
    char *argv[] = {"openssl", "list", "-providers", NULL};
    const char *path = openssl_conf_path(d, path_buf, sizeof(path_buf));
    doctor_status st;
    int rc;

    if (out == NULL)
        return doctor_set(r, DOCTOR_FAIL, NULL, "out of memory");
    if (path == NULL) {
        free(out);
        return doctor_set(r, DOCTOR_SKIP, "install the openssl command (Debian: openssl)",
                          "the openssl command is not available");
    }
    snprintf(fix, sizeof(fix),
             "add the keygate provider to %.200s (providers section: default = default_sect, keygate = "
             "keygate_sect; "
             "[keygate_sect] module = keygate, activate = 1, config = %.200s; see keygate-provider(7), "
             "/etc/keygate/openssl-keygate.cnf.example) and give the service OPENSSL_CONF=%.200s",
             path, d->config_path, path);
    rc = doctor_run(argv, "OPENSSL_CONF", path, out, RUN_OUTPUT_MAX, 15000);
    if (rc == -1 || rc == 127)
        st = doctor_set(r, DOCTOR_SKIP, "install the openssl command (Debian: openssl)",
                        "cannot run openssl list -providers");
    else if (rc == -2)
        st = doctor_set(r, DOCTOR_FAIL, fix,
                        "openssl list -providers with OPENSSL_CONF=%s did not finish in 15 s", path);
    else if (rc != 0 || !keygate_active(out, version, sizeof(version))) {
        char first[200] = "";
        const char *e = strstr(out, "error:");
        if (e != NULL)
            snprintf(first, sizeof(first), ": %.*s", (int)strcspn(e, "\n"), e);
        st = doctor_set(r, DOCTOR_FAIL, fix, "openssl list -providers with OPENSSL_CONF=%s: keygate %s%s",
                        path, rc != 0 ? "failed to load" : "is not an active provider", first);
    } else
        st = doctor_set(r, DOCTOR_OK, NULL, "openssl list -providers with OPENSSL_CONF=%s: keygate %s active",
                        path, version);
    free(out);
    return st;
}

static const char *module_dirs[] = {"/etc/pkcs11/modules", "/usr/share/p11-kit/modules", NULL};

doctor_status doctor_check_p11kit(doctor_ctx *d, doctor_result *r)
{
    char *out = malloc(RUN_OUTPUT_MAX);
    char *argv[] = {"p11-kit", "list-modules", NULL};
    char file[512] = "";
    const char *line;
    doctor_status st;
    int rc;

    (void)d;
    if (out == NULL)
        return doctor_set(r, DOCTOR_FAIL, NULL, "out of memory");
    for (size_t i = 0; module_dirs[i] != NULL && file[0] == '\0'; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/keygate.module", module_dirs[i]);
        if (access(path, F_OK) == 0)
            snprintf(file, sizeof(file), "%s", path);
    }
    rc = doctor_run(argv, NULL, NULL, out, RUN_OUTPUT_MAX, 15000);
    line = strncmp(out, "keygate: ", 9) == 0 ? out : strstr(out, "\nkeygate: ");
    if (rc == -1 || rc == 127)
        st = doctor_set(r, file[0] ? DOCTOR_FAIL : DOCTOR_SKIP, "install p11-kit (Debian: p11-kit)",
                        "cannot run p11-kit list-modules%s%s", file[0] ? "; registration file " : "", file);
    else if (line != NULL) {
        if (line != out)
            line++;
        st = doctor_set(r, DOCTOR_OK, NULL, "p11-kit lists the keygate module (%.*s)",
                        (int)strcspn(line + 9, "\n"), line + 9);
    } else if (file[0] != '\0')
        st = doctor_set(
            r, DOCTOR_FAIL,
            "the module file names a library p11-kit cannot load: install libkeygate-pkcs11.so into "
            "p11-kit's module path (Debian: /usr/lib/x86_64-linux-gnu/pkcs11) or use an absolute "
            "path in the .module file",
            "%s exists but p11-kit list-modules does not list keygate", file);
    else
        st = doctor_set(r, DOCTOR_SKIP,
                        "for PKCS#11 applications install keygate.module into /usr/share/p11-kit/modules "
                        "(the Debian package does)",
                        "keygate is not registered with p11-kit (only PKCS#11 applications need it)");
    free(out);
    return st;
}
