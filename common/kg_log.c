/* SPDX-License-Identifier: Apache-2.0 */
#define _GNU_SOURCE /* secure_getenv */
#include "kg_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static FILE *log_fp;                  /* NULL: stderr */
static int log_level = -1;            /* -1: KEYGATE_DEBUG unset: log_default, to stderr */
static int log_default = KG_LOG_WARN; /* keygate.conf's log_level (atomic) */
static int log_syslog;                /* KEYGATE_DEBUG=syslog:<level> */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* A thread (e.g. a key lease refresh) may hold the lock at fork: the child starts unlocked. */
static void log_atfork_child(void)
{
    pthread_mutex_init(&log_lock, NULL);
}

/*
 * The log file of KEYGATE_DEBUG. Any process that loads keygate (p11-kit puts the module in every
 * GnuTLS program) would otherwise create or append to whatever the environment names: 0600 and
 * close-on-exec, never through a symlink, and only a regular file (O_NONBLOCK: a FIFO without a
 * reader must not block the host). NULL, after one line on stderr, when refused.
 */
static FILE *log_open(const char *path)
{
    struct stat st;
    FILE *fp = NULL;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
    const char *why = NULL;

    if (fd < 0)
        why = errno == ELOOP ? "is a symbolic link" : strerror(errno);
    else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        why = "is not a regular file";
    else if (fcntl(fd, F_SETFL, O_APPEND) != 0 || (fp = fdopen(fd, "a")) == NULL)
        why = strerror(errno);
    if (fp != NULL)
        return fp;
    if (fd >= 0)
        close(fd);
    fprintf(stderr, "keygate[%ld] warn: KEYGATE_DEBUG file %s %s: not logging\n", (long)getpid(), path, why);
    return NULL;
}

static void log_init(void)
{
    /* ignored in a setuid/setgid/file-capability process (AT_SECURE): the caller's environment
     * must not choose files a privileged host writes */
    const char *env = secure_getenv("KEYGATE_DEBUG");
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
    } else if (strcmp(path, "stderr") != 0 && path[0] != '\0' && (log_fp = log_open(path)) == NULL)
        log_level = -1; /* refused: the default (warnings to stderr), not the debug log on stderr */
}

int kg_log_enabled(int level)
{
    pthread_once(&log_once, log_init);
    if (log_level < 0)
        return level <= __atomic_load_n(&log_default, __ATOMIC_RELAXED);
    return level <= log_level;
}

void kg_log_set_default_level(int level)
{
    if (level < KG_LOG_WARN)
        level = KG_LOG_WARN;
    if (level > KG_LOG_TRACE)
        level = KG_LOG_TRACE;
    __atomic_store_n(&log_default, level, __ATOMIC_RELAXED);
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
