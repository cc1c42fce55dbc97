/* What one fan-out send costs, and which part of it a batched submission could save.

   A reader process (forked) holds N loopback TCP connections and drains them (epoll,
   64 KiB reads); the sender writes a FRAME-byte frame to every one of its N accepted
   sockets, ROUNDS times, in batches of B sockets, one way per row:

     send      one send(MSG_DONTWAIT | MSG_NOSIGNAL) per socket (oddsfeed's _send.c today)
     uring     the batch's sends as one io_uring submission (IORING_OP_SEND with
               MSG_DONTWAIT: a full socket completes with -EAGAIN, nothing waits), one
               io_uring_enter per batch that submits them and waits for their completions
     uring-fix the same with the sockets registered as fixed files (no fd lookup per send)

   each with TCP_NODELAY on and off. Reported per row: ns of wall time and of the sender's
   CPU (getrusage: user and sys) per delivery, the reader's CPU per delivery, the ksoftirqd
   threads' (softirq work deferred out of the sender, charged to no process) and the whole
   machine's (every other process included: only meaningful on an otherwise idle machine). On
   loopback the sender's send also runs the receiving side of TCP (softirq on the same
   CPU), so sys time is the whole kernel path, as it is for the fan-out bench.

   Raw system calls against <linux/io_uring.h>, no liburing. Not part of the package:

       gcc -O2 -o /tmp/sendcost bench/fanout/sendcost.c
       flock /tmp/oddsfeed-bench.lock /tmp/sendcost [N [ROUNDS [FRAME [REPEATS]]]]

   (defaults 1000 2000 120 3; rows interleaved REPEATS times, batch sizes 1000 and 10). */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

/* ---- io_uring, raw */
struct ring {
    int fd;
    unsigned entries;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static int ring_init(struct ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 2;
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0)
        return -1;
    r->entries = p.sq_entries;
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (cq_sz > sq_sz)
        sq_sz = cq_sz;
    char *sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        return -1;
    char *cq = sq; /* IORING_FEAT_SINGLE_MMAP on every kernel this runs on */
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        return -1;
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* n sends (fds[i] or fixed file i) of buf as one submission; waits for the n completions;
   returns how many did not take the whole buffer. */
static long ring_send(struct ring *r, const int *fds, int n, const char *buf, size_t len,
                      int fixed, int base)
{
    unsigned tail = *r->sq_tail, i;
    long short_ = 0;
    for (i = 0; i < (unsigned)n; i++) {
        unsigned idx = (tail + i) & *r->sq_mask;
        struct io_uring_sqe *sqe = &r->sqes[idx];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_SEND;
        sqe->fd = fixed ? base + (int)i : fds[i];
        sqe->flags = fixed ? IOSQE_FIXED_FILE : 0;
        sqe->addr = (uint64_t)(uintptr_t)buf;
        sqe->len = (unsigned)len;
        sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
        sqe->user_data = i;
        r->sq_array[idx] = idx;
    }
    __atomic_store_n(r->sq_tail, tail + n, __ATOMIC_RELEASE);
    int got = 0;
    while (got < n) {
        int rc = (int)syscall(__NR_io_uring_enter, r->fd, got == 0 ? n : 0, n - got,
                              IORING_ENTER_GETEVENTS, NULL, 0);
        if (rc < 0 && errno != EINTR)
            die("io_uring_enter");
        unsigned head = *r->cq_head;
        unsigned ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        for (; head != ctail; head++, got++) {
            struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
            if (cqe->res != (int)len)
                short_++;
        }
        __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    }
    return short_;
}

/* ---- the reader: connect n sockets, drain them until every one is closed */
static void reader(int port, int n)
{
    int ep = epoll_create1(0), i, open_ = n;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    static char buf[65536];
    for (i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
            die("connect");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    }
    struct epoll_event evs[256];
    while (open_ > 0) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (i = 0; i < k; i++) {
            ssize_t got;
            while ((got = read(evs[i].data.fd, buf, sizeof buf)) > 0) {
            }
            if (got == 0) {
                close(evs[i].data.fd);
                open_--;
            }
        }
    }
    exit(0);
}

/* CPU seconds of the whole machine (every non-idle state) and of the ksoftirqd threads
   (softirq work the kernel deferred out of the sender's context, charged to no process). */
static void machine_cpu(double *busy, double *softirqd)
{
    unsigned long long v[10] = {0};
    char line[512];
    FILE *f = fopen("/proc/stat", "r");
    double hz = (double)sysconf(_SC_CLK_TCK);
    *busy = *softirqd = 0;
    if (f != NULL && fgets(line, sizeof line, f) != NULL &&
        sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) == 8)
        *busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;
    if (f != NULL)
        fclose(f);
    for (int pid = 2; pid < 200; pid++) {
        char path[64], comm[64];
        unsigned long long ut, st;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fscanf(f, "%*d (%63[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                   comm, &ut, &st) == 3 && strncmp(comm, "ksoftirqd", 9) == 0)
            *softirqd += (ut + st) / hz;
        fclose(f);
    }
}

