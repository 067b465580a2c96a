/* sd_notify.c — tells systemd the server's state, without libsystemd (Type=notify units). */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

void tf_sd_notify(const char *path, const char *msg) {
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof(addr.sun_path))
        return;
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        tf_log("sd_notify: socket: %s", strerror(errno));
        return;
    }
    ssize_t r;
    do
        r = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&addr,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        tf_log("sd_notify %s: %s", path, strerror(errno));
    close(fd);
}

void tf_sd_notify_reloading(const char *path) {
    /* systemd matches the reload by this timestamp: CLOCK_MONOTONIC in µs */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[80];
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL +
                 (unsigned long long)ts.tv_nsec / 1000ULL);
    tf_sd_notify(path, msg);
}
