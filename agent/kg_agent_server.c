/* SPDX-License-Identifier: Apache-2.0 */
#define _GNU_SOURCE /* struct ucred, accept4, pipe2 */
/* kg_agent_server: `keygate agent` (see kg_agent_server.h): keys, socket, acceptor, shutdown.
 * The per-connection loop is kg_agent_conn.c. */
#include "kg_agent_server.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libgen.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kg_agent_internal.h"
#include "kg_log.h"

#define SD_LISTEN_FDS_START 3 /* sd_listen_fds(3): the first passed fd */

/* Adds the keys of one agent_keys entry (its glob expanded). Returns 1/0. */
static int add_entry(kg_agent_server *srv, const kg_agent_acl *acl, kg_err *err)
{
    glob_t g;
    int rc, ok = 0;

    memset(&g, 0, sizeof(g));
    if ((rc = glob(acl->pattern, 0, NULL, &g)) == GLOB_NOMATCH) {
        KG_WARN("agent: agent_keys: %s: no such file (or nothing matches)", acl->pattern);
        return 1;
    }
    if (rc != 0)
        return kg_err_set(err, KG_STEP_CONFIG, "agent_keys: %s: cannot be expanded (glob error %d)",
                          acl->pattern, rc);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        kg_agent_served *k, *grown;

        if ((grown = realloc(srv->keys, (srv->n_keys + 1) * sizeof(*grown))) == NULL) {
            kg_err_set(err, KG_STEP_INTERNAL, "agent: out of memory");
            goto err;
        }
        srv->keys = grown;
        k = &srv->keys[srv->n_keys];
        memset(k, 0, sizeof(*k));
        if (!kg_keyref_load(g.gl_pathv[i], &k->ref, err))
            goto err;
        srv->n_keys++;
        k->acl = acl;
        if ((k->slot = kg_keysource_slot(srv->ks, &k->ref, err)) == NULL)
            goto err;
        KG_INFO("agent: serving key %s (%s)", k->ref.key_id, g.gl_pathv[i]);
    }
    ok = 1;
err:
    globfree(&g);
    return ok;
}

static int resolve_group(const char *name, gid_t *gid, kg_err *err)
{
    struct group gr, *res = NULL;
    char buf[4096], *end;
    unsigned long v;

    if (name[0] >= '0' && name[0] <= '9') {
        errno = 0;
        v = strtoul(name, &end, 10);
        if (errno != 0 || *end != '\0' || v >= 0xFFFFFFFFUL)
            return kg_err_set(err, KG_STEP_CONFIG, "agent_socket_group: '%s' is not a group", name);
        *gid = (gid_t)v;
        return 1;
    }
    if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "agent_socket_group: no such group '%s'", name);
    *gid = gr.gr_gid;
    return 1;
}

/* The socket's directory must be writable by root (or us) only: whoever may write it could
 * replace the socket by their own and collect the clients' requests. */
static int check_dir(const char *path, kg_err *err)
{
    char copy[sizeof(((struct sockaddr_un *)0)->sun_path)], *dir;
    struct stat st;

    snprintf(copy, sizeof(copy), "%s", path);
    dir = dirname(copy);
    if (stat(dir, &st) != 0)
        return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: %s is not a directory", dir);
    if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & S_IWOTH) ||
        ((st.st_mode & S_IWGRP) && st.st_gid != 0))
        return kg_err_set(
            err, KG_STEP_CONFIG,
            "agent_socket: directory %s (owner uid %u, mode %04o) is writable by others than root "
            "or the agent: another user could replace the socket; use a root-owned directory "
            "such as /run/keygate, mode 0755",
            dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
    return 1;
}

/* systemd socket activation (sd_listen_fds(3)), without libsystemd: LISTEN_PID = our pid and
 * LISTEN_FDS = 1 hand us a listening unix stream socket as fd 3. Returns 1 when taken, 0 when
 * not activated, -1 with err when the passed fd is not what we serve on. */
