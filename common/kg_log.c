#include "kg_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static FILE *log_fp;       /* NULL: stderr */
static int log_level = -1; /* -1: only warnings, to stderr */
static int log_syslog;     /* KEYGATE_DEBUG=syslog:<level> */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* A thread (e.g. a key lease refresh) may hold the lock at fork: the child starts unlocked. */
static void log_atfork_child(void)
{
    pthread_mutex_init(&log_lock, NULL);
}

static void log_init(void)
{
    const char *env = getenv("KEYGATE_DEBUG");
    const char *colon;
    char path[512];

    pthread_atfork(NULL, NULL, log_atfork_child);
    if (env == NULL || *env == '\0')
        return;
    colon = strrchr(env, ':');
    if (colon == NULL) {
        log_level = atoi(env);
        return;
    }
    log_level = atoi(colon + 1);
    if ((size_t)(colon - env) >= sizeof(path))
        return;
    memcpy(path, env, (size_t)(colon - env));
    path[colon - env] = '\0';
    if (strcmp(path, "syslog") == 0) {
        openlog("keygate", LOG_PID, LOG_DAEMON);
        log_syslog = 1;
    } else if (strcmp(path, "stderr") != 0 && path[0] != '\0')
        log_fp = fopen(path, "ae");
}

int kg_log_enabled(int level)
{
    pthread_once(&log_once, log_init);
    if (log_level < 0)
        return level <= KG_LOG_WARN;
    return level <= log_level;
}

void kg_log_write(int level, const char *file, int line, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug", "trace"};
    FILE *fp;
    va_list ap;
    const char *base = strrchr(file, '/');

    pthread_once(&log_once, log_init);
    fp = log_fp != NULL ? log_fp : stderr;
    if (level < 0 || level > KG_LOG_TRACE)
        level = KG_LOG_TRACE;
    if (log_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG};
        char msg[1024];

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        syslog(prio[level], "%s %s:%d: %s", names[level], base ? base + 1 : file, line, msg);
        return;
    }
    pthread_mutex_lock(&log_lock);
    fprintf(fp, "keygate[%ld] %s %s:%d: ", (long)getpid(), names[level], base ? base + 1 : file, line);
    va_start(ap, fmt);
    vfprintf(fp, fmt, ap);
    va_end(ap);
    fputc('\n', fp);
    fflush(fp);
    pthread_mutex_unlock(&log_lock);
}
