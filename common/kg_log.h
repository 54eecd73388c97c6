/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_log: the runtime debug log.
 *
 * Off unless KEYGATE_DEBUG is set: "KEYGATE_DEBUG=<file|stderr|syslog>:<level>" with level 0..4
 * (0 error, 1 warn, 2 info, 3 debug, 4 trace); "KEYGATE_DEBUG=<level>" logs to stderr. Read with
 * secure_getenv (ignored in setuid/setgid hosts). The file is opened 0600 with O_NOFOLLOW and
 * must be a regular file; else one warning on stderr and the default below.
 * When KEYGATE_DEBUG is unset, stderr gets the lines up to keygate.conf's log_level (1 warn by
 * default; the front ends call kg_log_set_default_level after loading the configuration), never
 * less than warnings, so that e.g. the simulated-TD warning is never silent. Lines carry
 * file:line. Never pass secrets.
 */
#ifndef KG_LOG_H
#define KG_LOG_H

enum { KG_LOG_ERROR = 0, KG_LOG_WARN = 1, KG_LOG_INFO = 2, KG_LOG_DEBUG = 3, KG_LOG_TRACE = 4 };

void kg_log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int kg_log_enabled(int level);

/* The level logged to stderr when KEYGATE_DEBUG is unset (or refused): keygate.conf's log_level,
 * at least KG_LOG_WARN. Process-wide; the last call wins. */
void kg_log_set_default_level(int level);

#define KG_LOG(level, ...)                                                                                   \
    do {                                                                                                     \
        if (kg_log_enabled(level))                                                                           \
            kg_log_write(level, __FILE__, __LINE__, __VA_ARGS__);                                            \
    } while (0)
#define KG_WARN(...) KG_LOG(KG_LOG_WARN, __VA_ARGS__)
#define KG_INFO(...) KG_LOG(KG_LOG_INFO, __VA_ARGS__)
#define KG_DEBUG(...) KG_LOG(KG_LOG_DEBUG, __VA_ARGS__)

#endif
