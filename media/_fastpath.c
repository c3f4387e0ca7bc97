/* media._fastpath: the SFU's per-subscriber send in C (optional; media/rtc_adapter.py falls
 * back to the same steps in Python when this module is not built).
 *
 * One ``Sender`` per (subscriber, nominated ICE pair): it owns a duplicate of the pair's UDP
 * socket descriptor, the remote address as a ready ``sockaddr`` and a packet buffer, and calls
 * libsrtp's ``srtp_protect`` (libsrtp 2.x: ``int srtp_protect(srtp_t, void *, int *)``) through
 * the function pointer pylibsrtp's cffi binding exports, on the session pylibsrtp created (the
 * Sender holds a reference to that Session, so the context outlives it).  Per packet:
 *
 *     send_parts(head, rest) -> bool            head + rest joined in the buffer, protected, sent
 *     send_rewritten(head, rest, b1, seq, ts, ssrc, pid_at, pid) -> bool
 *         the same, after writing the RTP header's byte 1 (marker | payload type), sequence
 *         number, timestamp and SSRC, and (pid_at >= 0) a 15-bit VP8 PictureID (M bit set) at
 *         offset pid_at of the head
 *
 * False means dropped: the nominated pair changed (the call is handed to ``slow`` instead, whose
 * result is returned), the packet does not fit, libsrtp refused it, or ``sendto`` failed (a full
 * socket buffer: a slow or dead link; never queued).  ``sent``/``dropped`` count what this
 * Sender did.  ``close()`` closes the duplicate descriptor; the Sender then drops everything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define BUFFER_SIZE 1500
#define TRAILER 148          /* SRTP_MAX_TRAILER_LEN and then some: libsrtp writes the tag after */

typedef int (*protect_fn)(void *ctx, void *rtp, int *len);

typedef struct {
    PyObject_HEAD
    protect_fn protect;
    void *ctx;
    PyObject *session;       /* keeps ctx alive */
    PyObject *nominated;     /* aioice's Connection._nominated: {component: pair} */
    PyObject *pair;          /* the pair this Sender sends on */
    PyObject *slow;          /* callable(head, rest) -> bool, for a changed nomination */
    PyObject *one;           /* the int 1 (RTP component) */
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned long long sent, dropped;
    unsigned char buffer[BUFFER_SIZE + TRAILER];
} Sender;

static int
parse_address(PyObject *addr, struct sockaddr_storage *out, socklen_t *len)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(addr, "si", &host, &port))
        return -1;
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)port);
        *len = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)port);
        *len = sizeof(*v6);
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
    return -1;
}

static int
Sender_init(Sender *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"protect", "ctx", "session", "fd", "addr", "nominated", "pair", "slow", NULL};
    unsigned long long protect, ctx;
    int fd;
    PyObject *session, *addr, *nominated, *pair, *slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKOiOOOO", kwlist, &protect, &ctx, &session, &fd, &addr,
                                     &nominated, &pair, &slow))
        return -1;
    if (!protect || !ctx) {
        PyErr_SetString(PyExc_ValueError, "null libsrtp function or context");
        return -1;
    }
    if (!PyDict_Check(nominated)) {
        PyErr_SetString(PyExc_TypeError, "nominated must be a dict");
        return -1;
    }
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2) {
        PyErr_SetString(PyExc_TypeError, "addr must be a (host, port) tuple");
        return -1;
    }
    {
        PyObject *host = PyTuple_GET_ITEM(addr, 0), *port = PyTuple_GET_ITEM(addr, 1);
        PyObject *pair2 = PyTuple_Pack(2, host, port);
        if (pair2 == NULL)
            return -1;
        int rc = parse_address(pair2, &self->addr, &self->addrlen);
        Py_DECREF(pair2);
        if (rc < 0)
            return -1;
    }
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);   /* not inherited by child processes */
    if (dup_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (self->fd >= 0)
        close(self->fd);
    self->fd = dup_fd;
    self->protect = (protect_fn)(uintptr_t)protect;
    self->ctx = (void *)(uintptr_t)ctx;
    Py_INCREF(session); Py_XSETREF(self->session, session);
    Py_INCREF(nominated); Py_XSETREF(self->nominated, nominated);
    Py_INCREF(pair); Py_XSETREF(self->pair, pair);
    Py_INCREF(slow); Py_XSETREF(self->slow, slow);
    if (self->one == NULL && (self->one = PyLong_FromLong(1)) == NULL)
        return -1;
    return 0;
}

