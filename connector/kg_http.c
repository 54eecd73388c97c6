/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kg_libctx.h"
#include "kg_log.h"

struct kg_http {
    CURL *curl;
    kg_http_opts opts;
    char ca_file[512];
    char http_host[256];
};

typedef struct body_buf {
    unsigned char *data;
    size_t len;
    size_t max;
    int overflow;
} body_buf;

typedef struct hdr_state {
    kg_http_response *resp;
    long retry_after_s; /* -1: none */
} hdr_state;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_ok;
static int curl_wipe_frees; /* kg_http_wipe_curl_frees was called before libcurl's init */
static int curl_init_done;

/* libcurl's allocator when curl_wipe_frees is set: every block is wiped before it goes back to
 * malloc, so a request buffer that held the x-api-key header is gone once sent. Blocks are plain
 * malloc blocks either way, so memory libcurl got before or after init may be freed by either. */
static void wipe_free(void *p)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

static void *wipe_realloc(void *p, size_t n)
{
    size_t old;
    void *q;

    if (p == NULL)
        return malloc(n);
    old = malloc_usable_size(p);
    if ((q = malloc(n > 0 ? n : 1)) == NULL)
        return NULL; /* p stays valid, as realloc leaves it */
    memcpy(q, p, old < n ? old : n);
    wipe_free(p);
    return q;
}

static void curl_global_once(void)
{
    int engine_free = kg_libctx_engine_check(NULL, 0);

    /* once per process; never per call (pitfall 14 of the official C client) */
    if (curl_wipe_frees)
        curl_init_ok = curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, wipe_free, wipe_realloc, strdup,
                                            calloc) == CURLE_OK;
    else
        curl_init_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    curl_init_done = 1;
    /* libcurl's OpenSSL init registers every loaded ENGINE for all its algorithms, which OpenSSL
     * 3.0 then puts in front of keygate's private-libctx crypto: undo what it alone did */
    if (engine_free && !kg_libctx_engine_check(NULL, 0)) {
        KG_DEBUG("libcurl's OpenSSL init registered ENGINEs for keygate's algorithms: unregistered");
        kg_libctx_engine_unregister_all();
    }
}

static int has_header(const char *const *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *const *p = headers; p != NULL && *p != NULL; p++)
        if (strncasecmp(*p, name, n) == 0 && (*p)[n] == ':')
            return 1;
    return 0;
}

void kg_http_global_init(void)
{
    pthread_once(&curl_once, curl_global_once);
}

int kg_http_wipe_curl_frees(void)
{
    if (curl_init_done)
        return 0;
    curl_wipe_frees = 1;
    kg_http_global_init();
    return curl_init_ok;
}

struct curl_slist *kg_http_header_list(const char *const *headers, int has_body)
{
    struct curl_slist *hl = NULL, *tmp;

    for (const char *const *p = headers; p != NULL && *p != NULL; p++) {
        if ((tmp = curl_slist_append(hl, *p)) == NULL)
            goto err;
        hl = tmp;
    }
    /* we want exactly the headers we send: no "Expect: 100-continue", and no form Content-Type
     * that libcurl would add to a POST whose caller set none (the Intel KBS checks headers) */
    if ((tmp = curl_slist_append(hl, "Expect:")) == NULL)
        goto err;
    hl = tmp;
    if (has_body && !has_header(headers, "content-type")) {
        if ((tmp = curl_slist_append(hl, "Content-Type:")) == NULL)
            goto err;
        hl = tmp;
    }
    return hl;
err:
    kg_http_header_list_free(hl);
    return NULL;
}

void kg_http_header_list_wipe(struct curl_slist *hl)
{
    for (; hl != NULL; hl = hl->next)
        if (hl->data != NULL)
            OPENSSL_cleanse(hl->data, strlen(hl->data));
}

void kg_http_header_list_free(struct curl_slist *hl)
{
    kg_http_header_list_wipe(hl); /* curl_slist_append copied our headers (the API key) */
    curl_slist_free_all(hl);
}

kg_http *kg_http_new(const kg_http_opts *opts, kg_err *err)
{
    kg_http *h;

    pthread_once(&curl_once, curl_global_once);
    if (!curl_init_ok) {
        kg_err_set(err, KG_STEP_INTERNAL, "libcurl initialisation failed");
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->curl = curl_easy_init()) == NULL) {
        free(h);
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory (curl handle)");
        return NULL;
    }
    h->opts = *opts;
    if (opts->ca_file != NULL)
        snprintf(h->ca_file, sizeof(h->ca_file), "%s", opts->ca_file);
    h->opts.ca_file = h->ca_file;
    if (opts->allow_http_host != NULL)
        snprintf(h->http_host, sizeof(h->http_host), "%s", opts->allow_http_host);
    h->opts.allow_http_host = h->http_host;
    if (h->opts.max_attempts < 1)
        h->opts.max_attempts = 1;
    return h;
}

void kg_http_free(kg_http *h)
{
    if (h == NULL)
        return;
    curl_easy_cleanup(h->curl);
    free(h);
}

