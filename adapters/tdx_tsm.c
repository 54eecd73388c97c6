/* SPDX-License-Identifier: Apache-2.0 */
/* The tdx adapter: TD quotes through configfs-tsm, plus the CCEL event log (tdx_tsm.h). */
#include "tdx_tsm.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccel.h"
#include "kg_log.h"
#include "tdx_quote.h"

#define ATTR_TEXT_MAX 63         /* provider, generation */
#define CCEL_TABLE_READ_MAX 4096 /* the table is 56 bytes */
#define ENTRY_PATH_MAX 1024

enum { ATTEMPT_FAIL = 0, ATTEMPT_OK = 1, ATTEMPT_RETRY = 2 };

/* Rewrites err's message "<step>: <cause>" as "adapter tdx: <context><cause>" (step kept unless
 * it was none). Returns 0. */
static int adapter_err(kg_err *err, const char *context)
{
    char cause[sizeof(err->msg)];
    const char *step = kg_step_name((kg_step)err->step);
    const char *m = err->msg;
    size_t n = strlen(step);

    if (strncmp(m, step, n) == 0 && m[n] == ':' && m[n + 1] == ' ')
        m += n + 2;
    snprintf(cause, sizeof(cause), "%s", m);
    return kg_err_set(err, err->step == KG_STEP_INTERNAL ? KG_STEP_INTERNAL : KG_STEP_EVIDENCE,
                      "adapter tdx: %s%s", context, cause);
}

/* Reads fd to its end with read() in a loop into a growing buffer. Returns 1 with *buf
 * (malloc'ed, one spare byte for a NUL) and *len, or 0 with *error: an errno value, E2BIG when
 * there are more than max bytes. */
static int read_fd_all(int fd, size_t max, uint8_t **buf, size_t *len, int *error)
{
    size_t cap = max < 4096 ? max + 1 : 4096, used = 0;
    uint8_t *data = malloc(cap + 1), *bigger;
    ssize_t n;

    *buf = NULL;
    *len = 0;
    *error = 0;
    if (data == NULL) {
        *error = ENOMEM;
        return 0;
    }
    for (;;) {
        if (used == cap) {
            if (cap > max) {
                *error = E2BIG;
                goto err;
            }
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            if ((bigger = realloc(data, cap + 1)) == NULL) {
                *error = ENOMEM;
                goto err;
            }
            data = bigger;
        }
        n = read(fd, data + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *error = errno;
            goto err;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    if (used > max) {
        *error = E2BIG;
        goto err;
    }
    data[used] = 0;
    *buf = data;
    *len = used;
    return 1;
err:
    free(data);
    return 0;
}

/* Opens name (relative to dirfd, or a path when dirfd is AT_FDCWD) and reads it whole. */
static int read_file_at(int dirfd, const char *name, size_t max, uint8_t **buf, size_t *len, int *error)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    int ok;

    if (fd < 0) {
        *error = errno;
        *buf = NULL;
        *len = 0;
        return 0;
    }
    ok = read_fd_all(fd, max, buf, len, error);
    close(fd);
    return ok;
}

/* Reads a one-line text attribute into out (trailing newline removed). */
static int read_text_attr(int dirfd, const char *name, char out[ATTR_TEXT_MAX + 1], int *error)
{
    uint8_t *buf;
    size_t len;

    if (!read_file_at(dirfd, name, ATTR_TEXT_MAX, &buf, &len, error))
        return 0;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\0'))
        len--;
    memcpy(out, buf, len);
    out[len] = '\0';
    free(buf);
    return 1;
}

static int not_found(const char *report_dir, kg_err *err)
{
    return kg_err_set(
        err, KG_STEP_EVIDENCE,
        "adapter tdx: configfs-tsm not found at %s (Linux 6.7+ with the tdx_guest module is needed)",
        report_dir);
}

/* Reads and parses `generation` (decimal, newline-terminated). */
static int read_generation(int dirfd, const char *report_dir, unsigned long long *gen, kg_err *err)
{
    char text[ATTR_TEXT_MAX + 1], *end = NULL;
    int error = 0;

    if (!read_text_attr(dirfd, "generation", text, &error)) {
        if (error == ENOENT)
            return not_found(report_dir, err);
        return kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: cannot read generation: %s", strerror(error));
    }
    errno = 0;
    *gen = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || errno != 0 || end == NULL || *end != '\0')
        return kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: generation '%.20s' is not a number", text);
    return 1;
}

