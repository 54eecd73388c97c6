/* SPDX-License-Identifier: Apache-2.0 */
#include "ita_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ita_jwks.h"
#include "kg_libctx.h"
#include "kg_log.h"

#define KIND_MAX 12

/* Owned by root or by us: nobody less trusted than the process itself. */
static int owner_ok(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

int ita_cache_entry_name(const char *kind, const char *url, char *name)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[32];
    size_t klen = strlen(kind), md_len = 0;
    char *p;

    if (klen == 0 || klen > KIND_MAX ||
        !EVP_Q_digest(kg_libctx(), "SHA256", NULL, url, strlen(url), md, &md_len) || md_len != sizeof(md))
        return 0;
    memcpy(name, kind, klen);
    p = name + klen;
    *p++ = '-';
    for (size_t i = 0; i < sizeof(md); i++) {
        *p++ = digits[md[i] >> 4];
        *p++ = digits[md[i] & 15];
    }
    *p = '\0';
    return 1;
}

/* The directory as an O_PATH-less fd (closed by the caller), or -1 with *why. */
static int dir_open(const char *dir, int need_write, const char **why)
{
    struct stat st;
    int fd;

    if (dir == NULL || dir[0] != '/') {
        *why = "not an absolute path";
        return -1;
    }
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        int e = errno;
        /* a symlink to a directory fails with ENOTDIR or ELOOP: lstat tells which it was */
        *why = e == ENOENT ? "does not exist"
               : (e == ELOOP || e == ENOTDIR) && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode)
                   ? "is a symbolic link"
               : e == ENOTDIR ? "is not a directory"
                              : "cannot be opened";
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode))
        *why = "is not a directory";
    else if (!owner_ok(st.st_uid))
        *why = "is owned by another user (root or the process's user required)";
    else if ((st.st_mode & 077) != 0)
        *why = "gives group or others access (mode 0700 required)";
    else if (need_write && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) != 0)
        *why = "is not writable";
    else
        return fd;
    close(fd);
    return -1;
}

int ita_cache_dir_ok(const char *dir, const char **why)
{
    int fd = dir_open(dir, 1, why);

    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

int ita_cache_read(const char *dir, const char *kind, const char *url, size_t max, unsigned char **buf,
                   size_t *len, time_t *mtime, const char **why)
{
    char name[ITA_CACHE_NAME_MAX];
    unsigned char *b = NULL;
    struct stat st;
    size_t got = 0;
    int dfd = -1, fd = -1, ok = 0;

    *buf = NULL;
    *len = 0;
    if (!ita_cache_entry_name(kind, url, name)) {
        *why = "no entry name";
        goto err;
    }
    if ((dfd = dir_open(dir, 0, why)) < 0)
        goto err;
    /* O_NONBLOCK: a FIFO planted here must not hang us before fstat refuses it */
    if ((fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) < 0) {
        *why = errno == ENOENT  ? "no entry"
               : errno == ELOOP ? "entry is a symbolic link"
                                : "cannot open entry";
        goto err;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "entry is not a regular file";
        goto err;
    }
    if (st.st_nlink != 1 || !owner_ok(st.st_uid) || (st.st_mode & 077) != 0) {
        *why = "entry has an unsafe owner, mode or link count";
        goto err;
    }
    if (st.st_size <= 0 || (unsigned long long)st.st_size > max) {
        *why = "entry is empty or too large";
        goto err;
    }
    if ((b = malloc((size_t)st.st_size + 1)) == NULL) {
        *why = "out of memory";
        goto err;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, b + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *why = "entry shorter than its size (being replaced?)";
            goto err;
        }
        got += (size_t)n;
    }
    b[got] = '\0';
    *buf = b;
    *len = got;
    *mtime = st.st_mtime;
    b = NULL;
    ok = 1;
err:
    free(b);
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    return ok;
}

