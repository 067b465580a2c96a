/* scoreboard.c — memory shared by the primary and its workers.
 *
 * The primary maps it before the first fork, so every worker inherits the
 * mapping; a worker then writes only its own entry, with plain stores (no
 * syscall, no lock). Readers (the primary, other workers balancing their
 * accepts, `tailfast status`) may see a value a moment old, never a torn
 * aligned word; strings are written before the state that publishes them.
 *
 * The mapping lives in a file (under /dev/shm when the embedder picks it) so
 * that `tailfast status` can map it read-only from outside.
 */
#define _GNU_SOURCE
#include "clock.h"
#include "scoreboard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

tf_scoreboard *tf_sb = NULL;
tf_sb_proc *tf_sb_me = NULL;

static int tf_sb_pipe[2] = {-1, -1};

/* A new file at path, mapped shared (size bytes, zero); MAP_FAILED with errno. */
static void *tf_sb_map_file(const char *path, size_t size) {
    (void)unlink(path); /* a stale file of a dead primary with our pid */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return MAP_FAILED;
    if (ftruncate(fd, (off_t)size) < 0) {
        int saved = errno;
        close(fd);
        unlink(path);
        errno = saved;
        return MAP_FAILED;
    }
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd); /* the mapping keeps the file's pages */
    if (mem == MAP_FAILED) {
        unlink(path);
        errno = saved;
    }
    return mem;
}

int tf_scoreboard_create(const char *path, int workers, const char *listen) {
    size_t size = sizeof(tf_scoreboard);
    void *mem = path ? tf_sb_map_file(path, size)
                     : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -1;
    if (pipe2(tf_sb_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        int saved = errno;
        munmap(mem, size);
        if (path)
            unlink(path);
        errno = saved;
        return -1;
    }
    tf_scoreboard *sb = mem; /* fresh pages are zero */
    sb->version = TF_SB_VERSION;
    sb->max_procs = TF_SB_MAX_PROCS;
    sb->primary_pid = (int32_t)getpid();
    sb->workers = workers;
    sb->started = tf_clock_wall();
    snprintf(sb->listen, sizeof(sb->listen), "%s", listen ? listen : "");
    /* the magic last: a reader that sees it sees a complete header */
    __atomic_store_n(&sb->magic, TF_SB_MAGIC, __ATOMIC_RELEASE);
    tf_sb = sb;
    tf_sb_me = NULL;
    return 0;
}

void tf_scoreboard_destroy(const char *path) {
    if (tf_sb) {
        munmap(tf_sb, sizeof(tf_scoreboard));
        tf_sb = NULL;
    }
    tf_sb_me = NULL;
    for (int i = 0; i < 2; i++) {
        if (tf_sb_pipe[i] >= 0)
            close(tf_sb_pipe[i]);
        tf_sb_pipe[i] = -1;
    }
    if (path)
        (void)unlink(path);
}

int tf_scoreboard_wake_fd(void) { return tf_sb_pipe[0]; }

void tf_scoreboard_notify(void) {
    if (tf_sb_pipe[1] < 0)
        return;
    char b = 1;
    ssize_t r;
    do
        r = write(tf_sb_pipe[1], &b, 1);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full, so the primary is woken anyway */
}

const tf_scoreboard *tf_scoreboard_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return NULL;
    }
    if ((size_t)st.st_size < sizeof(tf_scoreboard)) {
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    void *mem = mmap(NULL, sizeof(tf_scoreboard), PROT_READ, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd);
    if (mem == MAP_FAILED) {
        errno = saved;
        return NULL;
    }
    const tf_scoreboard *sb = mem;
    if (__atomic_load_n(&sb->magic, __ATOMIC_ACQUIRE) != TF_SB_MAGIC ||
        sb->version != TF_SB_VERSION) {
        munmap(mem, sizeof(tf_scoreboard));
        errno = EINVAL;
        return NULL;
    }
    return sb;
}

void tf_scoreboard_close(const tf_scoreboard *sb) {
    if (sb)
        munmap((void *)sb, sizeof(tf_scoreboard));
}

/* Sums over the ready workers (idle or busy) of the open connections and the
 * requests answered; returns how many are ready. */
static int tf_sb_ready_sums(long *open, uint64_t *requests) {
    int hw = tf_sb->procs_hw;
    if (hw > TF_SB_MAX_PROCS)
        hw = TF_SB_MAX_PROCS;
    int ready = 0;
    *open = 0;
    *requests = 0;
    for (int i = 0; i < hw; i++) {
        const tf_sb_proc *p = &tf_sb->procs[i];
        int state = p->state;
        if (state == TF_W_IDLE || state == TF_W_BUSY) {
            *open += p->open;
            *requests += p->requests;
            ready++;
        }
    }
    return ready;
}

/* A busy worker whose request started this recently (seconds) still counts
 * as accepting: it is back in its loop in a moment, and leaving it out
 * would let the others take its share of a burst. */