/* Reads generation and compares it with want: ATTEMPT_OK, ATTEMPT_RETRY (another writer) or
 * ATTEMPT_FAIL. */
static int check_generation(int dirfd, const char *report_dir, unsigned long long want, const char *after,
                            kg_err *err)
{
    unsigned long long gen;

    if (!read_generation(dirfd, report_dir, &gen, err))
        return ATTEMPT_FAIL;
    if (gen == want)
        return ATTEMPT_OK;
    KG_INFO("tdx: generation is %llu after %s, expected %llu: another writer, retrying", gen, after, want);
    kg_err_set(err, KG_STEP_EVIDENCE,
               "generation of the report entry changed under us (%llu after %s, expected %llu): "
               "another writer uses configfs-tsm",
               gen, after, want);
    return ATTEMPT_RETRY;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

/* Checks that the outblob is a whole TD quote carrying report_data. */
static int check_outblob(const uint8_t *blob, size_t len, const uint8_t report_data[64], kg_err *err)
{
    tdx_quote q;

    if (len == 0)
        return kg_err_set(
            err, KG_STEP_EVIDENCE,
            "adapter tdx: outblob is empty (no quote: is the host's quote generation service running?)");
    if (len < TDX_QUOTE_SIGNED_LEN)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "adapter tdx: outblob holds %zu bytes, less than a TD quote (%d)", len,
                          TDX_QUOTE_SIGNED_LEN);
    if (!tdx_quote_parse(blob, len, &q, err))
        return adapter_err(err, "outblob is not a complete TD quote: ");
    if (CRYPTO_memcmp(q.report_data, report_data, 64) != 0) /* from the parser: v5 moves it */
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "adapter tdx: quote REPORTDATA differs from the value written");
    return 1;
}

/* One attempt with a fresh entry; the entry is removed before returning. */
static int attempt_quote(const char *report_dir, const uint8_t report_data[64], uint8_t **quote,
                         size_t *quote_len, kg_err *err)
{
    char entry[ENTRY_PATH_MAX], provider[ATTR_TEXT_MAX + 1], hex[33];
    uint8_t rnd[16], *blob = NULL;
    size_t blob_len = 0;
    unsigned long long gen0;
    int dirfd = -1, fd = -1, created = 0, error = 0, rc = ATTEMPT_FAIL, n;

    /* the name only has to be unguessable and unique: the kernel's getrandom, no DRBG state */
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        kg_err_set(err, KG_STEP_INTERNAL, "adapter tdx: no random bytes for the entry name");
        goto err;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    n = snprintf(entry, sizeof(entry), "%s/keygate-%s", report_dir, hex);
    if (n < 0 || (size_t)n >= sizeof(entry)) {
        kg_err_set(err, KG_STEP_CONFIG, "adapter tdx: tsm_report_dir is too long");
        goto err;
    }
    if (mkdir(entry, 0700) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            not_found(report_dir, err);
        else
            kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: cannot create a report entry in %s: %s",
                       report_dir, strerror(errno));
        goto err;
    }
    created = 1;
    if ((dirfd = open(entry, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: cannot open the report entry: %s", strerror(errno));
        goto err;
    }
    if (!read_generation(dirfd, report_dir, &gen0, err))
        goto err;
    if (!read_text_attr(dirfd, "provider", provider, &error)) {
        if (error == ENOENT)
            not_found(report_dir, err);
        else
            kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: cannot read provider: %s", strerror(error));
        goto err;
    }
    if ((rc = check_generation(dirfd, report_dir, gen0, "reading provider", err)) != ATTEMPT_OK)
        goto err;
    rc = ATTEMPT_FAIL;
    if (strcmp(provider, TDX_TSM_PROVIDER) != 0) {
        kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: provider is '%s', not " TDX_TSM_PROVIDER, provider);
        goto err;
    }

    if ((fd = openat(dirfd, "inblob", O_WRONLY | O_CLOEXEC)) < 0 || !write_all(fd, report_data, 64)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: cannot write REPORTDATA to inblob: %s",
                   strerror(errno));
        goto err;
    }
    if (close(fd) != 0) {
        fd = -1;
        kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: cannot write REPORTDATA to inblob: %s",
                   strerror(errno));
        goto err;
    }
    fd = -1;
    if ((rc = check_generation(dirfd, report_dir, gen0 + 1, "writing inblob", err)) != ATTEMPT_OK)
        goto err;
    rc = ATTEMPT_FAIL;

    if (!read_file_at(dirfd, "outblob", TDX_TSM_OUTBLOB_MAX, &blob, &blob_len, &error)) {
        if (error == E2BIG)
            kg_err_set(err, KG_STEP_EVIDENCE, "adapter tdx: outblob is larger than %d bytes",
                       TDX_TSM_OUTBLOB_MAX);
        else
            kg_err_set(
                err, KG_STEP_EVIDENCE,
                "adapter tdx: reading outblob failed: %s (is the host's quote generation service running?)",
                strerror(error));
        goto err;
    }
    if ((rc = check_generation(dirfd, report_dir, gen0 + 1, "reading outblob", err)) != ATTEMPT_OK)
        goto err;
    rc = ATTEMPT_FAIL;
    if (!check_outblob(blob, blob_len, report_data, err))
        goto err;
    *quote = blob;
    *quote_len = blob_len;
    blob = NULL;
    rc = ATTEMPT_OK;
