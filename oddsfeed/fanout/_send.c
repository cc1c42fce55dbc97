/* oddsfeed.fanout._send: write one prebuilt frame to many sockets in one call (send_all),
   or each socket its own frame in one call (send_each).

   The fan-out hot path writes the same bytes (a complete server-to-client WebSocket frame:
   unmasked, so identical for every subscriber) to hundreds of sockets per update. Done one
   transport.write() at a time, each write pays the interpreter and the event loop's
   bookkeeping on top of the send system call. send_all() loops over the file descriptors in
   C, with the GIL released, so the loop costs the system calls alone and another thread can
   run Python (or its own send_all) meanwhile.

   Where the kernel offers io_uring, a call's sends go to the kernel as one submission
   (IORING_OP_SEND, MSG_DONTWAIT: a socket that cannot take the frame completes with
   -EAGAIN at once, nothing waits in the kernel) and the call returns once every one has
   completed: the same sends, one system call per batch instead of one per socket (on
   loopback about 30% less sender CPU per delivery for a batch of 1,000, 10-20% for 10;
   bench/fanout/sendcost.c). The ring is set up on first use, per process (a forked child
   sets up its own); where it cannot be (no <linux/io_uring.h> at build time, io_uring_setup
   refused at run time, as a container's seccomp profile often does), or while another
   thread holds it, the sends are one send() each, the same result either way.

   The caller only passes sockets whose transport has nothing buffered (so no byte can be
   reordered) and handles every socket that did not take the whole frame: a short write's
   rest and a failed write both go back through the transport, which buffers the rest or
   reports the error its usual way.

   Optional: when this module cannot be built (no C compiler), its drop-in
   oddsfeed/fanout/writer_py.py (same signature, same result, one os.write per socket) is
   used instead; oddsfeed/fanout/writer.py chooses once, at import. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#if defined(__linux__) && !defined(ODDSFEED_NO_URING) && defined(__has_include)
#if __has_include(<linux/io_uring.h>) && __has_include(<sys/syscall.h>)
#include <linux/io_uring.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__NR_io_uring_setup) && defined(__NR_io_uring_enter)
#define HAVE_URING 1
#endif
#endif
#endif

/* A sent[] slot no send has filled yet. */
#define PENDING PY_SSIZE_T_MIN

/* bufs[i] (lens[i] bytes) to fds[i] by one send() each, for every i whose sent[i] is
   PENDING; called with the GIL released. */