void kg_http_response_clear(kg_http_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    body_buf *b = userdata;
    size_t n = size * nmemb;
    unsigned char *p;

    if (b->len + n > b->max) {
        b->overflow = 1;
        return 0; /* aborts the transfer */
    }
    p = realloc(b->data, b->len + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static void copy_header_value(char *dst, size_t size, const char *v, size_t len)
{
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    if (len >= size)
        len = size - 1;
    for (size_t i = 0; i < len; i++) /* printable only: these end up in log lines */
        dst[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    dst[len] = '\0';
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    hdr_state *st = userdata;
    size_t n = size * nitems;
    const char *colon = memchr(buf, ':', n);
    size_t name_len, vlen;

    if (colon == NULL)
        return n;
    name_len = (size_t)(colon - buf);
    vlen = n - name_len - 1;
    if (name_len == 10 && strncasecmp(buf, "request-id", 10) == 0)
        copy_header_value(st->resp->request_id, sizeof(st->resp->request_id), colon + 1, vlen);
    else if (name_len == 8 && strncasecmp(buf, "trace-id", 8) == 0)
        copy_header_value(st->resp->trace_id, sizeof(st->resp->trace_id), colon + 1, vlen);
    else if (name_len == 12 && strncasecmp(buf, "content-type", 12) == 0)
        copy_header_value(st->resp->content_type, sizeof(st->resp->content_type), colon + 1, vlen);
    else if (name_len == 16 && strncasecmp(buf, "attestation-type", 16) == 0)
        copy_header_value(st->resp->attestation_type, sizeof(st->resp->attestation_type), colon + 1, vlen);
    else if (name_len == 10 && strncasecmp(buf, "set-cookie", 10) == 0 && st->resp->set_cookie[0] == '\0')
        copy_header_value(st->resp->set_cookie, sizeof(st->resp->set_cookie), colon + 1, vlen);
    else if (name_len == 4 && strncasecmp(buf, "date", 4) == 0)
        copy_header_value(st->resp->date, sizeof(st->resp->date), colon + 1, vlen);
    else if (name_len == 11 && strncasecmp(buf, "retry-after", 11) == 0) {
        char tmp[32];
        copy_header_value(tmp, sizeof(tmp), colon + 1, vlen);
        st->retry_after_s = strtol(tmp, NULL, 10); /* delta-seconds form only */
        if (st->retry_after_s < 0 || st->retry_after_s > 600)
            st->retry_after_s = -1;
    }
    return n;
}

int kg_http_url_is_loopback(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL;
    struct in_addr a4;
    struct in6_addr a6;
    size_t n;
    int loop = 0;

    if (u == NULL)
        return 0;
    /* the host as libcurl will connect to it (it rewrites numeric forms such as 0x7f.1 to
     * 127.0.0.1); only IP literals count: a name, even localhost, is whatever a resolver says */
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto end;
    n = strlen(host);
    if (inet_pton(AF_INET, host, &a4) == 1) {
        loop = (ntohl(a4.s_addr) >> 24) == 127;
    } else if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
        host[n - 1] = '\0';
        /* ::1 only: not IPv4-mapped ::ffff:127.x, which the issue leaves out and nobody needs */
        loop = inet_pton(AF_INET6, host + 1, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    }
end:
    curl_free(host);
    curl_url_cleanup(u);
    return loop;
}

static int check_url(const kg_http *h, kg_step step, const char *url, kg_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = 0;

    if (u == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        kg_err_set(err, step, "malformed URL '%s'", url);
        goto err;
    }
    if (strcmp(scheme, "https") == 0)
        ok = 1;
    else if (strcmp(scheme, "http") == 0 && h->opts.allow_http_loopback && kg_http_url_is_loopback(url))
        ok = 1;
    else if (strcmp(scheme, "http") == 0 && h->http_host[0] != '\0' &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && strcmp(host, h->http_host) == 0)
        ok = 1;
    else
        kg_err_set(err, step,
                   "refusing %s: only https:// (plain http only to a loopback IP literal, 127.0.0.0/8 "
                   "or [::1], with allow_http_loopback = yes)",
                   url);
err:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static int retryable_status(long s)
{
    return s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

static int cancelled(const kg_http *h)
{
    return h->opts.cancel != NULL && __atomic_load_n(h->opts.cancel, __ATOMIC_ACQUIRE) != 0;
}

/* libcurl calls this often (also while connecting): non-zero aborts the transfer. */
static int progress_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return cancelled(userdata);
}

static void backoff_sleep(const kg_http *h, int attempt, long retry_after_s)
{
    long lo = h->opts.retry_wait_min_ms, hi = h->opts.retry_wait_max_ms, cap, ms;
    unsigned int r = 0;
    struct timespec ts;

    if (retry_after_s >= 0) {
        ms = retry_after_s * 1000;
        if (ms > hi)
            ms = hi; /* never wait longer than configured */
    } else {
        /* exponential with full jitter: uniform in [lo, min(hi, lo * 2^attempt)] */
        cap = lo << (attempt < 16 ? attempt : 16);
        if (cap > hi || cap <= 0)
            cap = hi;
        RAND_bytes_ex(kg_libctx(), (unsigned char *)&r, sizeof(r), 0);
        ms = cap > lo ? lo + (long)(r % (unsigned long)(cap - lo + 1)) : lo;
    }
    /* in slices, so that a cancellation (lease teardown) never waits out a long backoff */
    for (long left = ms; left > 0 && !cancelled(h); left -= 50) {
        long slice = left < 50 ? left : 50;
        ts.tv_sec = 0;
        ts.tv_nsec = slice * 1000000L;
        nanosleep(&ts, NULL);
    }
}

int kg_http_request(kg_http *h, kg_step step, const char *method, const char *url, const char *const *headers,
                    const void *body, size_t body_len, size_t max_body, kg_http_response *resp, kg_err *err)
{
    struct curl_slist *hl = NULL;
    CURL *c = h->curl;
    char curl_msg[CURL_ERROR_SIZE];
    int attempt, ok = 0;

    memset(resp, 0, sizeof(*resp));
    if (kg_libctx() == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "cannot create the private OpenSSL library context");
    if (!check_url(h, step, url, err))
        return 0;
    if ((hl = kg_http_header_list(headers, body != NULL)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }

    for (attempt = 1;; attempt++) {
        body_buf bb = {NULL, 0, max_body, 0};
        hdr_state hs = {resp, -1};
        CURLcode rc;

        if (cancelled(h)) {
            kg_err_set(err, step, "%s %s: cancelled (keygate is shutting down)", method, url);
            goto err;
        }

        kg_http_response_clear(resp);
        curl_easy_reset(c);
        curl_msg[0] = '\0';
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        if (h->ca_file[0] != '\0') {
            /* the file is the only trust: Debian's libcurl also has a built-in CAPATH
             * (/etc/ssl/certs) that would keep every system CA trusted */
            curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
            curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
            curl_easy_setopt(c, CURLOPT_SSL_OPTIONS, 0L); /* no CURLSSLOPT_NATIVE_CA */
        }
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->opts.timeout_ms);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->opts.timeout_ms);
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_msg);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &hs);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "keygate");
        if (h->opts.cancel != NULL) {
            curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
            curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
            curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
        }
        if (body != NULL) {
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        }
        if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);

        {
            /* libcurl's OpenSSL creates its SSL_CTX in the thread's default library context:
             * make that our private one, so TLS never fetches from a provider the application
             * loaded (keygate itself: recursion) */
            OSSL_LIB_CTX *prev = OSSL_LIB_CTX_set0_default(kg_libctx());
            rc = curl_easy_perform(c);
            OSSL_LIB_CTX_set0_default(prev);
        }
        resp->attempts = attempt;
        if (rc == CURLE_OK) {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
            resp->body = bb.data != NULL ? bb.data : calloc(1, 1);
            resp->body_len = bb.len;
            if (resp->body == NULL) {
                kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
                goto err;
            }
            if (!retryable_status(resp->status) || attempt >= h->opts.max_attempts) {
                ok = 1;
                goto err;
            }
            KG_INFO("%s %s: HTTP %ld, retrying (attempt %d of %ld)", method, url, resp->status, attempt,
                    h->opts.max_attempts);
        } else {
            free(bb.data);
            if (rc == CURLE_ABORTED_BY_CALLBACK && cancelled(h)) {
                kg_err_set(err, step, "%s %s: cancelled (keygate is shutting down)", method, url);
                goto err;
            }
            if (bb.overflow || rc == CURLE_FILESIZE_EXCEEDED) {
                kg_err_set(err, step, "%s %s: response larger than %zu bytes", method, url, max_body);
                goto err;
            }
            if (attempt >= h->opts.max_attempts) {
                kg_err_set(err, step, "%s %s: %s%s%s (after %d attempt%s)", method, url,
                           curl_easy_strerror(rc), curl_msg[0] ? ": " : "", curl_msg, attempt,
                           attempt == 1 ? "" : "s");
                goto err;
            }
            KG_INFO("%s %s: %s, retrying (attempt %d of %ld)", method, url, curl_easy_strerror(rc), attempt,
                    h->opts.max_attempts);
        }
        backoff_sleep(h, attempt, hs.retry_after_s);
    }
err:
    kg_http_header_list_free(hl);
    if (!ok) {
        if (err != NULL && resp->status != 0)
            err->http_status = resp->status;
        kg_http_response_clear(resp);
    }
    return ok;
}

int kg_http_status_error(kg_err *err, kg_step step, const char *what, const char *url,
                         const kg_http_response *resp)
{
    kg_err_set(err, step, "%s %s: HTTP %ld%s%s%s%s%s", what, url, resp->status,
               resp->request_id[0] ? ", request-id " : "", resp->request_id,
               resp->trace_id[0] ? ", trace-id " : "", resp->trace_id, "");
    if (err != NULL) {
        err->http_status = resp->status;
        snprintf(err->request_id, sizeof(err->request_id), "%s", resp->request_id);
        snprintf(err->trace_id, sizeof(err->trace_id), "%s", resp->trace_id);
    }
    return 0;
}
