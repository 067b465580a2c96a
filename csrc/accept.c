/* accept.c — accepting connections on the shared listening socket, fairly across workers.
 *
 * The listener is registered with EPOLLEXCLUSIVE so one connection wakes one
 * worker; a worker accepts at most cfg->accepts_per_wakeup connections per
 * wake-up so that it does not drain the whole queue while the others sleep.
 *
 * Fairness (cfg->balance): the kernel wakes the first idle exclusive waiter
 * in registration order, so left alone one worker takes most connections.
 * Two counters: a worker steps out of accepting (listener removed from its
 * epoll set) while its open connections are above the mean of the workers
 * that can accept (scoreboard.c: a worker held in a handler cannot, and
 * holds no one back; a slack of one connection left 5 to 9 of 64 keep-alive
 * connections per worker with 8 workers; none gives 8 each); and after a
 * wake-up in which it accepted, it re-registers the listener, which puts it
 * at the back of the wait queue so the next connection wakes another idle
 * worker. A re-armed exclusive waiter is not woken for connections already
 * queued, so re-arming is always followed by an accept attempt.
 *
 * The queue is never left to itself: a worker steps out only when another
 * takes what comes, one with the listener armed, or one waiting for its
 * share that is at or below it now, which is told so (TF_ACCEPT_SIGNAL)
 * rather than left to find out at its next timer (20 ms at a time, which let
 * 3,000 idle connects fill the queue); with the queue a quarter full it goes
 * on accepting until the told one is back. Each side publishes its own state
 * (tf_sb_proc.accepting) before it reads the others', so of two workers
 * stepping out at once at least one sees the other and stays.
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* The listener into or out of this worker's epoll set. */
static int tf_listener_ctl(tf_worker *w, int on) {
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

/* Publishes whether this worker accepts, for the others' balancing; a full
 * barrier, so that what is read next of the others comes after it. */
static void tf_accept_publish(const tf_worker *w) {
    if (!tf_sb_me)
        return;
    int32_t v = w->listening       ? TF_ACCEPT_ARMED
                : w->balance_paused ? TF_ACCEPT_WAITING
                                    : TF_ACCEPT_OFF;
    __atomic_store_n(&tf_sb_me->accepting, v, __ATOMIC_SEQ_CST);
}

static void tf_accept_count_pause(int why) {
    if (tf_sb_me)
        tf_sb_me->pauses[why]++;
}

int tf_listener_arm(tf_worker *w, int on) {
    if (tf_listener_ctl(w, on) < 0)
        return -1;
    w->balance_paused = 0;
    tf_accept_publish(w);
    return 0;
}

/* The listen queue's length and capacity (TCP_INFO on a listener:
 * tcpi_unacked is the queue, tcpi_sacked its capacity); -1 when unknown (a
 * unix socket). */
static int tf_listener_queue(const tf_worker *w, uint32_t *queued, uint32_t *capacity) {
    struct tcp_info info;
    socklen_t len = sizeof(info);
    if (w->listen_fd < 0 || getsockopt(w->listen_fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_sacked) + sizeof(info.tcpi_sacked))
        return -1;
    *queued = info.tcpi_unacked;
    *capacity = info.tcpi_sacked;
    return 0;
}

int tf_listener_queued(const tf_worker *w) {
    uint32_t queued, capacity;
    return tf_listener_queue(w, &queued, &capacity) == 0 && queued > 0;
}

/* Whether the listen queue holds a quarter of its capacity or more. */
static int tf_listener_backlogged(const tf_worker *w) {
    uint32_t queued, capacity;
    return tf_listener_queue(w, &queued, &capacity) == 0 && capacity > 0 &&
           (uint64_t)queued * 4 >= capacity;
}

/* Another worker takes what comes if this one steps out: one with the
 * listener armed, or one waiting at or below its share, told so now; but
 * while that one wakes up (a scheduler's latency on a busy machine) the
 * queue grows, so with a quarter of it full this one goes on. */
static int tf_accept_handed_over(const tf_worker *w) {
    int32_t wake;
    if (tf_scoreboard_accept_peer(&wake))
        return 1;
    return wake > 0 && kill(wake, TF_ACCEPT_SIGNAL) == 0 && !tf_listener_backlogged(w);
}

/* Above the fair share: steps out of accepting when another worker takes
 * what comes (see the top of the file); otherwise stays. Returns 1 when it
 * stepped out. */
static int tf_accept_step_out(tf_worker *w) {
    int was_listening = w->listening;
    if (tf_listener_ctl(w, 0) < 0)
        return 0; /* cannot step out: go on accepting */
    w->balance_paused = 1; /* resumes at the fair share (tf_accept_resume) */
    tf_accept_publish(w);
    if (tf_accept_handed_over(w)) {
        if (was_listening)
            tf_accept_count_pause(TF_PAUSE_FAIR_SHARE);
        return 1;
    }
    /* no one else would accept the queue: this worker goes on */
    if (tf_listener_ctl(w, 1) < 0)
        return 1; /* still waiting: tf_accept_resume tries again at its timer */
    w->balance_paused = 0;
    tf_accept_publish(w);
    return 0;
}

/* Whether to stop accepting for now: at the connection cap, or (balance)
 * above the fair share. The listener is removed until the loop re-arms it. */
static int tf_accept_paused(tf_worker *w) {
    if (w->conn_count >= w->cfg->max_connections) {
        if (w->listening && tf_listener_arm(w, 0) == 0) /* resumes when a connection closes */
            tf_accept_count_pause(TF_PAUSE_MAX_CONNECTIONS);
        return 1;
    }
    return w->cfg->balance && !w->draining && w->listening && tf_scoreboard_over_share() &&
           tf_accept_step_out(w);
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
        if (w->listening && tf_listener_arm(w, 0) == 0)
            tf_accept_count_pause(TF_PAUSE_EMFILE);
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
 * that the next connection wakes another idle worker (round robin). Not
 * published: the others would only see a moment's gap. */
void tf_listener_rotate(tf_worker *w) {
    if (!w->listening || !tf_sb || tf_sb->workers < 2)
        return;
    if (tf_listener_ctl(w, 0) == 0 && tf_listener_ctl(w, 1) == 0)
        tf_accept_some(w); /* re-armed: look at what is already queued */
}

/* A worker waiting for its share keeps waiting while above it and another
 * takes what comes (tf_accept_handed_over). */
static int tf_accept_keep_waiting(const tf_worker *w) {
    return tf_scoreboard_over_share() && tf_accept_handed_over(w);
}

void tf_accept_resume(tf_worker *w) {
    if (w->listening || (w->draining && !w->drain_accepts) ||
        w->conn_count >= w->cfg->max_connections ||
        w->now < w->accept_resume || (w->balance_paused && tf_accept_keep_waiting(w)))
        return;
    w->accept_resume = 0;
    if (tf_listener_arm(w, 1) == 0)
        tf_accept_some(w); /* a re-armed exclusive waiter misses what is queued */
}