static void
send_plain(const int *fds, const char *const *bufs, const Py_ssize_t *lens, Py_ssize_t n,
           Py_ssize_t *sent)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        ssize_t r;
        if (sent[i] != PENDING)
            continue;
        do {
            r = send(fds[i], bufs[i], (size_t)lens[i], MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (r < 0 && errno == EINTR);
        sent[i] = r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
}

#ifdef HAVE_URING

/* Submission entries per io_uring_enter: a larger call goes in chunks of this many (each
   chunk's sends complete before the next is queued). */
#define RING_ENTRIES 256
/* io_uring_enter calls of one chunk that may fail with EINTR, EAGAIN or EBUSY (retried)
   before the ring goes off and the rest goes by send(). */
#define RING_RETRIES 100
/* Fewer sends than this in a call go by send(): below it the submission saves too little. */
#define RING_MIN_BATCH 4

enum { RING_UNTRIED, RING_UP, RING_OFF };

static struct {
    int state;             /* RING_*; RING_OFF for good once setup or a send through it failed */
    int error;             /* why it is off (errno), 0 when disabled by the caller */
    int busy;              /* one thread at a time uses the ring; the others send() */
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *ring_map, *sqe_map;
    size_t ring_size, sqe_size;
} ring = {RING_UNTRIED, 0, 0, -1};

static void
ring_unmap(void)
{
    if (ring.ring_map != NULL && ring.ring_map != MAP_FAILED)
        munmap(ring.ring_map, ring.ring_size);
    if (ring.sqe_map != NULL && ring.sqe_map != MAP_FAILED)
        munmap(ring.sqe_map, ring.sqe_size);
    ring.ring_map = ring.sqe_map = NULL;
    if (ring.fd >= 0)
        close(ring.fd);
    ring.fd = -1;
}

/* A forked child must not share its parent's ring: it sets up its own on first use. */
static void
ring_after_fork(void)
{
    ring_unmap();
    ring.busy = 0;
    if (ring.state == RING_UP)
        ring.state = RING_UNTRIED;
}

/* 0 if a send through the ring to a full socket completes at once with -EAGAIN (as the
   send() loop returns), else an errno: a kernel that instead waits for room (an older one
   that does not take MSG_DONTWAIT as "never wait") would stall the event loop behind the
   slowest client, so its ring is not used. */
static int
ring_probe(void)
{
    static char buf[4096];  /* static: a waiting request may read it after we return */
    int sv[2], small = 4096, ok;
    unsigned tail, head;
    struct io_uring_sqe *sqe;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return errno;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    while (send(sv[0], buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
    }
    tail = *ring.sq_tail;
    sqe = &ring.sqes[tail & *ring.sq_mask];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = sv[0];
    sqe->addr = (unsigned long long)(uintptr_t)buf;
    sqe->len = sizeof buf;
    sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    ring.sq_array[tail & *ring.sq_mask] = tail & *ring.sq_mask;
    __atomic_store_n(ring.sq_tail, tail + 1, __ATOMIC_RELEASE);
    ok = syscall(__NR_io_uring_enter, ring.fd, 1, 0, IORING_ENTER_GETEVENTS, NULL, 0) == 1;
    head = *ring.cq_head;
    ok = ok && head != __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE) &&
         ring.cqes[head & *ring.cq_mask].res == -EAGAIN;
    if (ok)
        __atomic_store_n(ring.cq_head, head + 1, __ATOMIC_RELEASE);
    close(sv[1]);  /* a request still waiting ends with EPIPE; the ring is dropped then */
    close(sv[0]);
    return ok ? 0 : ENOTSUP;
}

/* Sets the ring up (RING_UP) or records why it cannot be (RING_OFF, ring.error). */
static void
ring_setup(void)
{
    struct io_uring_params p;
    char *base;

    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 2 * RING_ENTRIES;  /* never full: a chunk is reaped before the next */
    ring.fd = (int)syscall(__NR_io_uring_setup, RING_ENTRIES, &p);
    if (ring.fd < 0 || !(p.features & IORING_FEAT_SINGLE_MMAP) ||
        !(p.features & IORING_FEAT_NODROP)) {
        ring.error = ring.fd < 0 ? errno : ENOTSUP;
        goto off;
    }
    ring.ring_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    if (p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe) > ring.ring_size)
        ring.ring_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    ring.sqe_size = p.sq_entries * sizeof(struct io_uring_sqe);
    ring.ring_map = mmap(NULL, ring.ring_size, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, ring.fd, IORING_OFF_SQ_RING);
    ring.sqe_map = mmap(NULL, ring.sqe_size, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_POPULATE, ring.fd, IORING_OFF_SQES);
    if (ring.ring_map == MAP_FAILED || ring.sqe_map == MAP_FAILED) {
        ring.error = errno;
        goto off;
    }
    base = ring.ring_map;
    ring.sq_head = (unsigned *)(base + p.sq_off.head);
    ring.sq_tail = (unsigned *)(base + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(base + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(base + p.sq_off.array);
    ring.cq_head = (unsigned *)(base + p.cq_off.head);
    ring.cq_tail = (unsigned *)(base + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(base + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);
    ring.sqes = ring.sqe_map;
    ring.error = ring_probe();
    if (ring.error != 0)
        goto off;
    ring.state = RING_UP;
    return;
off:
    ring_unmap();
    ring.state = RING_OFF;
}

/* Takes the ring for one call (with the GIL held: the setup is not thread-safe); 1 if the
   call may use it, then ring_release() after. */
static int
ring_acquire(Py_ssize_t n)
{
    if (n < RING_MIN_BATCH || ring.state == RING_OFF)
        return 0;
    if (__atomic_exchange_n(&ring.busy, 1, __ATOMIC_ACQUIRE))
        return 0;
    if (ring.state == RING_UNTRIED)
        ring_setup();
    if (ring.state != RING_UP) {
        __atomic_store_n(&ring.busy, 0, __ATOMIC_RELEASE);
        return 0;
    }
    return 1;
}

static void
ring_release(void)
{
    __atomic_store_n(&ring.busy, 0, __ATOMIC_RELEASE);
}

static void
ring_off(int error)
{
    ring.state = RING_OFF;
    ring.error = error;
}

/* Reaps every completion there is into sent[]; returns how many. */
static unsigned
ring_reap(Py_ssize_t *sent)
{
    unsigned head = *ring.cq_head, got = 0;
    unsigned tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
    for (; head != tail; head++, got++) {
        struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
        int res = cqe->res;
        /* an opcode this kernel does not know: send() instead, and the ring goes off */
        if (res == -EINVAL || res == -EOPNOTSUPP) {
            ring_off(-res);
            continue;  /* stays PENDING */
        }
        sent[cqe->user_data] = res;
    }
    __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    return got;
}

/* One chunk (n <= RING_ENTRIES) of sends through the ring; the GIL released. Every send it
   submitted has completed when it returns; what it could not submit stays PENDING. */
static void
ring_chunk(const int *fds, const char *const *bufs, const Py_ssize_t *lens, unsigned n,
           Py_ssize_t *sent, Py_ssize_t first)
{
    unsigned tail = *ring.sq_tail, i, submitted = 0, done = 0, retries = 0;
    for (i = 0; i < n; i++) {
        unsigned idx = (tail + i) & *ring.sq_mask;
        struct io_uring_sqe *sqe = &ring.sqes[idx];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_SEND;
        sqe->fd = fds[i];
        sqe->addr = (unsigned long long)(uintptr_t)bufs[i];
        sqe->len = (unsigned)lens[i];
        sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
        sqe->user_data = (unsigned long long)(first + i);
        ring.sq_array[idx] = idx;
    }
    __atomic_store_n(ring.sq_tail, tail + n, __ATOMIC_RELEASE);
    while (done < n) {
        unsigned to_submit = n - submitted;
        int rc = (int)syscall(__NR_io_uring_enter, ring.fd, to_submit, to_submit ? 0 : 1,
                              IORING_ENTER_GETEVENTS, NULL, 0);
        if (rc >= 0) {
            submitted += (unsigned)rc;
        } else if ((errno != EINTR && errno != EAGAIN && errno != EBUSY) ||
                   ++retries > RING_RETRIES) {
            /* the ring goes off; what the kernel did not take is withdrawn (stays PENDING,
               sent by send()), what it took is waited for once more */
            ring_off(errno);
            submitted = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE) - tail;
            __atomic_store_n(ring.sq_tail, tail + submitted, __ATOMIC_RELEASE);
            n = submitted;
            done += ring_reap(sent);
            if (done < n && syscall(__NR_io_uring_enter, ring.fd, 0, n - done,
                                    IORING_ENTER_GETEVENTS, NULL, 0) >= 0)
                done += ring_reap(sent);
            return;
        }
        done += ring_reap(sent);
    }
}

static void
send_ring(const int *fds, const char *const *bufs, const Py_ssize_t *lens, Py_ssize_t n,
          Py_ssize_t *sent)
{
    Py_ssize_t off;
    for (off = 0; off < n && ring.state == RING_UP; off += RING_ENTRIES) {
        Py_ssize_t m = n - off < RING_ENTRIES ? n - off : RING_ENTRIES;
        ring_chunk(fds + off, bufs + off, lens + off, (unsigned)m, sent, off);
    }
}

#endif /* HAVE_URING */

/* fds[i] from a sequence of ints; 0, or -1 with an exception set. */
static int
parse_fds(PyObject *fast, Py_ssize_t n, int *fds, const char *who)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (fd == -1 && PyErr_Occurred())
            return -1;
        if (fd < 0 || fd > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: bad file descriptor", who);
            return -1;
        }
        fds[i] = (int)fd;
    }
    return 0;
}

