/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LD_PRELOAD shim for servers that cannot be told where to listen (gnutls-serv binds the
 * wildcard address): rewrites wildcard binds to the loopback address, so tests only ever
 * listen on 127.0.0.1 / ::1. Built by tests/integration/test_pkcs11.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);

    if (real_bind == NULL)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof(a));
        if (a.sin_addr.s_addr == htonl(INADDR_ANY))
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return real_bind(fd, (const struct sockaddr *)&a, sizeof(a));
    }
    if (addr != NULL && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof(a));
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof(a.sin6_addr)) == 0)
            a.sin6_addr = in6addr_loopback;
        return real_bind(fd, (const struct sockaddr *)&a, sizeof(a));
    }
    return real_bind(fd, addr, len);
}
