/* runq.c — requests in flight: the run queue to runner threads and the completion queue back to the loop.
 *
 * One of each per worker process. Both are singly linked lists of the
 * embedder's tf_job (no allocation here) under one mutex: a runner waits on
 * a condition variable for work; a finished job is appended to the done list
 * and an eventfd wakes the loop, which takes the whole list at once. The
 * scoreboard's threads_busy / threads_waiting are written under the mutex.
 *
 * Hand-offs are what --threads costs with fast handlers, so: a runner that
 * holds the embedder's lock takes its next job with tf_runq_poll (no lock
 * release, no sleep) and sleeps only when the queue is empty, handing its
 * answer back only once it let go of that lock (tf_runq_next); a push wakes
 * no runner: the loop wakes them once per batch of events, after it let go
 * of the embedder's lock (tf_runq_wake), one per job queued beyond the
 * wake-ups already on their way (tf_signalled), so a woken runner finds
 * both the queue's lock and the embedder's free.
 */
#define _GNU_SOURCE
#include "worker_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static pthread_mutex_t tf_runq_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tf_runq_ready = PTHREAD_COND_INITIALIZER;
static tf_job *tf_run_head, *tf_run_tail;   /* waiting for a runner, oldest first */
static tf_job *tf_done_head, *tf_done_tail; /* answered, for the loop, oldest first */
static int tf_runq_stopped;
static int tf_done_fd = -1;
static int32_t tf_waiting, tf_busy;
static int32_t tf_sleeping;  /* runners in pthread_cond_wait */
static int32_t tf_signalled; /* signals sent that no sleeper has woken from yet */
static int tf_wake_owed;     /* the loop pushed since its last tf_runq_wake (loop thread only) */
static int tf_done_writers;  /* completers between taking tf_done_fd and writing it (atomic) */

/* Scoreboard counts; called with the lock held. */
static void tf_runq_publish(void) {
    if (tf_sb_me) {
        __atomic_store_n(&tf_sb_me->threads_waiting, tf_waiting, __ATOMIC_RELAXED);
        __atomic_store_n(&tf_sb_me->threads_busy, tf_busy, __ATOMIC_RELAXED);
    }
}

int tf_jobs_open(void) {
    pthread_mutex_lock(&tf_runq_lock);
    if (tf_done_fd < 0)
        tf_done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    tf_runq_stopped = 0;
    int fd = tf_done_fd;
    pthread_mutex_unlock(&tf_runq_lock);
    return fd;
}

void tf_jobs_close(void) {
    pthread_mutex_lock(&tf_runq_lock);
    int fd = tf_done_fd;
    tf_done_fd = -1; /* no completer takes it from here on */
    pthread_mutex_unlock(&tf_runq_lock);
    /* one that took it before writes at once (the eventfd never blocks):
     * closed after that, its number cannot be reused under a late write */
    while (__atomic_load_n(&tf_done_writers, __ATOMIC_ACQUIRE) > 0)
        sched_yield();
    if (fd >= 0)
        close(fd);
}

void tf_runq_push(tf_job *job) {
    job->next = NULL;
    job->on_runner = 0;
    pthread_mutex_lock(&tf_runq_lock);
    if (tf_run_tail)
        tf_run_tail->next = job;
    else
        tf_run_head = job;
    tf_run_tail = job;
    tf_waiting++;
    tf_runq_publish();
    tf_wake_owed = 1;
    pthread_mutex_unlock(&tf_runq_lock);
}

/* The oldest queued job, now the caller's; NULL when none. Lock held. */
static tf_job *tf_runq_pop(void) {
    tf_job *job = tf_run_head;
    if (job) {
        tf_run_head = job->next;
        if (!tf_run_head)
            tf_run_tail = NULL;
        job->next = NULL;
        job->on_runner = 1;
        tf_waiting--;
        tf_busy++;
        tf_runq_publish();
    }
    return job;
}

void tf_runq_wake(void) {
    if (!tf_wake_owed)
        return; /* nothing pushed: --threads 1 never gets past here */
    tf_wake_owed = 0;
    pthread_mutex_lock(&tf_runq_lock);
    int32_t idle = tf_sleeping - tf_signalled, queued = tf_waiting - tf_signalled;
    int32_t n = idle < queued ? idle : queued;
    if (n > 0)
        tf_signalled += n;
    pthread_mutex_unlock(&tf_runq_lock);
    /* outside the lock: a woken runner does not block on it right away */
    for (int32_t i = 0; i < n; i++)
        pthread_cond_signal(&tf_runq_ready);
}