enum { SEND, URING, URING_FIXED };
static const char *names[] = {"send", "uring", "uring-fix"};

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    int rounds = argc > 2 ? atoi(argv[2]) : 2000;
    size_t frame_len = argc > 3 ? (size_t)atoi(argv[3]) : 120;
    int repeats = argc > 4 ? atoi(argv[4]) : 3;
    int batches[] = {1000, 10};
    char *frame = malloc(frame_len);
    memset(frame, 'x', frame_len);
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0)
        die("listen");
    getsockname(ls, (struct sockaddr *)&a, &al);
    int port = ntohs(a.sin_port);

    struct ring ring;
    memset(&ring, 0, sizeof ring);
    int have_ring = ring_init(&ring, 1024) == 0;
    if (!have_ring)
        fprintf(stderr, "io_uring_setup failed (%s): send rows only\n", strerror(errno));

    printf("N=%d rounds=%d frame=%zu bytes, ns per delivery (wall / sender user / sender sys /"
           " sender total / reader), short sends\n", n, rounds, frame_len);
    for (int rep = 0; rep < repeats; rep++) {
        for (int nodelay = 1; nodelay >= 0; nodelay--) {
            for (int bi = 0; bi < 2; bi++) {
                for (int mode = SEND; mode <= URING_FIXED; mode++) {
                    if (mode != SEND && !have_ring)
                        continue;
                    int batch = batches[bi] < n ? batches[bi] : n;
                    fflush(stdout);
                    pid_t pid = fork();
                    if (pid == 0) {
                        close(ls);
                        reader(port, n);
                    }
                    int *fds = malloc(sizeof(int) * n);
                    for (int i = 0; i < n; i++) {
                        fds[i] = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                        if (fds[i] < 0)
                            die("accept");
                        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
                    }
                    if (mode == URING_FIXED &&
                        syscall(__NR_io_uring_register, ring.fd, IORING_REGISTER_FILES, fds,
                                n) < 0)
                        die("IORING_REGISTER_FILES");
                    struct rusage r0, r1, rc;
                    long short_ = 0;
                    double m0, k0, m1, k1;
                    machine_cpu(&m0, &k0);
                    getrusage(RUSAGE_SELF, &r0);
                    double t0 = now_s();
                    for (int k = 0; k < rounds; k++) {
                        for (int i = 0; i < n; i += batch) {
                            int m = n - i < batch ? n - i : batch;
                            if (mode == SEND) {
                                for (int j = 0; j < m; j++) {
                                    ssize_t s = send(fds[i + j], frame, frame_len,
                                                     MSG_DONTWAIT | MSG_NOSIGNAL);
                                    if (s != (ssize_t)frame_len)
                                        short_++;
                                }
                            } else {
                                short_ += ring_send(&ring, fds + i, m, frame, frame_len,
                                                    mode == URING_FIXED, i);
                            }
                        }
                    }
                    double wall = now_s() - t0;
                    getrusage(RUSAGE_SELF, &r1);
                    machine_cpu(&m1, &k1);
                    if (mode == URING_FIXED)
                        syscall(__NR_io_uring_register, ring.fd, IORING_UNREGISTER_FILES,
                                NULL, 0);
                    for (int i = 0; i < n; i++)
                        close(fds[i]);
                    free(fds);
                    int st;
                    waitpid(pid, &st, 0);
                    getrusage(RUSAGE_CHILDREN, &rc);
                    static double reader_before;
                    double reader_s = tv_s(rc.ru_utime) + tv_s(rc.ru_stime) - reader_before;
                    reader_before += reader_s;
                    double d = (double)n * rounds;
                    double user = tv_s(r1.ru_utime) - tv_s(r0.ru_utime);
                    double sys = tv_s(r1.ru_stime) - tv_s(r0.ru_stime);
                    printf("rep %d nodelay=%d batch=%4d %-9s wall %6.0f  user %5.0f  sys %6.0f"
                           "  total %6.0f  reader %6.0f  ksoftirqd %5.0f  machine %6.0f"
                           "  short %ld\n",
                           rep, nodelay, batch, names[mode], wall / d * 1e9, user / d * 1e9,
                           sys / d * 1e9, (user + sys) / d * 1e9, reader_s / d * 1e9,
                           (k1 - k0) / d * 1e9, (m1 - m0) / d * 1e9, short_);
                    fflush(stdout);
                }
            }
        }
    }
    return 0;
}
