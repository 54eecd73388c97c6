/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The on-disk verification cache: ITA's JWKS and CRLs shared by the processes of one host, so that
 * a new process does not download them again (docs/security-model.md, "Verification cache").
 *
 * The cache only saves downloads; it is never trusted. Whatever is read from it goes through the
 * same checks as a download (ita_verify.c): a CRL's signature against its issuer in the pinned
 * chain and its nextUpdate, the JWKS's x5c chain to the pinned root. This module only makes sure
 * that what it hands out was written by someone as trusted as the process itself:
 *  - the directory is opened without following a symlink, must be owned by root or by the
 *    process's euid and give no access to group or others (mode & 077 == 0);
 *  - an entry must be a regular file (opened O_NOFOLLOW, never a FIFO or device), with one link,
 *    owned by root or the euid, mode & 077 == 0, and no larger than the caller's limit.
 * Entries are written 0600 to a unique temporary name in the same directory, fsync'ed, then
 * renamed over the entry: concurrent processes never see a partial file.
 * Entry names are "<kind>-<SHA-256 of the source URL, hex>", so that URLs never mix.
 * Stateless and thread-safe; every call opens the directory anew.
 */
#ifndef KG_ITA_CACHE_H
#define KG_ITA_CACHE_H

#include <openssl/x509.h>
#include <stddef.h>
#include <time.h>

#define ITA_CACHE_NAME_MAX 80 /* "<kind>-" + 64 hex + NUL, kind at most 12 characters */

/* The entry name for (kind, url) into name (ITA_CACHE_NAME_MAX bytes). 0 if kind is too long. */
int ita_cache_entry_name(const char *kind, const char *url, char *name);

/* Whether dir is usable (the directory checks above, and writable by us). Returns 1, or 0 with
 * *why (a static string) saying what is wrong. */
int ita_cache_dir_ok(const char *dir, const char **why);

/*
 * Reads the entry for (kind, url): 1 with *buf (malloc'ed, NUL-terminated after *len bytes; caller
 * frees) and *mtime (its modification time), or 0 with *why (static) when it is absent or fails a
 * check above. Nothing read here is trusted: the caller verifies it as if it were downloaded.
 */
int ita_cache_read(const char *dir, const char *kind, const char *url, size_t max, unsigned char **buf,
                   size_t *len, time_t *mtime, const char **why);

/* Replaces the entry for (kind, url) with data atomically. 1, or 0 with *why (static). */
int ita_cache_write(const char *dir, const char *kind, const char *url, const void *data, size_t len,
                    const char **why);

/* ---- typed entries; every failure is logged at debug level and only costs a download ---- */

/* The CRL cached for url, parsed but NOT verified (the caller runs ita_crl_problem), or NULL. */
X509_CRL *ita_cache_get_crl(const char *dir, const char *url);
/* Stores crl (one that passed its checks) as DER for url. */
void ita_cache_put_crl(const char *dir, const char *url, X509_CRL *crl);

/* The JWKS text cached for url (malloc'ed; caller frees) when its file is younger than ttl_s at
 * now and is a JWKS in form (ita_jwks_check), with its modification time in *fetched; else NULL.
 * NOT verified: the caller checks the entry it uses like a download. */
char *ita_cache_get_jwks(const char *dir, const char *url, long ttl_s, time_t now, time_t *fetched);
/* Stores a JWKS (one that just verified a token) for url. */
void ita_cache_put_jwks(const char *dir, const char *url, const char *text);

#endif