#define TF_SB_BUSY_GRACE 0.01

/* Whether p takes new connections now or soon, for the fair share: this
 * worker (its loop runs), or another whose loop runs (idle, or busy for less
 * than TF_SB_BUSY_GRACE) with the listener armed or waiting for its share. A
 * worker held in a handler longer cannot accept, so it holds no one back. */
static int tf_sb_can_accept(const tf_sb_proc *p, double now) {
    if (p == tf_sb_me)
        return 1;
    if (__atomic_load_n(&p->accepting, __ATOMIC_SEQ_CST) == TF_ACCEPT_OFF)
        return 0;
    int state = __atomic_load_n(&p->state, __ATOMIC_ACQUIRE);
    if (state == TF_W_IDLE)
        return 1;
    return state == TF_W_BUSY && now - p->request_started < TF_SB_BUSY_GRACE;
}

/* Sums the open connections of the workers that can accept; returns how many. */
static int tf_sb_accepting_sums(long *open, double now) {
    int hw = tf_sb->procs_hw;
    if (hw > TF_SB_MAX_PROCS)
        hw = TF_SB_MAX_PROCS;
    int n = 0;
    *open = 0;
    for (int i = 0; i < hw; i++) {
        const tf_sb_proc *p = &tf_sb->procs[i];
        if (tf_sb_can_accept(p, now)) {
            *open += p->open;
            n++;
        }
    }
    return n;
}

int tf_scoreboard_over_share(void) {
    if (!tf_sb || !tf_sb_me)
        return 0;
    long total;
    int n = tf_sb_accepting_sums(&total, tf_clock_coarse());
    if (n < 2)
        return 0;
    /* open > mean, in integers: open * n > total */
    return (long)tf_sb_me->open * n > total;
}

int tf_scoreboard_accept_peer(int32_t *wake) {
    *wake = 0;
    if (!tf_sb || !tf_sb_me)
        return 0;
    double now = tf_clock_coarse();
    long total;
    int n = tf_sb_accepting_sums(&total, now);
    int hw = tf_sb->procs_hw;
    if (hw > TF_SB_MAX_PROCS)
        hw = TF_SB_MAX_PROCS;
    int32_t fewest = INT32_MAX;
    for (int i = 0; i < hw; i++) {
        const tf_sb_proc *p = &tf_sb->procs[i];
        if (p == tf_sb_me || !tf_sb_can_accept(p, now))
            continue;
        int accepting = __atomic_load_n(&p->accepting, __ATOMIC_SEQ_CST);
        if (accepting == TF_ACCEPT_ARMED)
            return 1;
        int32_t open = p->open;
        /* waiting, and would take more: at or below the mean */
        if (accepting == TF_ACCEPT_WAITING && (long)open * n <= total && open < fewest &&
            p->pid > 0) {
            fewest = open;
            *wake = p->pid;
        }
    }
    return 0;
}

int tf_scoreboard_ahead_of_mean(double margin) {
    if (!tf_sb || !tf_sb_me)
        return 0;
    long open;
    uint64_t total;
    int ready = tf_sb_ready_sums(&open, &total);
    if (ready < 2)
        return 0;
    return (double)tf_sb_me->requests * ready > (double)total * (1.0 + margin);
}

void tf_scoreboard_attach(int index) {
    if (tf_sb_pipe[0] >= 0) {
        close(tf_sb_pipe[0]); /* only the primary reads it */
        tf_sb_pipe[0] = -1;
    }
    if (!tf_sb || index < 0 || index >= TF_SB_MAX_PROCS)
        return;
    tf_sb_me = &tf_sb->procs[index];
    tf_sb_me->pid = (int32_t)getpid();
    tf_sb_me->started = tf_clock_wall();
}

void tf_scoreboard_fold(int index) {
    if (!tf_sb || index < 0 || index >= TF_SB_MAX_PROCS)
        return;
    const tf_sb_proc *p = &tf_sb->procs[index];
    int id = p->worker_id;
    if (id < 1 || id > TF_SB_MAX_WORKERS)
        return;
    tf_sb_slot *slot = &tf_sb->slots[id];
    slot->retired_requests += p->requests;
    for (int i = 0; i < 5; i++)
        slot->retired.status[i] += p->stats.status[i];
    for (int i = 0; i < TF_LATENCY_BUCKETS; i++)
        slot->retired.latency[i] += p->stats.latency[i];
    slot->retired.latency_sum += p->stats.latency_sum;
    for (int i = 0; i < TF_PAUSE_COUNT; i++)
        slot->retired_pauses[i] += p->pauses[i];
    slot->retired_loop_stalls += __atomic_load_n(&p->loop_stalls, __ATOMIC_RELAXED);
}

void tf_scoreboard_count_stall(void) {
    if (tf_sb_me) /* written from the watchdog thread while the loop thread writes the rest */
        __atomic_fetch_add(&tf_sb_me->loop_stalls, 1, __ATOMIC_RELAXED);
}
