/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_keygen.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kg_time.h"
#include "kg_wrap.h"

struct kg_keygen {
    const char *kind;  /* NULL or a string literal/config value that outlives g */
    const int *cancel; /* borrowed */
    int abandoned;     /* atomic: kg_keygen_abandon asks the thread to stop */
    pthread_t thread;
    int threaded; /* the thread runs and must be joined */
    int done;     /* key/err are final (no thread, or it was joined) */
    EVP_PKEY *key;
    kg_err err;
    double start, end; /* kg_mono_ms(): launched (the thread's wait to be scheduled counts), done */
};

static int stop_asked(void *arg)
{
    const kg_keygen *g = arg;
    return __atomic_load_n(&g->abandoned, __ATOMIC_ACQUIRE) != 0 ||
           (g->cancel != NULL && __atomic_load_n(g->cancel, __ATOMIC_ACQUIRE) != 0);
}

static void generate(kg_keygen *g)
{
    kg_wrap_stop stop = {stop_asked, g};

    kg_err_clear(&g->err);
    g->key = kg_wrap_key_generate(g->kind, &stop, &g->err);
    g->end = kg_mono_ms();
}

static void *keygen_main(void *arg)
{
    generate(arg);
    return NULL;
}

static kg_keygen *keygen_alloc(kg_err *err)
{
    kg_keygen *g = calloc(1, sizeof(*g));

    if (g == NULL)
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    return g;
}

kg_keygen *kg_keygen_start(const char *kind, const int *cancel, kg_err *err)
{
    kg_keygen *g;

    if (!kg_wrap_engine_check(err) || (g = keygen_alloc(err)) == NULL)
        return NULL;
    g->kind = kind;
    g->cancel = cancel;
    /* the interval starts now, also for the time the thread waits to be scheduled */
    g->start = kg_mono_ms();
    g->threaded = pthread_create(&g->thread, NULL, keygen_main, g) == 0;
    return g;
}

kg_keygen *kg_keygen_ready(EVP_PKEY *key, kg_err *err)
{
    kg_keygen *g = keygen_alloc(err);

    if (g == NULL) {
        EVP_PKEY_free(key);
        return NULL;
    }
    g->key = key;
    g->done = 1;
    g->start = g->end = -1; /* set at the join */
    return g;
}

/* Makes key/err final: joins the thread, or generates here when there was none. */
static void finish(kg_keygen *g)
{
    if (g->done)
        return;
    if (g->threaded) {
        pthread_join(g->thread, NULL);
    } else {
        g->start = kg_mono_ms();
        generate(g);
    }
    g->threaded = 0;
    g->done = 1;
}

int kg_keygen_join(kg_keygen *g, EVP_PKEY **key, double *start, double *end, kg_err *err)
{
    int ok;

    *key = NULL;
    finish(g);
    if (g->start < 0)
        g->start = g->end = kg_mono_ms();
    if (start != NULL)
        *start = g->start;
    if (end != NULL)
        *end = g->end;
    ok = g->key != NULL;
    if (ok)
        *key = g->key;
    else
        *err = g->err;
    free(g);
    return ok;
}

void kg_keygen_abandon(kg_keygen *g)
{
    if (g == NULL)
        return;
    __atomic_store_n(&g->abandoned, 1, __ATOMIC_RELEASE);
    if (g->threaded)
        pthread_join(g->thread, NULL);
    EVP_PKEY_free(g->key); /* private half in the secure heap: zeroized */
    free(g);
}
