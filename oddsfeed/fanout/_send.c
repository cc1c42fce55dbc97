/* oddsfeed.fanout._send: write one prebuilt frame to many sockets in one call (send_all),
   or each socket its own frame in one call (send_each).

   The fan-out hot path writes the same bytes (a complete server-to-client WebSocket frame:
   unmasked, so identical for every subscriber) to hundreds of sockets per update. Done one
   transport.write() at a time, each write pays the interpreter and the event loop's
   bookkeeping on top of the send system call. send_all() loops over the file descriptors in
   C, with the GIL released, so the loop costs the system calls alone and another thread can
   run Python (or its own send_all) meanwhile.

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
#include <sys/socket.h>
#include <sys/types.h>

static PyObject *
send_all(PyObject *self, PyObject *args)
{
    PyObject *seq, *fast, *out = NULL;
    Py_buffer frame;
    Py_ssize_t n, i;
    int *fds = NULL;
    Py_ssize_t *sent = NULL;

    if (!PyArg_ParseTuple(args, "Oy*:send_all", &seq, &frame))
        return NULL;
    fast = PySequence_Fast(seq, "send_all: fds must be a sequence of ints");
    if (fast == NULL)
        goto done;
    n = PySequence_Fast_GET_SIZE(fast);
    fds = PyMem_New(int, n > 0 ? n : 1);
    sent = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (fds == NULL || sent == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (fd == -1 && PyErr_Occurred())
            goto done;
        if (fd < 0 || fd > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "send_all: bad file descriptor");
            goto done;
        }
        fds[i] = (int)fd;
    }

    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        ssize_t r;
        do {
            r = send(fds[i], frame.buf, (size_t)frame.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (r < 0 && errno == EINTR);
        sent[i] = r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    Py_END_ALLOW_THREADS

    /* [(index, bytes sent or -errno), ...] for the sockets that did not take it all */
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        if (sent[i] != frame.len) {
            PyObject *item = Py_BuildValue("(nn)", i, sent[i]);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(item);
        }
    }

done:
    PyMem_Free(fds);
    PyMem_Free(sent);
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
    Py_buffer *bufs = NULL;
    Py_ssize_t *sent = NULL;

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
    bufs = PyMem_New(Py_buffer, n > 0 ? n : 1);
    sent = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (fds == NULL || bufs == NULL || sent == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast_fds, i));
        if (fd == -1 && PyErr_Occurred())
            goto done;
        if (fd < 0 || fd > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "send_each: bad file descriptor");
            goto done;
        }
        fds[i] = (int)fd;
    }
    for (got = 0; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast_frames, got), &bufs[got],
                               PyBUF_SIMPLE) < 0)
            goto done;
    }

    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        ssize_t r;
        do {
            r = send(fds[i], bufs[i].buf, (size_t)bufs[i].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (r < 0 && errno == EINTR);
        sent[i] = r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    Py_END_ALLOW_THREADS

    out = PyList_New(0);
    if (out == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        if (sent[i] != bufs[i].len) {
            PyObject *item = Py_BuildValue("(nn)", i, sent[i]);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(item);
        }
    }

done:
    if (bufs != NULL) {
        for (i = 0; i < got; i++)
            PyBuffer_Release(&bufs[i]);
    }
    PyMem_Free(fds);
    PyMem_Free(bufs);
    PyMem_Free(sent);
    Py_XDECREF(fast_fds);
    Py_XDECREF(fast_frames);
    return out;
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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_send",
    "Write one frame to many sockets in one call (the fan-out hot path).", -1, methods,
};

PyMODINIT_FUNC
PyInit__send(void)
{
    return PyModule_Create(&module);
}