static PyObject *
Sender_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Sender *self = (Sender *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

/* The Python objects a Sender owns, listed once for the GC's traverse and clear. */
#define SENDER_OBJECTS(X) X(session) X(nominated) X(pair) X(slow)

static int
Sender_traverse(Sender *self, visitproc visit, void *arg)
{
#define VISIT(member) Py_VISIT(self->member);
    SENDER_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
Sender_clear(Sender *self)
{
#define CLEAR(member) Py_CLEAR(self->member);
    SENDER_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
Sender_dealloc(Sender *self)
{
    PyObject_GC_UnTrack(self);
    if (self->fd >= 0)
        close(self->fd);
    Sender_clear(self);
    Py_CLEAR(self->one);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Copies head + rest into the buffer; returns the length, or -1 (too long: counted as dropped),
 * or -2 (Python error set). */
static Py_ssize_t
join(Sender *self, PyObject *head, PyObject *rest, Py_ssize_t *head_len)
{
    Py_buffer h, r;
    Py_ssize_t n;
    if (PyObject_GetBuffer(head, &h, PyBUF_SIMPLE) < 0)
        return -2;
    if (PyObject_GetBuffer(rest, &r, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&h);
        return -2;
    }
    n = h.len + r.len;
    *head_len = h.len;
    if (n > BUFFER_SIZE || h.len < 12) {
        n = -1;
    } else {
        memcpy(self->buffer, h.buf, h.len);
        memcpy(self->buffer + h.len, r.buf, r.len);
    }
    PyBuffer_Release(&r);
    PyBuffer_Release(&h);
    return n;
}

static PyObject *
finish(Sender *self, Py_ssize_t n)
{
    int len = (int)n;
    if (self->fd < 0 || self->protect(self->ctx, self->buffer, &len) != 0) {
        self->dropped++;
        Py_RETURN_FALSE;
    }
    ssize_t rc;
    do {
        rc = sendto(self->fd, self->buffer, (size_t)len, 0, (struct sockaddr *)&self->addr, self->addrlen);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {            /* EAGAIN/ENOBUFS: the socket's send buffer is full; anything else: gone */
        self->dropped++;
        Py_RETURN_FALSE;
    }
    self->sent++;
    Py_RETURN_TRUE;
}

/* 1: our pair is still nominated; 0: it is not (the call goes to slow); -1: error;
 * -2: cleared */
static int
nominated(Sender *self)
{
    if (self->nominated == NULL)   /* cleared by the GC (tp_clear): nothing to send on */
        return -2;
    PyObject *current = PyDict_GetItemWithError(self->nominated, self->one);  /* borrowed */
    if (current == self->pair)
        return 1;
    return (current == NULL && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *
Sender_send_parts(Sender *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_parts(head, rest)");
        return NULL;
    }
    int live = nominated(self);
    if (live == -2) {
        self->dropped++;
        Py_RETURN_FALSE;
    }
    if (live <= 0)
        return live < 0 ? NULL : PyObject_CallFunctionObjArgs(self->slow, args[0], args[1], NULL);
    Py_ssize_t head_len;
    Py_ssize_t n = join(self, args[0], args[1], &head_len);
    if (n == -2)
        return NULL;
    if (n < 0) {
        self->dropped++;
        Py_RETURN_FALSE;
    }
    return finish(self, n);
}

static inline void
put16(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
put32(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Byte 1, seq, timestamp, SSRC and (pid_at >= 0) the PictureID, in a head of len bytes;
 * -1 when they do not fit. */
static int
write_header(unsigned char *b, Py_ssize_t len, const unsigned long v[4], long pid_at, long pid)
{
    if (len < 12 || (pid_at >= 0 && pid_at + 2 > len))
        return -1;
    b[1] = (unsigned char)v[0];
    put16(b + 2, v[1] & 0xFFFF);
    put32(b + 4, v[2]);
    put32(b + 8, v[3]);
    if (pid_at >= 0)
        put16(b + pid_at, 0x8000 | (pid & 0x7FFF));
    return 0;
}

static PyObject *
Sender_send_rewritten(Sender *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "send_rewritten(head, rest, b1, seq, ts, ssrc, pid_at, pid)");
        return NULL;
    }
    unsigned long v[4];
    for (int i = 0; i < 4; i++) {
        v[i] = PyLong_AsUnsignedLongMask(args[2 + i]);
        if (v[i] == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
    }
    long pid_at = PyLong_AsLong(args[6]);
    if (pid_at == -1 && PyErr_Occurred())
        return NULL;
    long pid = PyLong_AsLong(args[7]);
    if (pid == -1 && PyErr_Occurred())
        return NULL;
    int live = nominated(self);
    if (live == -2) {
        self->dropped++;
        Py_RETURN_FALSE;
    }
    if (live <= 0) {
        if (live < 0)
            return NULL;
        /* the slow path gets the header already rewritten */
        PyObject *result, *buf = PyByteArray_FromObject(args[0]);
        if (buf == NULL)
            return NULL;
        if (write_header((unsigned char *)PyByteArray_AS_STRING(buf), PyByteArray_GET_SIZE(buf), v, pid_at, pid) < 0) {
            Py_DECREF(buf);
            self->dropped++;
            Py_RETURN_FALSE;
        }
        result = PyObject_CallFunctionObjArgs(self->slow, buf, args[1], NULL);
        Py_DECREF(buf);
        return result;
    }
    Py_ssize_t head_len;
    Py_ssize_t n = join(self, args[0], args[1], &head_len);
    if (n == -2)
        return NULL;
    if (n < 0 || write_header(self->buffer, head_len, v, pid_at, pid) < 0) {
        self->dropped++;
        Py_RETURN_FALSE;
    }
    return finish(self, n);
}

static PyObject *
Sender_close(Sender *self, PyObject *Py_UNUSED(ignored))
{
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Sender_get_sent(Sender *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->sent);
}

static PyObject *
Sender_get_dropped(Sender *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->dropped);
}

static PyObject *
Sender_get_closed(Sender *self, void *closure)
{
    return PyBool_FromLong(self->fd < 0);
}

static PyMethodDef Sender_methods[] = {
    {"send_parts", (PyCFunction)(void (*)(void))Sender_send_parts, METH_FASTCALL,
     "send_parts(head, rest) -> bool: join, SRTP-protect and sendto"},
    {"send_rewritten", (PyCFunction)(void (*)(void))Sender_send_rewritten, METH_FASTCALL,
     "send_rewritten(head, rest, b1, seq, ts, ssrc, pid_at, pid) -> bool: send_parts with the RTP "
     "header (and a VP8 PictureID at pid_at >= 0) written on the way"},
    {"close", (PyCFunction)Sender_close, METH_NOARGS, "close the duplicated socket descriptor"},
    {NULL}
};

static PyGetSetDef Sender_getset[] = {
    {"sent", (getter)Sender_get_sent, NULL, "packets sent", NULL},
    {"dropped", (getter)Sender_get_dropped, NULL, "packets dropped", NULL},
    {"closed", (getter)Sender_get_closed, NULL, "close() was called", NULL},
    {NULL}
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._fastpath.Sender",
    .tp_doc = "SRTP-protect and sendto one subscriber's packets on one ICE pair",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Sender_new,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_traverse = (traverseproc)Sender_traverse,
    .tp_clear = (inquiry)Sender_clear,
    .tp_methods = Sender_methods,
    .tp_getset = Sender_getset,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "media._fastpath",
    .m_doc = "The SFU's per-subscriber send (join, SRTP protect, sendto) in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&SenderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0) {
        Py_DECREF(&SenderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