err:
    if (fd >= 0)
        close(fd);
    if (dirfd >= 0)
        close(dirfd);
    if (created && rmdir(entry) != 0)
        KG_WARN("tdx: cannot remove the report entry %s: %s", entry, strerror(errno));
    free(blob);
    return rc;
}

int tdx_tsm_get_quote(const char *report_dir, const uint8_t report_data[64], uint8_t **quote,
                      size_t *quote_len, kg_err *err)
{
    struct stat st;
    int rc = ATTEMPT_RETRY;

    *quote = NULL;
    *quote_len = 0;
    if (stat(report_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return not_found(report_dir, err);
    for (int i = 0; i < TDX_TSM_ATTEMPTS && rc == ATTEMPT_RETRY; i++)
        rc = attempt_quote(report_dir, report_data, quote, quote_len, err);
    if (rc == ATTEMPT_RETRY) {
        char context[64];
        snprintf(context, sizeof(context), "giving up after %d attempts: ", TDX_TSM_ATTEMPTS);
        return adapter_err(err, context);
    }
    return rc == ATTEMPT_OK;
}

int tdx_ccel_read_log(const char *table_path, const char *data_path, uint8_t **log, size_t *log_len,
                      kg_err *err)
{
    uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN];
    uint8_t *buf = NULL;
    size_t len = 0, events_len = 0;
    ccel_table table;
    int error = 0;

    *log = NULL;
    *log_len = 0;
    if (table_path != NULL) {
        if (!read_file_at(AT_FDCWD, table_path, CCEL_TABLE_READ_MAX, &buf, &len, &error)) {
            kg_err_set(err, KG_STEP_EVIDENCE, "CCEL table %s: %s", table_path, strerror(error));
            goto err;
        }
        if (!ccel_table_parse(buf, len, &table, err))
            goto err;
        free(buf);
        buf = NULL;
    }
    if (!read_file_at(AT_FDCWD, data_path, CCEL_LOG_MAX, &buf, &len, &error)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "CCEL event log %s: %s", data_path,
                   error == E2BIG ? "larger than the bound" : strerror(error));
        goto err;
    }
    if (!ccel_replay(buf, len, rtmr, &events_len, NULL, NULL, err))
        goto err;
    if (events_len < len) { /* trim at the terminator; keep the old buffer if shrinking fails */
        uint8_t *trimmed = realloc(buf, events_len + 1);
        if (trimmed != NULL)
            buf = trimmed;
    }
    *log = buf;
    *log_len = events_len;
    return 1;
err:
    free(buf);
    return 0;
}

int tdx_tsm_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev, kg_err *err)
{
    if (!tdx_tsm_get_quote(cfg->tsm_report_dir, ev->report_data, &ev->quote, &ev->quote_len, err))
        return 0;
    if (cfg->event_log &&
        !tdx_ccel_read_log(cfg->ccel_table, cfg->ccel_data, &ev->event_log, &ev->event_log_len, err))
        return adapter_err(err, "");
    if (!kg_evidence_set_runtime_data(ev, req->user_data, req->user_data_len, err))
        return 0;
    ev->kind = KG_EVIDENCE_TDX;
    return 1;
}
