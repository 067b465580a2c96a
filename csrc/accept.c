/* accept.c — accepting connections on the shared listening socket, fairly across workers.
 *
 * The listener is registered with EPOLLEXCLUSIVE so one connection wakes one
 * worker; a worker accepts at most cfg->accepts_per_wakeup connections per
 * wake-up so that it does not drain the whole queue while the others sleep.
 *
 * Fairness (cfg->balance): the kernel wakes the first idle exclusive waiter
 * in registration order, so left alone one worker takes most connections.
 * Two counters: a worker steps out of accepting (listener removed from its
 * epoll set) while its open connections are above the ready workers' mean,
 * read from the scoreboard (a slack of one connection left 5 to 9 of 64
 * keep-alive connections per worker with 8 workers; none gives 8 each); and
 * after a wake-up in which it accepted, it re-registers the listener, which
 * puts it at the back of the wait queue so the next connection wakes another
 * idle worker. A re-armed exclusive waiter is not woken for connections
 * already queued, so re-arming is always followed by an accept attempt.
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "log.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int tf_listener_arm(tf_worker *w, int on) {
    if (on == w->listening || w->listen_fd < 0)
        return 0;
    if (on) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = TF_TAG_LISTENER};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->listen_fd, &ev) < 0)
            return -1;
    } else if (epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->listen_fd, NULL) < 0) {
        return -1;
    }
    w->listening = on;
    return 0;
}

/* Whether to stop accepting for now: at the connection cap, or (balance)
 * above the fair share. The listener is removed until the loop re-arms it. */
static int tf_accept_paused(tf_worker *w) {
    if (w->conn_count >= w->cfg->max_connections) {
        tf_listener_arm(w, 0); /* resumes when a connection closes */
        return 1;
    }
    if (w->cfg->balance && !w->draining && tf_scoreboard_over_share()) {
        tf_listener_arm(w, 0); /* resumes once back at the fair share */
        w->balance_paused = 1;
        return 1;
    }
    return 0;
}

/* accept4 failed with err: 1 to try again, 0 to stop for this wake-up. */
static int tf_accept_failed(tf_worker *w, int err) {
    if (err == EINTR || err == ECONNABORTED || err == EPROTO)
        return 1;
    if (err == EAGAIN || err == EWOULDBLOCK)
        return 0;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* out of descriptors or memory: stop accepting for a moment
         * instead of spinning on a ready listener */
        tf_log_at(TF_LOG_WARNING, "worker %d (pid %d): accept: %s; pausing accepts for 100 ms",
                  w->cfg->worker_id, (int)getpid(), strerror(err));
        tf_listener_arm(w, 0);
        w->accept_resume = w->now + 0.1;
        return 0;
    }
    /* Anything else (EINVAL after an outside shutdown() of the socket,
     * EPERM, ...) would fail again at once on a listener that stays ready:
     * step out of accepting and retry now and then, logging each errno once
     * (the connections already open are still served). */
    if (err != w->accept_errno) {
        tf_log_at(TF_LOG_ERROR, "worker %d (pid %d): accept: %s; not accepting, retrying every %g s",
                  w->cfg->worker_id, (int)getpid(), strerror(err), TF_ACCEPT_RETRY_SECONDS);
        w->accept_errno = err;
    }
    tf_listener_arm(w, 0);
    w->accept_resume = w->now + TF_ACCEPT_RETRY_SECONDS;
    return 0;
}

/* Accepts up to cfg->accepts_per_wakeup queued connections; returns how many. */
int tf_accept_some(tf_worker *w) {
    int accepted = 0;
    for (int i = 0; i < w->cfg->accepts_per_wakeup; i++) {
        if (tf_accept_paused(w))
            return accepted;
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(w->listen_fd, (struct sockaddr *)&peer, &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (tf_accept_failed(w, errno))
                continue;
            return accepted;
        }
        if (!tf_conn_open(w, fd, &peer)) {
            if (errno == ENOMEM)
                return accepted; /* as before: no memory ends this wake-up's accepts */
            continue;
        }
        accepted++;
        w->accept_errno = 0; /* the socket works again: a new failure is news */
    }
    return accepted;
}

/* After a wake-up that accepted: to the back of the listener's wait queue, so
 * that the next connection wakes another idle worker (round robin). */
void tf_listener_rotate(tf_worker *w) {
    if (!w->listening || !tf_sb || tf_sb->workers < 2)
        return;
    if (tf_listener_arm(w, 0) == 0 && tf_listener_arm(w, 1) == 0)
        tf_accept_some(w); /* re-armed: look at what is already queued */
}