static int take_activated(kg_agent_server *srv, kg_err *err)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    int type = 0, listening = 0;
    socklen_t ol = sizeof(int);

    if (pid == NULL || fds == NULL || strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (strcmp(fds, "1") != 0) {
        kg_err_set(err, KG_STEP_CONFIG, "agent: socket activation: LISTEN_FDS=%s, expected one socket", fds);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    if (getsockopt(SD_LISTEN_FDS_START, SOL_SOCKET, SO_TYPE, &type, &ol) != 0 || type != SOCK_STREAM ||
        getsockopt(SD_LISTEN_FDS_START, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ol) != 0 || !listening ||
        getsockname(SD_LISTEN_FDS_START, (struct sockaddr *)&sa, &len) != 0 || sa.sun_family != AF_UNIX) {
        kg_err_set(err, KG_STEP_CONFIG,
                   "agent: socket activation: fd 3 is not a listening unix stream socket");
        return -1;
    }
    (void)fcntl(SD_LISTEN_FDS_START, F_SETFD, FD_CLOEXEC);
    srv->lfd = SD_LISTEN_FDS_START;
    KG_INFO("agent: listening on the socket systemd passed (%.*s)", (int)sizeof(sa.sun_path), sa.sun_path);
    return 1;
}

/* Creates agent_socket: mode 0660, group agent_socket_group. A stale socket (nobody listening)
 * is replaced; a live one means another agent runs. */
static int open_socket(kg_agent_server *srv, kg_err *err)
{
    const char *path = srv->cfg.agent_socket;
    struct sockaddr_un sa;
    struct stat st;
    gid_t gid = (gid_t)-1;
    mode_t old;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (path[0] != '/' || strlen(path) >= sizeof(sa.sun_path))
        return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: '%s' must be an absolute path under %zu bytes",
                          path, sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path));
    if (!check_dir(path, err) ||
        (srv->cfg.agent_socket_group[0] && !resolve_group(srv->cfg.agent_socket_group, &gid, err)))
        return 0;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: %s exists and is not a socket", path);
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 &&
            connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(fd);
            return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: %s: another agent listens on it", path);
        }
        if (fd >= 0)
            close(fd);
        if (unlink(path) != 0)
            return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: %s: cannot remove the stale socket: %s",
                              path, strerror(errno));
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return kg_err_set(err, KG_STEP_INTERNAL, "agent_socket: socket: %s", strerror(errno));
    old = umask(0117); /* created 0660 at once: no moment where others may connect */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        umask(old);
        kg_err_set(err, KG_STEP_CONFIG, "agent_socket: %s: %s", path, strerror(errno));
        close(fd);
        return 0;
    }
    umask(old);
    srv->lfd = fd;
    srv->created = 1;
    if ((gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) != 0) || chmod(path, 0660) != 0)
        return kg_err_set(err, KG_STEP_CONFIG, "agent_socket: %s: cannot set group/mode: %s", path,
                          strerror(errno));
    if (listen(fd, SOMAXCONN) != 0)
        return kg_err_set(err, KG_STEP_INTERNAL, "agent_socket: listen: %s", strerror(errno));
    KG_INFO("agent: listening on %s", path);
    return 1;
}

kg_agent_server *kg_agent_server_new(const kg_config *cfg, kg_err *err)
{
    kg_agent_server *srv = calloc(1, sizeof(*srv));
    int act;

    if (srv == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "agent: out of memory");
        return NULL;
    }
    srv->lfd = srv->wake[0] = srv->wake[1] = -1;
    srv->cfg = *cfg;
    srv->cfg.preload[0] = '\0'; /* the agent releases its own keys, all at once, at start */
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cv, NULL);
    if (!kg_agent_acl_parse(cfg->agent_keys, &srv->acls, &srv->n_acls, err))
        goto err;
    if ((srv->ks = kg_keysource_new(&srv->cfg, err)) == NULL)
        goto err;
    for (size_t i = 0; i < srv->n_acls; i++)
        if (!add_entry(srv, &srv->acls[i], err))
            goto err;
    if (srv->n_keys == 0) {
        kg_err_set(err, KG_STEP_CONFIG, "agent_keys: no key reference found: the agent would serve nothing");
        goto err;
    }
    if ((srv->clients = calloc((size_t)cfg->agent_max_clients, sizeof(*srv->clients))) == NULL ||
        pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        kg_err_set(err, KG_STEP_INTERNAL, "agent: out of memory or file descriptors");
        goto err;
    }
    if ((act = take_activated(srv, err)) < 0 || (act == 0 && !open_socket(srv, err)))
        goto err;
    return srv;