/* bufs[i] (lens[i] bytes) to fds[i], with the GIL released (through the ring where it is
   up, else one send() each); returns [(index, bytes sent or -errno), ...] for the sockets
   that did not take theirs whole. */
static PyObject *
send_many(const int *fds, const char *const *bufs, const Py_ssize_t *lens, Py_ssize_t n)
{
    PyObject *out;
    Py_ssize_t i;
    Py_ssize_t *sent = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
#ifdef HAVE_URING
    int use_ring;
#endif

    if (sent == NULL)
        return PyErr_NoMemory();
    for (i = 0; i < n; i++)
        sent[i] = PENDING;
#ifdef HAVE_URING
    use_ring = ring_acquire(n);
#endif
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_URING
    if (use_ring)
        send_ring(fds, bufs, lens, n, sent);
#endif
    send_plain(fds, bufs, lens, n, sent);
    Py_END_ALLOW_THREADS
#ifdef HAVE_URING
    if (use_ring)
        ring_release();
#endif

    out = PyList_New(0);
    for (i = 0; out != NULL && i < n; i++) {
        if (sent[i] != lens[i]) {
            PyObject *item = Py_BuildValue("(nn)", i, sent[i]);
            if (item == NULL || PyList_Append(out, item) < 0)
                Py_CLEAR(out);
            Py_XDECREF(item);
        }
    }
    PyMem_Free(sent);
    return out;
}