int ita_cache_write(const char *dir, const char *kind, const char *url, const void *data, size_t len,
                    const char **why)
{
    static atomic_uint counter;
    char name[ITA_CACHE_NAME_MAX], tmp[ITA_CACHE_NAME_MAX + 40];
    const unsigned char *p = data;
    int dfd = -1, fd = -1, created = 0, ok = 0;
    size_t done = 0;

    if (!ita_cache_entry_name(kind, url, name)) {
        *why = "no entry name";
        return 0;
    }
    if ((dfd = dir_open(dir, 1, why)) < 0)
        return 0;
    /* unique per process and call: O_EXCL then never meets another writer's file */
    snprintf(tmp, sizeof(tmp), ".%s.%ld.%u.tmp", name, (long)getpid(), atomic_fetch_add(&counter, 1));
    if ((fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
        *why = "cannot create a temporary file";
        goto err;
    }
    created = 1;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *why = "write failed";
            goto err;
        }
        done += (size_t)n;
    }
    /* the data reaches the disk before the name points at it: a crash leaves the old entry or the
     * new one, never a truncated one */
    if (fsync(fd) != 0) {
        *why = "fsync failed";
        goto err;
    }
    if (close(fd) != 0) {
        fd = -1;
        *why = "close failed";
        goto err;
    }
    fd = -1;
    if (renameat(dfd, tmp, dfd, name) != 0) {
        *why = "rename failed";
        goto err;
    }
    ok = 1;
err:
    if (fd >= 0)
        close(fd);
    if (!ok && created)
        unlinkat(dfd, tmp, 0);
    close(dfd);
    return ok;
}

X509_CRL *ita_cache_get_crl(const char *dir, const char *url)
{
    unsigned char *buf = NULL;
    const char *why = NULL;
    X509_CRL *crl = NULL;
    size_t len;
    time_t mtime;

    if (ita_cache_read(dir, "crl", url, ITA_CRL_MAX_LEN, &buf, &len, &mtime, &why) &&
        (crl = ita_crl_from_bytes(buf, len)) == NULL)
        why = "not a DER or PEM CRL";
    if (crl == NULL)
        KG_DEBUG("verification cache: CRL entry for %s ignored: %s", url, why);
    free(buf);
    return crl;
}

void ita_cache_put_crl(const char *dir, const char *url, X509_CRL *crl)
{
    unsigned char *der = NULL;
    const char *why = "cannot encode the CRL";
    int len = i2d_X509_CRL(crl, &der);

    if (len <= 0 || !ita_cache_write(dir, "crl", url, der, (size_t)len, &why))
        KG_DEBUG("verification cache: CRL %s not stored: %s", url, why);
    OPENSSL_free(der);
    ERR_clear_error();
}

char *ita_cache_get_jwks(const char *dir, const char *url, long ttl_s, time_t now, time_t *fetched)
{
    unsigned char *buf = NULL;
    const char *why = NULL;
    size_t len;
    time_t mtime;
    kg_err e;

    if (!ita_cache_read(dir, "jwks", url, ITA_JWKS_MAX_LEN, &buf, &len, &mtime, &why))
        goto err;
    /* the in-process rule: a JWKS is used for ttl_s after its download (a future time is no age) */
    if (mtime > now || now - mtime >= ttl_s)
        why = "older than the JWKS TTL";
    else if (!ita_jwks_check((const char *)buf, len, &e))
        why = "not a JWKS";
    if (why != NULL)
        goto err;
    *fetched = mtime;
    return (char *)buf;
err:
    KG_DEBUG("verification cache: JWKS entry for %s ignored: %s", url, why);
    free(buf);
    return NULL;
}

void ita_cache_put_jwks(const char *dir, const char *url, const char *text)
{
    const char *why = NULL;

    if (!ita_cache_write(dir, "jwks", url, text, strlen(text), &why))
        KG_DEBUG("verification cache: JWKS %s not stored: %s", url, why);
}
