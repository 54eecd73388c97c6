/* SPDX-License-Identifier: Apache-2.0 */
/* kg_http: what counts as loopback for allow_http_loopback. */
#include "kg_test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kg_http.h"

#define SECRET_HEADER "x-api-key: 0123456789abcdefghijklmnopqrstuvwxyz"

/* Host names that merely start with "127." or name loopback through a resolver: never loopback. */
static void loopback_refuses_names(void **state)
{
    static const char *const names[] = {
        "http://127.attacker.example/",
        "http://127.0.0.1.nip.io/",
        "http://127.0.0.1.attacker.example/",
        "http://localhost/",
        "http://LOCALHOST:8080/x",
        "http://127.0.0.1@attacker.example/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::2]/",
        "http://128.0.0.1/",
        "http://10.0.0.1/",
        "http://0.0.0.0/",
        "not a url",
        "",
    };
    int wrong = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (kg_http_url_is_loopback(names[i])) {
            print_error("%s counted as loopback\n", names[i]);
            wrong++;
        }
    assert_int_equal(wrong, 0);
}

/* IP literals in 127.0.0.0/8 and ::1 are loopback. */
static void loopback_accepts_literals(void **state)
{
    static const char *const literals[] = {
        "http://127.0.0.1/",
        "http://127.0.0.1:8081/crl/x.der",
        "http://127.5.6.7/",
        "http://127.255.255.254:1/",
        "http://[::1]/",
        "http://[::1]:9443/kbs",
        "http://[0:0:0:0:0:0:0:1]/",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(literals) / sizeof(literals[0]); i++)
        if (!kg_http_url_is_loopback(literals[i]))
            fail_msg("%s not counted as loopback", literals[i]);
}

/* Numeric forms inet_pton refuses ("0x7f.0.0.1", "127.1", "2130706433"): the check applies to the
 * host libcurl connects to. libcurl's URL parser (7.77+) rewrites them to 127.0.0.1, and then they
 * are loopback; a libcurl that keeps them as written must see them refused. */
static void loopback_numeric_forms_follow_libcurl(void **state)
{
    static const char *const forms[] = {"http://0x7f.0.0.1/", "http://127.1/", "http://2130706433/",
                                        "http://0177.0.0.1/"};
    (void)state;
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        CURLU *u = curl_url();
        char *host = NULL;
        int normalised;
        assert_non_null(u);
        assert_int_equal(curl_url_set(u, CURLUPART_URL, forms[i], 0), CURLUE_OK);
        assert_int_equal(curl_url_get(u, CURLUPART_HOST, &host, 0), CURLUE_OK);
        normalised = strcmp(host, "127.0.0.1") == 0;
        curl_free(host);
        curl_url_cleanup(u);
        assert_int_equal(kg_http_url_is_loopback(forms[i]), normalised);
    }
}

/* A listening socket on 127.0.0.1 (non-blocking) and its port. */
static int listen_local(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    assert_true(s >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s, 4), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return s;
}

/* The request path: with allow_http_loopback, http://localhost:<port> (libcurl would resolve it to
 * 127.0.0.1 itself, so no resolver is asked) is refused before any connection. */
static void request_to_loopback_name_is_refused(void **state)
{
    kg_http_opts o = {.allow_http_loopback = 1, .timeout_ms = 1000, .max_attempts = 1};
    kg_http_response resp;
    kg_http *h;
    kg_err err;
    char url[64];
    int port, s = listen_local(&port), c;

    (void)state;
    snprintf(url, sizeof(url), "http://localhost:%d/", port);
    kg_err_clear(&err);
    h = kg_http_new(&o, &err);
    assert_non_null(h);
    assert_int_equal(kg_http_request(h, KG_STEP_NONCE, "GET", url, NULL, NULL, 0, 1024, &resp, &err), 0);
    kg_http_free(h);
    if (strstr(err.msg, "refusing") == NULL)
        fail_msg("expected a refusal, got: %s", err.msg);
    c = accept(s, NULL, NULL);
    assert_int_equal(c, -1); /* nothing connected */
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(s);
}

/* The CLI's switch: libcurl wipes what it frees, set only before libcurl's initialisation. The
 * tests after this one run with it (the request test exercises the allocator under ASan). */
static void curl_wipe_frees_only_before_init(void **state)
{
    (void)state;
    assert_int_equal(kg_http_wipe_curl_frees(), 1);
    assert_int_equal(kg_http_wipe_curl_frees(), 0); /* already initialised: no change */
}

/* The header list kg_http_request gives libcurl holds copies of our headers (the API key):
 * kg_http_header_list_wipe, which kg_http_header_list_free runs, zeroes every string. */
static void header_list_is_wiped(void **state)
{
    const char *const headers[] = {SECRET_HEADER, "Accept: application/json", NULL};
    static const char *const expect[] = {SECRET_HEADER, "Accept: application/json",
                                         "Expect:", "Content-Type:"};
    size_t lens[4], n = 0;
    struct curl_slist *hl = kg_http_header_list(headers, 1), *p;

    (void)state;
    assert_non_null(hl);
    for (p = hl; p != NULL; p = p->next, n++) {
        assert_true(n < 4);
        assert_string_equal(p->data, expect[n]);
        lens[n] = strlen(p->data);
    }
    assert_int_equal(n, 4);
    kg_http_header_list_wipe(hl);
    for (p = hl, n = 0; p != NULL; p = p->next, n++)
        for (size_t i = 0; i < lens[n]; i++)
            if (p->data[i] != 0)
                fail_msg("header %zu byte %zu not wiped", n, i);
    kg_http_header_list_free(hl);

    /* a caller's Content-Type is kept, none is added; no body: none either */
    {
        const char *const ct[] = {"Content-Type: application/json", NULL};
        hl = kg_http_header_list(ct, 1);
        assert_non_null(hl);
        assert_string_equal(hl->data, "Content-Type: application/json");
        assert_string_equal(hl->next->data, "Expect:");
        assert_null(hl->next->next);
        kg_http_header_list_free(hl);
        hl = kg_http_header_list(NULL, 0);
        assert_non_null(hl);
        assert_string_equal(hl->data, "Expect:");
        assert_null(hl->next);
        kg_http_header_list_free(hl);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(curl_wipe_frees_only_before_init),
        cmocka_unit_test(header_list_is_wiped),
        cmocka_unit_test(loopback_refuses_names),
        cmocka_unit_test(loopback_accepts_literals),
        cmocka_unit_test(loopback_numeric_forms_follow_libcurl),
        cmocka_unit_test(request_to_loopback_name_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