static PyObject *
send_all(PyObject *self, PyObject *args)
{
    PyObject *seq, *fast, *out = NULL;
    Py_buffer frame;
    Py_ssize_t n, i;
    int *fds = NULL;
    const char **bufs = NULL;
    Py_ssize_t *lens = NULL;

    if (!PyArg_ParseTuple(args, "Oy*:send_all", &seq, &frame))
        return NULL;
    fast = PySequence_Fast(seq, "send_all: fds must be a sequence of ints");
    if (fast == NULL)
        goto done;
    n = PySequence_Fast_GET_SIZE(fast);
    fds = PyMem_New(int, n > 0 ? n : 1);
    bufs = PyMem_New(const char *, n > 0 ? n : 1);
    lens = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (fds == NULL || bufs == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (parse_fds(fast, n, fds, "send_all") < 0)
        goto done;
    for (i = 0; i < n; i++) {
        bufs[i] = frame.buf;
        lens[i] = frame.len;
    }
    out = send_many(fds, bufs, lens, n);

done:
    PyMem_Free(fds);
    PyMem_Free(bufs);
    PyMem_Free(lens);
    Py_XDECREF(fast);
    PyBuffer_Release(&frame);
    return out;
}

/* send_each(fds, frames): frames[i] to fds[i], all in one call with the GIL released (the
   batching window's end: each connection's own frame, one system call each). Same result
   as send_all: the sockets that did not take their whole frame. */
static PyObject *
send_each(PyObject *self, PyObject *args)
{
    PyObject *fd_seq, *frame_seq, *fast_fds = NULL, *fast_frames = NULL, *out = NULL;
    Py_ssize_t n, i, got = 0;
    int *fds = NULL;
    Py_buffer *views = NULL;
    const char **bufs = NULL;
    Py_ssize_t *lens = NULL;

    if (!PyArg_ParseTuple(args, "OO:send_each", &fd_seq, &frame_seq))
        return NULL;
    fast_fds = PySequence_Fast(fd_seq, "send_each: fds must be a sequence of ints");
    if (fast_fds == NULL)
        goto done;
    fast_frames = PySequence_Fast(frame_seq, "send_each: frames must be a sequence of bytes");
    if (fast_frames == NULL)
        goto done;
    n = PySequence_Fast_GET_SIZE(fast_fds);
    if (PySequence_Fast_GET_SIZE(fast_frames) != n) {
        PyErr_Format(PyExc_ValueError, "send_each: %zd fds but %zd frames", n,
                     PySequence_Fast_GET_SIZE(fast_frames));
        goto done;
    }
    fds = PyMem_New(int, n > 0 ? n : 1);
    views = PyMem_New(Py_buffer, n > 0 ? n : 1);
    bufs = PyMem_New(const char *, n > 0 ? n : 1);
    lens = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (fds == NULL || views == NULL || bufs == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (parse_fds(fast_fds, n, fds, "send_each") < 0)
        goto done;
    for (got = 0; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast_frames, got), &views[got],
                               PyBUF_SIMPLE) < 0)
            goto done;
        bufs[got] = views[got].buf;
        lens[got] = views[got].len;
    }
    out = send_many(fds, bufs, lens, n);

