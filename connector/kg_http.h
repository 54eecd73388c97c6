/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_http: the one HTTP client (libcurl) of keygate.
 *
 * - HTTPS with peer and host verification always on (a CA file as the only trust, or the
 *   system store);
 *   plain http:// only to loopback IP literals and only when allow_http_loopback is set.
 * - Connect and total timeouts; retries on transport errors, 429 and 500/502/503/504 with
 *   exponential backoff and full jitter in [wait_min, wait_max], honouring Retry-After.
 * - Response bodies are capped (max_body); status, request-id and trace-id are returned.
 * - Proxy environment variables are honoured (libcurl default).
 * - TLS runs in libcurl's OpenSSL, which never loads our provider: curl's SSL_CTX is created
 *   from the default library context (the recursion common/kg_libctx.h explains).
 *
 * A kg_http is not thread-safe; use one per thread. It owns its CURL easy handle, reused
 * across requests for keep-alive.
 */
#ifndef KG_HTTP_H
#define KG_HTTP_H

#include <stddef.h>

#include "kg_err.h"

struct curl_slist;

typedef struct kg_http_opts {
    const char *ca_file; /* the only trust (no CAPATH, no native store); NULL/"" = system store */
    int allow_http_loopback;
    const char *allow_http_host; /* plain http also allowed to exactly this host (Azure IMDS
                                    169.254.169.254, which only speaks http); NULL = none */
    long timeout_ms;
    long max_attempts; /* attempts in all (1 = no retry); keygate.conf's retry_max + 1 */
    long retry_wait_min_ms;
    long retry_wait_max_ms;
    const int *cancel; /* borrowed, may be NULL: once *cancel is non-zero (read atomically) a
                          request in flight is aborted and no retry starts (lease teardown) */
} kg_http_opts;

typedef struct kg_http kg_http;

typedef struct kg_http_response {
    long status;
    unsigned char *body; /* malloc'ed, NUL-terminated (not counted in body_len); caller frees */
    size_t body_len;
    char request_id[129];
    char trace_id[129];
    char content_type[128];
    char attestation_type[32]; /* Attestation-Type header (Intel KBS nonce step) */
    char set_cookie[256];      /* the first Set-Cookie header (Trustee session); never logged */
    char date[64];             /* Date header as sent (keygate doctor's clock check) */
    int attempts;
} kg_http_response;

/* For a process of its own (the keygate CLI), before anything uses libcurl: libcurl's allocations
 * are wiped when freed (its request buffers hold the x-api-key header). Not for a library in a
 * host process: the host may outlive us (dlclose) and libcurl would call freed code. Returns 1,
 * or 0 when libcurl was already initialised (then nothing changes). */
int kg_http_wipe_curl_frees(void);

/* The header list kg_http_request hands to libcurl: headers (NULL-terminated, may be NULL),
 * "Expect:" and, for a body without Content-Type, "Content-Type:". NULL when out of memory.
 * Free with kg_http_header_list_free, which wipes every string first (kg_http_header_list_wipe;
 * the API key is one of them). */
struct curl_slist *kg_http_header_list(const char *const *headers, int has_body);
void kg_http_header_list_wipe(struct curl_slist *hl);
void kg_http_header_list_free(struct curl_slist *hl);

/* libcurl's process-wide initialisation (once; kg_http_new does it too), undoing the ENGINE
 * registrations its OpenSSL init makes (kg_libctx_engine_unregister_all). */
void kg_http_global_init(void);

/* Returns a new client (caller frees with kg_http_free) or NULL with err. */
kg_http *kg_http_new(const kg_http_opts *opts, kg_err *err);
void kg_http_free(kg_http *h);

/*
 * One request with retries. headers: NULL-terminated array of "Name: value" (may be NULL).
 * body: NULL for GET. A completed exchange with any status returns 1 (check resp->status);
 * transport failure, over-size body or a bad URL returns 0 with err (step = `step`).
 * resp must be released with kg_http_response_clear.
 */
int kg_http_request(kg_http *h, kg_step step, const char *method, const char *url, const char *const *headers,
                    const void *body, size_t body_len, size_t max_body, kg_http_response *resp, kg_err *err);

void kg_http_response_clear(kg_http_response *resp);

/* Fills err with "<what> <url>: HTTP <status> (request-id …, trace-id …)" and the HTTP fields. */
int kg_http_status_error(kg_err *err, kg_step step, const char *what, const char *url,
                         const kg_http_response *resp);

/* 1 if the URL's host (as libcurl parses it) is an IP literal in 127.0.0.0/8 or [::1]; never a
 * name (localhost, 127.x.example), never IPv4-mapped [::ffff:127.0.0.1]. */
int kg_http_url_is_loopback(const char *url);

#endif