err:
    kg_agent_server_free(srv);
    return NULL;
}

/* Accepts connections until stopped; over agent_max_clients, one ERROR/BUSY reply and close. */
static void *acceptor(void *arg)
{
    kg_agent_server *srv = arg;

    for (;;) {
        struct pollfd p[2] = {{srv->lfd, POLLIN, 0}, {srv->wake[0], POLLIN, 0}};
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        int fd;

        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (__atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE))
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        if ((fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
                KG_WARN("agent: accept: %s", strerror(errno));
                usleep(100 * 1000);
            }
            continue;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
            KG_WARN("agent: a client without peer credentials: %s; closed", strerror(errno));
            close(fd);
            continue;
        }
        kg_agent_conn_start(srv, fd, &cred);
    }
    return NULL;
}

int kg_agent_server_start(kg_agent_server *srv, kg_err *err)
{
    kg_keyslot **slots = calloc(srv->n_keys, sizeof(*slots));
    kg_err *errs = calloc(srv->n_keys, sizeof(*errs));
    size_t n = 0, failed;
    int ok = 0;

    if (slots == NULL || errs == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "agent: out of memory");
        goto err;
    }
    for (size_t i = 0; i < srv->n_keys; i++) {
        size_t j = 0;

        while (j < n && slots[j] != srv->keys[i].slot)
            j++;
        if (j == n)
            slots[n++] = srv->keys[i].slot;
    }
    KG_INFO("agent: releasing %zu key(s) with one attestation", n);
    failed = kg_keysource_release_all(srv->ks, slots, n, 1, errs);
    for (size_t i = 0; i < n; i++)
        if (errs[i].step != KG_STEP_NONE || errs[i].msg[0] != '\0')
            KG_WARN("agent: key %s not released (retried at its first use): %s", kg_keyslot_key_id(slots[i]),
                    errs[i].msg);
    KG_WARN("agent: %zu of %zu key(s) released; serving on %s", n - failed, n,
            srv->created ? srv->cfg.agent_socket : "the socket systemd passed");
    if (pthread_create(&srv->acceptor, NULL, acceptor, srv) != 0) {
        kg_err_set(err, KG_STEP_INTERNAL, "agent: cannot start the acceptor thread");
        goto err;
    }
    srv->started = 1;
    ok = 1;
err:
    free(slots);
    free(errs);
    return ok;
}

void kg_agent_server_stop(kg_agent_server *srv)
{
    __atomic_store_n(&srv->stopping, 1, __ATOMIC_RELEASE);
    if (write(srv->wake[1], "x", 1) < 0) {
        /* the pipe is full: the acceptor is awake already */
    }
}

void kg_agent_server_wait(kg_agent_server *srv)
{
    if (srv->started) {
        pthread_join(srv->acceptor, NULL);
        srv->started = 0;
    }
    pthread_mutex_lock(&srv->lock);
    /* wakes every client thread blocked in a read or write; each closes its own fd */
    for (long i = 0; i < srv->cfg.agent_max_clients; i++)
        if (srv->clients[i] != NULL)
            shutdown(srv->clients[i]->fd, SHUT_RDWR);
    while (srv->n_clients > 0)
        pthread_cond_wait(&srv->cv, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
}

void kg_agent_server_free(kg_agent_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->clients != NULL)
        kg_agent_server_wait(srv);
    if (srv->lfd >= 0)
        close(srv->lfd);
    if (srv->created && unlink(srv->cfg.agent_socket) != 0)
        KG_WARN("agent: cannot remove %s: %s", srv->cfg.agent_socket, strerror(errno));
    for (int i = 0; i < 2; i++)
        if (srv->wake[i] >= 0)
            close(srv->wake[i]);
    for (size_t i = 0; i < srv->n_keys; i++)
        kg_keyref_clear(&srv->keys[i].ref);
    free(srv->keys);
    kg_keysource_free(srv->ks);
    kg_agent_acl_free(srv->acls, srv->n_acls);
    free(srv->clients);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