/* Waits for a job; lock held. NULL only once stopped with nothing left. */
static tf_job *tf_runq_wait(void) {
    while (!tf_run_head && !tf_runq_stopped) {
        tf_sleeping++;
        pthread_cond_wait(&tf_runq_ready, &tf_runq_lock);
        tf_sleeping--;
        if (tf_signalled > 0) /* a spurious wake-up may take another's count: harmless */
            tf_signalled--;
    }
    return tf_runq_pop();
}

tf_job *tf_runq_take(void) {
    pthread_mutex_lock(&tf_runq_lock);
    tf_job *job = tf_runq_wait();
    pthread_mutex_unlock(&tf_runq_lock);
    return job;
}

/* Appends job to the done list; lock held. Returns the eventfd the caller
 * writes (tf_done_wake) once it let go of the lock, when the list was empty
 * (one wake-up per batch: the loop takes the whole list), else -1. Written
 * outside the lock: on one core the loop it wakes may run at once, and would
 * then wait for a lock its waker holds (a futex and two switches more). */
static int tf_done_append(tf_job *job) {
    job->next = NULL;
    if (job->on_runner) {
        job->on_runner = 0;
        tf_busy--;
        tf_runq_publish();
    }
    int was_empty = tf_done_head == NULL;
    if (tf_done_tail)
        tf_done_tail->next = job;
    else
        tf_done_head = job;
    tf_done_tail = job;
    if (!was_empty || tf_done_fd < 0)
        return -1;
    __atomic_add_fetch(&tf_done_writers, 1, __ATOMIC_RELAXED); /* tf_jobs_close waits */
    return tf_done_fd;
}

/* Wakes the loop through fd from tf_done_append (lock not held). */
static void tf_done_wake(int fd) {
    if (fd < 0)
        return;
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(fd, &one, sizeof(one));
    while (r < 0 && errno == EINTR);
    (void)r; /* EAGAIN: the counter is saturated, the loop wakes anyway */
    __atomic_sub_fetch(&tf_done_writers, 1, __ATOMIC_RELEASE);
}

void tf_job_done(tf_job *job) {
    pthread_mutex_lock(&tf_runq_lock);
    int fd = tf_done_append(job);
    pthread_mutex_unlock(&tf_runq_lock);
    tf_done_wake(fd);
}

/* The eventfd is not read: edge-triggered in the loop's epoll set, each
 * write reports it again (its counter cannot reach its 2^64 - 2 maximum). */
tf_job *tf_jobs_take_done(void) {
    pthread_mutex_lock(&tf_runq_lock);
    tf_job *list = tf_done_head;
    tf_done_head = tf_done_tail = NULL;
    pthread_mutex_unlock(&tf_runq_lock);
    return list;
}

void tf_runq_stop(void) {
    pthread_mutex_lock(&tf_runq_lock);
    tf_runq_stopped = 1;
    pthread_cond_broadcast(&tf_runq_ready);
    pthread_mutex_unlock(&tf_runq_lock);
}

tf_job *tf_runq_next(tf_job *done) {
    pthread_mutex_lock(&tf_runq_lock);
    int fd = done ? tf_done_append(done) : -1;
    if (fd >= 0) { /* the batch's first answer: the loop is woken without the lock held */
        pthread_mutex_unlock(&tf_runq_lock);
        tf_done_wake(fd);
        pthread_mutex_lock(&tf_runq_lock);
    }
    tf_job *job = tf_runq_wait();
    pthread_mutex_unlock(&tf_runq_lock);
    return job;
}

tf_job *tf_runq_poll(tf_job *done) {
    pthread_mutex_lock(&tf_runq_lock);
    tf_job *job = tf_runq_pop();
    /* With no next job, done is left to the caller's tf_runq_next, after it
     * let go of the embedder's lock: the loop this wakes then finds that lock
     * free instead of preempting a runner that holds it (one core: two
     * context switches and a futex each way). */
    int fd = job && done ? tf_done_append(done) : -1;
    pthread_mutex_unlock(&tf_runq_lock);
    tf_done_wake(fd);
    return job;
}