done:
    for (i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(fds);
    PyMem_Free(views);
    PyMem_Free(bufs);
    PyMem_Free(lens);
    Py_XDECREF(fast_fds);
    Py_XDECREF(fast_frames);
    return out;
}

/* uring(enable=None) -> str: the ring's state ("on", "off: <reason>"), setting it up if it
   was not tried yet; enable=False turns it off for good, True only reports. */
static PyObject *
uring(PyObject *self, PyObject *args)
{
    PyObject *enable = Py_None;
    if (!PyArg_ParseTuple(args, "|O:uring", &enable))
        return NULL;
#ifdef HAVE_URING
    int on = enable == Py_None ? 1 : PyObject_IsTrue(enable);
    if (on < 0)
        return NULL;
    if (!on) {
        if (__atomic_exchange_n(&ring.busy, 1, __ATOMIC_ACQUIRE))
            return PyUnicode_FromString("off: in use by another thread");
        if (ring.state != RING_OFF)
            ring_off(0);
        ring_unmap();
        ring_release();
    }
    if (ring.state == RING_UNTRIED && !__atomic_exchange_n(&ring.busy, 1, __ATOMIC_ACQUIRE)) {
        if (ring.state == RING_UNTRIED)
            ring_setup();
        ring_release();
    }
    if (ring.state == RING_UP)
        return PyUnicode_FromString("on");
    if (ring.error == 0)
        return PyUnicode_FromString("off: disabled");
    return PyUnicode_FromFormat("off: %s", strerror(ring.error));
#else
    (void)enable;
    return PyUnicode_FromString("off: not built with io_uring");
#endif
}

static PyMethodDef methods[] = {
    {"send_all", send_all, METH_VARARGS,
     "send_all(fds, frame) -> [(index, sent_or_minus_errno), ...]\n\n"
     "Send frame to every socket in fds (non-blocking, no SIGPIPE), with the GIL released.\n"
     "Returns the sockets that did not take the whole frame: their index in fds and the\n"
     "bytes they took (0 <= sent < len(frame)), or minus the errno of a failed send."},
    {"send_each", send_each, METH_VARARGS,
     "send_each(fds, frames) -> [(index, sent_or_minus_errno), ...]\n\n"
     "Send frames[i] to fds[i] for every i (non-blocking, no SIGPIPE), with the GIL\n"
     "released. Returns the sockets that did not take their whole frame, as send_all."},
    {"uring", uring, METH_VARARGS,
     "uring(enable=None) -> str\n\n"
     "Whether the sends go through io_uring: 'on', or 'off: <reason>' (not built with it,\n"
     "refused by the kernel, disabled). Sets the ring up if it was not tried yet;\n"
     "uring(False) turns it off for the rest of the process (every send a send())."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_send",
    "Write one frame to many sockets in one call (the fan-out hot path).", -1, methods,
};

PyMODINIT_FUNC
PyInit__send(void)
{
#ifdef HAVE_URING
    static int registered;
    if (!registered) {
        if (pthread_atfork(NULL, NULL, ring_after_fork) != 0)
            ring_off(EAGAIN);
        registered = 1;
    }
#endif
    return PyModule_Create(&module);
}
