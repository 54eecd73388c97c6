/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared helpers of the libFuzzer harnesses (tests/fuzz/README.md). Each harness is one file
 * fuzz_<name>.c with LLVMFuzzerTestOneInput; it feeds the bytes to the parser's own entry
 * points (never a copy of the parser) and frees everything, so that ASan/LSan see every
 * out-of-bounds access and every leak.
 *
 * KG_FUZZ_DATA (set by CMake) is tests/fuzz/data: fixed inputs a harness needs besides the
 * fuzzed bytes (the local stack's token root, JWKS and CRLs; the Intel SGX root).
 */
#ifndef KG_FUZZ_COMMON_H
#define KG_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated malloc'ed copy of data (parsers that take C strings). Aborts on OOM. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* An exact-size malloc'ed copy: a read one byte past the input is then an ASan report. */
static inline uint8_t *fuzz_dup(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    if (p == NULL)
        abort();
    if (size)
        memcpy(p, data, size);
    return p;
}

/* Path of a file under KG_FUZZ_DATA, valid for the whole process (at most 16 per harness). */
static inline const char *fuzz_data_path(const char *name)
{
    static char paths[16][1024];
    static int used;
    char *p;

    if (used == 16)
        abort();
    p = paths[used++];
    snprintf(p, sizeof(paths[0]), "%s/%s", KG_FUZZ_DATA, name);
    return p;
}

/* With KG_FUZZ_VERBOSE=1 in the environment, prints what a parser said (to see how far the
 * seeds get: run one harness with -runs=0 over its corpus). */
static inline void fuzz_note(const char *what, int ok, const char *msg)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("KG_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "%s: %s\n", what, ok ? "ok" : msg);
}

/* keygate's entry points report through kg_err and must leave the caller's OpenSSL error queue
 * as they found it: a stale entry makes a host's next SSL_get_error() say SSL_ERROR_SSL (nginx,
 * haproxy) and, in a fuzzer, keeps LeakSanitizer scanning after every input. Called at the end
 * of each input; a leftover entry is a finding. */
static inline void fuzz_err_queue_empty(void)
{
    const char *file = NULL, *func = NULL;
    int line = 0;
    unsigned long e = ERR_peek_error_all(&file, &line, &func, NULL, NULL);
    char buf[256];

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, "an OpenSSL error was left on the queue: %s (raised at %s:%d in %s)\n", buf,
                file ? file : "?", line, func ? func : "?");
        abort();
    }
}

/* A fatal harness set-up failure (not a finding): say so and stop. */
#define FUZZ_REQUIRE(cond)                                                                                   \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz harness set-up failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

#endif
