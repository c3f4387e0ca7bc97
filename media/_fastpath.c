/* media._fastpath: the SFU's per-packet fan-out in C (optional: media.native imports it; without
 * it the same steps run in Python, media/forwarder.py, media/rtp_rewrite.py, media/vp8.py and
 * media/rtc_adapter.py, which stay the reference).  It holds:
 *
 * - ``Sender``: one subscriber's send on one nominated ICE pair (below);
 * - ``SlotRewriter`` and ``Vp8Rewriter``: the slot rewriters of media.rtp_rewrite and media.vp8,
 *   the same API and results, their state in C;
 * - ``Lane``, ``fanout_video`` and ``fanout_audio``: the forwarder's loop over the slots a source
 *   feeds (the end of this file).
 *
 * ``Sender``: one per (subscriber, nominated ICE pair): it owns a duplicate of the pair's UDP
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
#include <structmember.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <time.h>

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

/* Type_traverse and Type_clear (the GC's tp_traverse and tp_clear) over the Python objects a
 * type owns, listed once as an X-macro: OBJECTS(X) expands X(member) for each. */
#define GC_VISIT_MEMBER(member) Py_VISIT(self->member);
#define GC_CLEAR_MEMBER(member) Py_CLEAR(self->member);
#define GC_METHODS(Type, OBJECTS)                                                  \
    static int Type##_traverse(Type *self, visitproc visit, void *arg)            \
    {                                                                             \
        OBJECTS(GC_VISIT_MEMBER)                                                  \
        return 0;                                                                 \
    }                                                                             \
    static int Type##_clear(Type *self)                                           \
    {                                                                             \
        OBJECTS(GC_CLEAR_MEMBER)                                                  \
        return 0;                                                                 \
    }
/* ... and a Type_dealloc that only untracks, clears and frees */
#define GC_DEALLOC(Type)                                                          \
    static void Type##_dealloc(Type *self)                                        \
    {                                                                             \
        PyObject_GC_UnTrack(self);                                                \
        Type##_clear(self);                                                       \
        Py_TYPE(self)->tp_free((PyObject *)self);                                 \
    }

#define SENDER_OBJECTS(X) X(session) X(nominated) X(pair) X(slow)
GC_METHODS(Sender, SENDER_OBJECTS)

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

/* The whole send of one rewritten packet from C buffers (the fan-out below): 1 sent, 0 dropped
 * (as send_rewritten's False), -1 Python error.  ``rest_obj`` is what the slow path gets as rest. */
static int
sender_send(Sender *self, const unsigned char *head, Py_ssize_t head_len, const unsigned char *rest,
            Py_ssize_t rest_len, const unsigned long v[4], long pid_at, long pid, PyObject *rest_obj)
{
    int live = nominated(self);
    if (live == -2) {
        self->dropped++;
        return 0;
    }
    if (live < 0)
        return -1;
    if (live == 0) {
        PyObject *buf = PyByteArray_FromStringAndSize((const char *)head, head_len);
        if (buf == NULL)
            return -1;
        if (write_header((unsigned char *)PyByteArray_AS_STRING(buf), head_len, v, pid_at, pid) < 0) {
            Py_DECREF(buf);
            self->dropped++;
            return 0;
        }
        PyObject *result = PyObject_CallFunctionObjArgs(self->slow, buf, rest_obj, NULL);
        Py_DECREF(buf);
        if (result == NULL)
            return -1;
        int ok = PyObject_IsTrue(result);
        Py_DECREF(result);
        return ok;
    }
    Py_ssize_t n = head_len + rest_len;
    if (n > BUFFER_SIZE || head_len < 12) {
        self->dropped++;
        return 0;
    }
    memcpy(self->buffer, head, head_len);
    memcpy(self->buffer + head_len, rest, rest_len);
    if (write_header(self->buffer, head_len, v, pid_at, pid) < 0) {
        self->dropped++;
        return 0;
    }
    PyObject *result = finish(self, n);    /* Py_True or Py_False, never NULL */
    int ok = result == Py_True;
    Py_DECREF(result);
    return ok;
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


/* ---------------------------------------------------------------------------------------------
 * SlotRewriter and Vp8Rewriter: media.rtp_rewrite.SlotRewriter and media.vp8.Vp8Rewriter in C,
 * the same API and the same results (the Python classes are the reference; tests run both on the
 * same random packet sequences).  State is kept in C so the fan-out below reads it directly. */

typedef struct {
    PyObject_HEAD
    uint32_t out_ssrc;
    long long ts_gap, clock_rate, switches;
    uint32_t seq_offset, ts_offset, source_ssrc, epoch_first, last_seq, last_ts;
    char has_source, resync, keep_ts, has_time;
    double last_time;
} Rewriter;

static PyTypeObject RewriterType;

/* An int argument, masked to unsigned long (as PyLong_AsUnsignedLongMask): -1 on error */
static int
masked(PyObject *o, unsigned long *out)
{
    *out = PyLong_AsUnsignedLongMask(o);
    return (*out == (unsigned long)-1 && PyErr_Occurred()) ? -1 : 0;
}

static int
get_u32(PyObject *o, uint32_t *out, const char *what)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v > 0xFFFFFFFFULL) {
        PyErr_Format(PyExc_OverflowError, "%s does not fit in 32 bits", what);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* ``now``: None, or seconds (float or int) */
static int
get_now(PyObject *o, int *has_now, double *now)
{
    if (o == NULL || o == Py_None) {
        *has_now = 0;
        *now = 0.0;
        return 0;
    }
    *now = PyFloat_AsDouble(o);
    if (*now == -1.0 && PyErr_Occurred())
        return -1;
    *has_now = 1;
    return 0;
}

static int
Rewriter_init(Rewriter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"out_ssrc", "ts_gap", "clock_rate", NULL};
    PyObject *out_ssrc;
    long long ts_gap = 3000, clock_rate = 90000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|LL", kwlist, &out_ssrc, &ts_gap, &clock_rate))
        return -1;
    if (get_u32(out_ssrc, &self->out_ssrc, "out_ssrc") < 0)
        return -1;
    self->ts_gap = ts_gap;
    self->clock_rate = clock_rate;
    self->switches = 0;
    self->seq_offset = self->ts_offset = self->source_ssrc = 0;
    self->epoch_first = self->last_seq = self->last_ts = 0;
    self->has_source = 0;
    self->resync = 1;
    self->keep_ts = 0;
    self->has_time = 0;
    self->last_time = 0.0;
    return 0;
}

static void
rw_anchor(Rewriter *r, uint32_t seq, uint32_t ts, uint32_t ssrc, int has_now, double now)
{
    r->resync = 0;
    int keep_ts = r->keep_ts && r->has_source && ssrc == r->source_ssrc;
    r->keep_ts = 0;
    if (!r->has_source) {
        r->seq_offset = 0;
        r->ts_offset = 0;
    } else {
        r->seq_offset = (r->last_seq + 1 - seq) & 0xFFFF;
        if (!keep_ts) {
            long long gap = r->ts_gap;
            if (has_now && r->has_time && now > r->last_time) {
                long long elapsed = (long long)((now - r->last_time) * (double)r->clock_rate);
                if (elapsed > gap)
                    gap = elapsed;
            }
            r->ts_offset = (uint32_t)((unsigned long long)r->last_ts + (unsigned long long)gap - ts);
            r->switches++;
        }
    }
    r->has_source = 1;
    r->source_ssrc = ssrc;
    r->epoch_first = (seq + r->seq_offset) & 0xFFFF;
    r->last_seq = (r->epoch_first - 1) & 0xFFFF;
    r->last_ts = ts + r->ts_offset;
}

static void
rw_map(Rewriter *r, uint32_t seq, uint32_t ts, uint32_t ssrc, int has_now, double now,
       uint32_t *out_seq, uint32_t *out_ts)
{
    if (r->resync || !r->has_source || ssrc != r->source_ssrc)
        rw_anchor(r, seq, ts, ssrc, has_now, now);
    uint32_t os = (seq + r->seq_offset) & 0xFFFF;
    uint32_t ot = ts + r->ts_offset;
    if (((os - r->last_seq) & 0xFFFF) < 0x8000) {
        r->last_seq = os;
        r->last_ts = ot;
        if (has_now) {
            r->last_time = now;
            r->has_time = 1;
        }
        if (((os - r->epoch_first) & 0xFFFF) >= 0x4000)
            r->epoch_first = (os - 0x2000) & 0xFFFF;
    }
    *out_seq = os;
    *out_ts = ot;
}

/* 1: out_seq was sent in the current epoch */
static int
rw_in_epoch(Rewriter *r, uint32_t out_seq)
{
    return ((out_seq - r->epoch_first) & 0xFFFF) <= ((r->last_seq - r->epoch_first) & 0xFFFF);
}

static inline uint32_t
get16(const unsigned char *p)
{
    return ((uint32_t)p[0] << 8) | p[1];
}

static inline uint32_t
get32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static PyObject *
Rewriter_map(Rewriter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seq", "ts", "ssrc", "now", NULL};
    PyObject *seq_o, *ts_o, *ssrc_o, *now_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|O", kwlist, &seq_o, &ts_o, &ssrc_o, &now_o))
        return NULL;
    unsigned long seq, ts, ssrc;
    if (masked(seq_o, &seq) < 0 || masked(ts_o, &ts) < 0 || masked(ssrc_o, &ssrc) < 0)
        return NULL;
    int has_now;
    double now;
    if (get_now(now_o, &has_now, &now) < 0)
        return NULL;
    uint32_t out_seq, out_ts;
    rw_map(self, (uint32_t)(seq & 0xFFFF), (uint32_t)ts, (uint32_t)ssrc, has_now, now, &out_seq, &out_ts);
    return Py_BuildValue("(kk)", (unsigned long)out_seq, (unsigned long)out_ts);
}

/* Rewrites the writable buffer b (n >= 12 bytes) in place; returns the outgoing seq. */
static uint32_t
rw_rewrite(Rewriter *self, unsigned char *b, int has_now, double now)
{
    uint32_t out_seq, out_ts;
    rw_map(self, get16(b + 2), get32(b + 4), get32(b + 8), has_now, now, &out_seq, &out_ts);
    put16(b + 2, out_seq);
    put32(b + 4, out_ts);
    put32(b + 8, self->out_ssrc);
    return out_seq;
}

static PyObject *
Rewriter_rewrite_in_place(Rewriter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "now", NULL};
    PyObject *buf_o, *now_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kwlist, &buf_o, &now_o))
        return NULL;
    int has_now;
    double now;
    if (get_now(now_o, &has_now, &now) < 0)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(buf_o, &b, PyBUF_WRITABLE) < 0)
        return NULL;
    if (b.len < 12) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "RTP packet shorter than its fixed header");
        return NULL;
    }
    uint32_t out_seq = rw_rewrite(self, b.buf, has_now, now);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(out_seq);
}

static PyObject *
Rewriter_rewrite(Rewriter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"packet", "now", NULL};
    PyObject *packet_o, *now_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kwlist, &packet_o, &now_o))
        return NULL;
    int has_now;
    double now;
    if (get_now(now_o, &has_now, &now) < 0)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(packet_o, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len < 12) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "RTP packet shorter than its fixed header");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.buf, b.len);
    PyBuffer_Release(&b);
    if (out != NULL)
        rw_rewrite(self, (unsigned char *)PyBytes_AS_STRING(out), has_now, now);
    return out;
}

static PyObject *
Rewriter_source_seq(Rewriter *self, PyObject *arg)
{
    unsigned long out_seq = PyLong_AsUnsignedLongMask(arg);
    if (out_seq == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    out_seq &= 0xFFFF;
    if (!self->has_source || !rw_in_epoch(self, (uint32_t)out_seq))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong((out_seq - self->seq_offset) & 0xFFFF);
}

static PyObject *
Rewriter_retransmit(Rewriter *self, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    PyObject *out = NULL;
    if (b.len >= 12 && self->has_source && get32(p + 8) == self->source_ssrc) {
        uint32_t out_seq = (get16(p + 2) + self->seq_offset) & 0xFFFF;
        if (rw_in_epoch(self, out_seq)) {
            out = PyBytes_FromStringAndSize(b.buf, b.len);
            if (out != NULL) {
                unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
                put16(q + 2, out_seq);
                put32(q + 4, (uint32_t)(get32(p + 4) + self->ts_offset));
                put32(q + 8, self->out_ssrc);
            }
            PyBuffer_Release(&b);
            return out;
        }
    }
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyObject *
Rewriter_switch(Rewriter *self, PyObject *Py_UNUSED(ignored))
{
    self->resync = 1;
    self->keep_ts = 0;
    Py_RETURN_NONE;
}

static PyObject *
Rewriter_hide_gap(Rewriter *self, PyObject *Py_UNUSED(ignored))
{
    self->resync = 1;
    self->keep_ts = 1;
    Py_RETURN_NONE;
}

/* __copy__ of the rewriters: their state is plain C data after the object header */
static PyObject *
copy_state(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject *copy = type->tp_alloc(type, 0);
    if (copy == NULL)
        return NULL;
    memcpy((char *)copy + sizeof(PyObject), (char *)self + sizeof(PyObject), type->tp_basicsize - sizeof(PyObject));
    return copy;
}

static PyObject *
Rewriter_get_source_ssrc(Rewriter *self, void *closure)
{
    if (!self->has_source)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->source_ssrc);
}

static PyObject *
Rewriter_get_seq_offset(Rewriter *self, void *closure)
{
    return PyLong_FromUnsignedLong(self->seq_offset);
}

static PyObject *
Rewriter_get_ts_offset(Rewriter *self, void *closure)
{
    return PyLong_FromUnsignedLong(self->ts_offset);
}

static PyObject *
Rewriter_get_last_seq(Rewriter *self, void *closure)
{
    if (!self->has_source)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->last_seq);
}

static PyObject *
Rewriter_get_last_ts(Rewriter *self, void *closure)
{
    if (!self->has_source)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->last_ts);
}

static PyObject *
Rewriter_get_out_ssrc(Rewriter *self, void *closure)
{
    return PyLong_FromUnsignedLong(self->out_ssrc);
}

static int
Rewriter_set_out_ssrc(Rewriter *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "out_ssrc cannot be deleted");
        return -1;
    }
    return get_u32(value, &self->out_ssrc, "out_ssrc");
}

static PyMethodDef Rewriter_methods[] = {
    {"map", (PyCFunction)(void (*)(void))Rewriter_map, METH_VARARGS | METH_KEYWORDS,
     "map(seq, ts, ssrc, now=None) -> (out_seq, out_ts)"},
    {"rewrite_in_place", (PyCFunction)(void (*)(void))Rewriter_rewrite_in_place, METH_VARARGS | METH_KEYWORDS,
     "rewrite_in_place(buf, now=None) -> out_seq"},
    {"rewrite", (PyCFunction)(void (*)(void))Rewriter_rewrite, METH_VARARGS | METH_KEYWORDS,
     "rewrite(packet, now=None) -> bytes"},
    {"source_seq", (PyCFunction)Rewriter_source_seq, METH_O, "source_seq(out_seq) -> int | None"},
    {"retransmit", (PyCFunction)Rewriter_retransmit, METH_O, "retransmit(packet) -> bytes | None"},
    {"switch", (PyCFunction)Rewriter_switch, METH_NOARGS, "the slot's source changes: re-anchor on the next packet"},
    {"hide_gap", (PyCFunction)Rewriter_hide_gap, METH_NOARGS,
     "packets were dropped on purpose: continue seq, keep the source's timing"},
    {"__copy__", (PyCFunction)copy_state, METH_NOARGS, NULL},
    {NULL}
};

static PyMemberDef Rewriter_members[] = {
    {"ts_gap", T_LONGLONG, offsetof(Rewriter, ts_gap), 0, NULL},
    {"clock_rate", T_LONGLONG, offsetof(Rewriter, clock_rate), 0, NULL},
    {"switches", T_LONGLONG, offsetof(Rewriter, switches), 0, NULL},
    {NULL}
};

static PyGetSetDef Rewriter_getset[] = {
    {"out_ssrc", (getter)Rewriter_get_out_ssrc, (setter)Rewriter_set_out_ssrc, NULL, NULL},
    {"source_ssrc", (getter)Rewriter_get_source_ssrc, NULL, NULL, NULL},
    {"seq_offset", (getter)Rewriter_get_seq_offset, NULL, NULL, NULL},
    {"ts_offset", (getter)Rewriter_get_ts_offset, NULL, NULL, NULL},
    {"last_seq", (getter)Rewriter_get_last_seq, NULL, NULL, NULL},
    {"last_ts", (getter)Rewriter_get_last_ts, NULL, NULL, NULL},
    {NULL}
};

static PyTypeObject RewriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._fastpath.SlotRewriter",
    .tp_doc = "media.rtp_rewrite.SlotRewriter in C (same API and results)",
    .tp_basicsize = sizeof(Rewriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rewriter_init,
    .tp_methods = Rewriter_methods,
    .tp_members = Rewriter_members,
    .tp_getset = Rewriter_getset,
};


typedef struct {
    PyObject_HEAD
    char has_source;
    uint32_t source_ssrc;
    char pid_anchor, pid_seen, tl0_anchor, tl0_seen, key_anchor, key_seen;
    int pid_bits;
    long long pid_src, pid_ext, pid_offset, pid_last;
    long tl0_offset, tl0_last, key_offset, key_last;
} Vp8;

static PyTypeObject Vp8Type;

static int
Vp8_init(Vp8 *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    memset((char *)self + sizeof(PyObject), 0, sizeof(Vp8) - sizeof(PyObject));
    self->pid_anchor = self->tl0_anchor = self->key_anchor = 1;
    return 0;
}

/* media.vp8.descriptor_layout: 0 with out = (PictureID position, bits, TL0PICIDX position, T/K
 * position), -1 for a truncated descriptor */
static int
vp8_layout(const unsigned char *buf, Py_ssize_t n, Py_ssize_t offset, long out[4])
{
    if (offset < 0 || offset >= n)
        return -1;
    if (!(buf[offset] & 0x80)) {
        if (offset + 1 >= n)
            return -1;
        out[0] = -1; out[1] = 0; out[2] = -1; out[3] = -1;
        return 0;
    }
    Py_ssize_t i = offset + 1;
    if (i >= n)
        return -1;
    unsigned char x = buf[i++];
    long pid_pos = -1, bits = 0, tl0_pos = -1, tk_pos;
    if (x & 0x80) {
        if (i >= n)
            return -1;
        pid_pos = (long)i;
        if (buf[i] & 0x80) {
            bits = 15;
            i += 2;
        } else {
            bits = 7;
            i += 1;
        }
    }
    if (x & 0x40)
        tl0_pos = (long)i++;
    tk_pos = (x & 0x10) ? (long)i : -1;
    if (x & 0x30)
        i++;
    if (i >= n)
        return -1;
    out[0] = pid_pos; out[1] = bits; out[2] = tl0_pos; out[3] = tk_pos;
    return 0;
}

static void
vp8_switch(Vp8 *v)
{
    v->pid_anchor = v->tl0_anchor = v->key_anchor = 1;
}

/* Vp8Rewriter.picture_id: the outgoing 15-bit PictureID, or -1 (the packet needs rewrite()) */
static long long
vp8_picture_id(Vp8 *v, long long pid, int has_ssrc, uint32_t ssrc)
{
    if ((has_ssrc && (!v->has_source || ssrc != v->source_ssrc)) || v->pid_anchor || v->pid_bits != 15)
        return -1;
    long long d = (pid - v->pid_src) & 0x7FFF;
    if (d >= 0x4000)
        d -= 0x8000;
    long long ext = v->pid_ext + d;
    if (d > 0) {
        v->pid_src = pid;
        v->pid_ext = ext;
    }
    long long out = (ext + v->pid_offset) & 0x7FFF;
    if (((out - v->pid_last) & 0x7FFF) < 0x4000)
        v->pid_last = out;
    return out;
}

static int
check_positions(Py_ssize_t n, const long layout[4])
{
    if (layout[0] >= n || (layout[0] >= 0 && layout[1] == 15 && layout[0] + 1 >= n) || layout[2] >= n
            || layout[3] >= n) {
        PyErr_SetString(PyExc_IndexError, "VP8 descriptor position out of range");
        return -1;
    }
    return 0;
}

/* Vp8Rewriter._apply on the bytearray buf: a new reference to buf, to a widened copy, or None */
static PyObject *
vp8_apply(Vp8 *v, PyObject *buf, const long layout[4], int may_anchor)
{
    Py_ssize_t n = PyByteArray_GET_SIZE(buf);
    if (check_positions(n, layout) < 0)
        return NULL;
    unsigned char *b = (unsigned char *)PyByteArray_AS_STRING(buf);
    long pid_pos = layout[0], bits = layout[1], tl0_pos = layout[2], tk_pos = layout[3];
    if (tl0_pos >= 0) {
        long tl0 = b[tl0_pos];
        if (may_anchor && (v->tl0_anchor || !v->tl0_seen)) {
            v->tl0_offset = v->tl0_seen ? ((v->tl0_last + 1 - tl0) & 0xFF) : 0;
            v->tl0_last = (tl0 + v->tl0_offset - 1) & 0xFF;
            v->tl0_anchor = 0;
            v->tl0_seen = 1;
        } else if (!v->tl0_seen) {
            Py_RETURN_NONE;
        }
        long out = (tl0 + v->tl0_offset) & 0xFF;
        if (((out - v->tl0_last) & 0xFF) < 0x80)
            v->tl0_last = out;
        b[tl0_pos] = (unsigned char)out;
    }
    if (tk_pos >= 0) {
        long key = b[tk_pos] & 0x1F;
        if (may_anchor && (v->key_anchor || !v->key_seen)) {
            v->key_offset = v->key_seen ? ((v->key_last + 1 - key) & 0x1F) : 0;
            v->key_last = (key + v->key_offset - 1) & 0x1F;
            v->key_anchor = 0;
            v->key_seen = 1;
        } else if (!v->key_seen) {
            Py_RETURN_NONE;
        }
        long out = (key + v->key_offset) & 0x1F;
        if (((out - v->key_last) & 0x1F) < 0x10)
            v->key_last = out;
        b[tk_pos] = (unsigned char)((b[tk_pos] & 0xE0) | out);
    }
    if (pid_pos < 0) {
        Py_INCREF(buf);
        return buf;
    }
    long long pid = bits == 15 ? (((long long)(b[pid_pos] & 0x7F) << 8) | b[pid_pos + 1]) : b[pid_pos];
    long long ext;
    if (bits != v->pid_bits || !v->pid_seen) {
        if (!may_anchor)
            Py_RETURN_NONE;
        v->pid_anchor = 1;
    }
    if (v->pid_anchor && may_anchor) {
        v->pid_anchor = 0;
        v->pid_bits = (int)bits;
        v->pid_src = pid;
        v->pid_ext = pid;
        v->pid_offset = v->pid_seen ? ((v->pid_last + 1 - pid) & 0x7FFF) : 0;
        v->pid_seen = 1;
        v->pid_last = (pid + v->pid_offset - 1) & 0x7FFF;
        ext = pid;
    } else {
        long long d;
        if (bits == 15) {
            d = (pid - v->pid_src) & 0x7FFF;
            if (d >= 0x4000)
                d -= 0x8000;
        } else {
            d = (pid - v->pid_src) & 0x7F;
            if (d >= 0x40)
                d -= 0x80;
        }
        ext = v->pid_ext + d;
        if (d > 0 && may_anchor) {
            v->pid_src = pid;
            v->pid_ext = ext;
        }
    }
    long long out = (ext + v->pid_offset) & 0x7FFF;
    if (((out - v->pid_last) & 0x7FFF) < 0x4000)
        v->pid_last = out;
    if (bits == 15) {
        b[pid_pos] = (unsigned char)(0x80 | (out >> 8));
        b[pid_pos + 1] = (unsigned char)(out & 0xFF);
        Py_INCREF(buf);
        return buf;
    }
    PyObject *wide = PyByteArray_FromStringAndSize(NULL, n + 1);
    if (wide == NULL)
        return NULL;
    unsigned char *w = (unsigned char *)PyByteArray_AS_STRING(wide);
    memcpy(w, b, pid_pos);
    w[pid_pos] = (unsigned char)(0x80 | (out >> 8));
    w[pid_pos + 1] = (unsigned char)(out & 0xFF);
    memcpy(w + pid_pos + 2, b + pid_pos + 1, n - pid_pos - 1);
    return wide;
}

static int
parse_layout(PyObject *o, long out[4])
{
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 4) {
        PyErr_SetString(PyExc_TypeError, "layout must be a 4-tuple (or None)");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        out[i] = PyLong_AsLong(PyTuple_GET_ITEM(o, i));
        if (out[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *
Vp8_rewrite(Vp8 *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "offset", "source_ssrc", "layout", NULL};
    PyObject *buf, *ssrc_o = Py_None, *layout_o = Py_None;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|OO", kwlist, &buf, &offset, &ssrc_o, &layout_o))
        return NULL;
    if (!PyByteArray_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "buf must be a bytearray");
        return NULL;
    }
    if (ssrc_o != Py_None) {
        uint32_t ssrc;
        if (get_u32(ssrc_o, &ssrc, "source_ssrc") < 0)
            return NULL;
        if (!self->has_source || ssrc != self->source_ssrc) {
            if (self->has_source)
                vp8_switch(self);
            self->has_source = 1;
            self->source_ssrc = ssrc;
        }
    }
    long layout[4];
    Py_ssize_t n = PyByteArray_GET_SIZE(buf);
    unsigned char *b = (unsigned char *)PyByteArray_AS_STRING(buf);
    if (layout_o == Py_None) {
        if (vp8_layout(b, n, offset, layout) < 0)
            Py_RETURN_NONE;
    } else if (parse_layout(layout_o, layout) < 0) {
        return NULL;
    }
    if (layout[1] == 15 && layout[2] < 0 && layout[3] < 0) {
        if (check_positions(n, layout) < 0)
            return NULL;
        long long out = vp8_picture_id(self, ((long long)(b[layout[0]] & 0x7F) << 8) | b[layout[0] + 1], 0, 0);
        if (out >= 0) {
            b[layout[0]] = (unsigned char)(0x80 | (out >> 8));
            b[layout[0] + 1] = (unsigned char)(out & 0xFF);
            Py_INCREF(buf);
            return buf;
        }
    }
    return vp8_apply(self, buf, layout, 1);
}

static PyObject *
Vp8_picture_id(Vp8 *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pid", "source_ssrc", NULL};
    long long pid;
    PyObject *ssrc_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|O", kwlist, &pid, &ssrc_o))
        return NULL;
    uint32_t ssrc = 0;
    if (ssrc_o != Py_None && get_u32(ssrc_o, &ssrc, "source_ssrc") < 0)
        return NULL;
    return PyLong_FromLongLong(vp8_picture_id(self, pid, ssrc_o != Py_None, ssrc));
}

static PyObject *
Vp8_retransmit(Vp8 *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "offset", NULL};
    PyObject *buf;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On", kwlist, &buf, &offset))
        return NULL;
    if (!PyByteArray_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "buf must be a bytearray");
        return NULL;
    }
    long layout[4];
    if (vp8_layout((unsigned char *)PyByteArray_AS_STRING(buf), PyByteArray_GET_SIZE(buf), offset, layout) < 0)
        Py_RETURN_NONE;
    return vp8_apply(self, buf, layout, 0);
}

static PyObject *
Vp8_switch(Vp8 *self, PyObject *Py_UNUSED(ignored))
{
    vp8_switch(self);
    Py_RETURN_NONE;
}

static PyObject *
Vp8_get_last_picture_id(Vp8 *self, void *closure)
{
    if (!self->pid_seen)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(self->pid_last);
}

static PyObject *
Vp8_get_last_tl0picidx(Vp8 *self, void *closure)
{
    if (!self->tl0_seen)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->tl0_last);
}

static PyMethodDef Vp8_methods[] = {
    {"rewrite", (PyCFunction)(void (*)(void))Vp8_rewrite, METH_VARARGS | METH_KEYWORDS,
     "rewrite(buf, offset, source_ssrc=None, layout=None) -> bytearray | None"},
    {"picture_id", (PyCFunction)(void (*)(void))Vp8_picture_id, METH_VARARGS | METH_KEYWORDS,
     "picture_id(pid, source_ssrc=None) -> int (-1: use rewrite)"},
    {"retransmit", (PyCFunction)(void (*)(void))Vp8_retransmit, METH_VARARGS | METH_KEYWORDS,
     "retransmit(buf, offset) -> bytearray | None"},
    {"switch", (PyCFunction)Vp8_switch, METH_NOARGS, "re-anchor every field on the next packet"},
    {"__copy__", (PyCFunction)copy_state, METH_NOARGS, NULL},
    {NULL}
};

static PyGetSetDef Vp8_getset[] = {
    {"last_picture_id", (getter)Vp8_get_last_picture_id, NULL, NULL, NULL},
    {"last_tl0picidx", (getter)Vp8_get_last_tl0picidx, NULL, NULL, NULL},
    {NULL}
};

static PyTypeObject Vp8Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._fastpath.Vp8Rewriter",
    .tp_doc = "media.vp8.Vp8Rewriter in C (same API and results)",
    .tp_basicsize = sizeof(Vp8),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Vp8_init,
    .tp_methods = Vp8_methods,
    .tp_getset = Vp8_getset,
};


/* ---------------------------------------------------------------------------------------------
 * Lane and the fan-out: the per-subscriber loop of media.forwarder in C.
 *
 * ``Lane`` is the base class of media.forwarder.SlotSender: the fields the loop reads and writes
 * live in this struct (Python sees them as attributes).  ``fanout_video`` and ``fanout_audio``
 * do, for every lane of a source, what SlotSender.forward_video / forward_audio do, and hand a
 * lane to that Python method instead whenever the packet needs what only Python does (no compiled
 * sender for the peer yet, a VP8 descriptor other than a lone 15-bit PictureID, a PictureID anchor
 * due, rewriters that are not this module's).  Nothing is decided differently from Python. */

typedef struct {
    PyObject_HEAD
    PyObject *peer, *rewriter, *vp8, *pt_map, *out_ssrc;
    int ast_id;
    char waiting_keyframe;
    long long sent, octets, dropped;
} Lane;

#define LANE_OBJECTS(X) X(peer) X(rewriter) X(vp8) X(pt_map) X(out_ssrc)
GC_METHODS(Lane, LANE_OBJECTS)
GC_DEALLOC(Lane)

static PyMemberDef Lane_members[] = {
    {"peer", T_OBJECT, offsetof(Lane, peer), 0, NULL},
    {"rewriter", T_OBJECT, offsetof(Lane, rewriter), 0, NULL},
    {"vp8", T_OBJECT, offsetof(Lane, vp8), 0, NULL},
    {"pt_map", T_OBJECT, offsetof(Lane, pt_map), 0, NULL},
    {"out_ssrc", T_OBJECT, offsetof(Lane, out_ssrc), 0, NULL},
    {"ast_id", T_INT, offsetof(Lane, ast_id), 0, NULL},
    {"waiting_keyframe", T_BOOL, offsetof(Lane, waiting_keyframe), 0, NULL},
    {"sent", T_LONGLONG, offsetof(Lane, sent), 0, NULL},
    {"octets", T_LONGLONG, offsetof(Lane, octets), 0, NULL},
    {"dropped", T_LONGLONG, offsetof(Lane, dropped), 0, NULL},
    {NULL}
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._fastpath.Lane",
    .tp_doc = "the per-subscriber state the compiled fan-out reads (base of media.forwarder.SlotSender)",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_members = Lane_members,
};

static PyObject *str_send_rewritten, *str_forward_video, *str_forward_audio, *str_wait_for_keyframe;

/* The compiled Sender behind the lane's peer.send_rewritten (a new reference), or NULL with no
 * error set when there is none (the lane goes to Python), or NULL with an error. */
static Sender *
lane_sender(Lane *lane)
{
    if (lane->peer == NULL)
        return NULL;
    PyObject *method = PyObject_GetAttr(lane->peer, str_send_rewritten);
    if (method == NULL)
        return NULL;
    Sender *sender = NULL;
    if (PyCFunction_Check(method)) {
        PyObject *owner = PyCFunction_GET_SELF(method);
        if (owner != NULL && Py_TYPE(owner) == &SenderType) {
            sender = (Sender *)owner;
            Py_INCREF(sender);
        }
    }
    Py_DECREF(method);
    return sender;
}

/* pt_map[codec] as a payload type, -1 when absent, -2 on error */
static long
lane_pt(Lane *lane, PyObject *codec)
{
    if (lane->pt_map == NULL || !PyDict_Check(lane->pt_map))
        return -1;
    PyObject *pt = PyDict_GetItemWithError(lane->pt_map, codec);   /* borrowed */
    if (pt == NULL)
        return PyErr_Occurred() ? -2 : -1;
    long v = PyLong_AsLong(pt);
    return (v == -1 && PyErr_Occurred()) ? -2 : v;
}

static int
lane_out_ssrc(Lane *lane, unsigned long *out)
{
    if (lane->out_ssrc == NULL) {
        PyErr_SetString(PyExc_AttributeError, "lane without out_ssrc");
        return -1;
    }
    *out = PyLong_AsUnsignedLongMask(lane->out_ssrc);
    return (*out == (unsigned long)-1 && PyErr_Occurred()) ? -1 : 0;
}

#define HEAD_MAX 64


/* fanout_video(outs, frame, head, rest, codec, keyframe, seq, ts, ssrc, marker, vp8_mode, pid,
 *              pid_rel, ast, now) -> int
 * vp8_mode 0: no VP8 descriptor to rewrite (H.264); 1: a lone 15-bit PictureID ``pid`` at
 * ``pid_rel`` bytes into the payload; 2: another descriptor (every lane goes to Python).
 * Returns how many lanes stopped waiting for a keyframe here (the caller's Source.waiting). */
static PyObject *
fanout_video(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "fanout_video(outs, frame, head, rest, codec, keyframe, seq, ts, ssrc, "
                                         "marker, vp8_mode, pid, pid_rel, ast, now)");
        return NULL;
    }
    PyObject *outs = args[0], *frame = args[1], *codec = args[4], *now_o = args[14];
    if (!PyList_Check(outs)) {
        PyErr_SetString(PyExc_TypeError, "outs must be a list");
        return NULL;
    }
    int keyframe = PyObject_IsTrue(args[5]);
    if (keyframe < 0)
        return NULL;
    unsigned long seq, ts, ssrc, marker, ast, vp8_mode_u, pid_rel_u;
    if (masked(args[6], &seq) < 0 || masked(args[7], &ts) < 0 || masked(args[8], &ssrc) < 0
            || masked(args[9], &marker) < 0 || masked(args[13], &ast) < 0 || masked(args[10], &vp8_mode_u) < 0
            || masked(args[12], &pid_rel_u) < 0)
        return NULL;
    long vp8_mode = (long)vp8_mode_u, pid_rel = (long)pid_rel_u;   /* -1 stays -1 */
    long long pid = PyLong_AsLongLong(args[11]);
    if (pid == -1 && PyErr_Occurred())
        return NULL;
    double now = PyFloat_AsDouble(now_o);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_buffer h, r;
    if (PyObject_GetBuffer(args[2], &h, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[3], &r, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&h);
        return NULL;
    }
    PyObject *result = NULL;
    long stopped = 0;
    unsigned char with_ast[HEAD_MAX];
    if (h.len < 12 || h.len + 8 > HEAD_MAX) {
        PyErr_SetString(PyExc_ValueError, "head must hold 12 to 56 bytes");
        goto done;
    }
    /* the head with an abs-send-time extension (one-byte form, one element; the id per lane) */
    with_ast[0] = ((const unsigned char *)h.buf)[0] | 0x10;
    memcpy(with_ast + 1, (const unsigned char *)h.buf + 1, 11);
    with_ast[12] = 0xBE; with_ast[13] = 0xDE; with_ast[14] = 0; with_ast[15] = 1;
    with_ast[17] = (unsigned char)(ast >> 16); with_ast[18] = (unsigned char)(ast >> 8); with_ast[19] = (unsigned char)ast;
    memcpy(with_ast + 20, (const unsigned char *)h.buf + 12, h.len - 12);

    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(outs); i++) {
        PyObject *out = PyList_GET_ITEM(outs, i);   /* borrowed: held while used below */
        Py_INCREF(out);
        Lane *lane = (Lane *)out;
        int python = !PyObject_TypeCheck(out, &LaneType);
        if (!python && lane->waiting_keyframe && !keyframe) {
            Py_DECREF(out);
            continue;
        }
        Sender *sender = NULL;
        if (!python) {
            python = vp8_mode == 2 || lane->rewriter == NULL || Py_TYPE(lane->rewriter) != &RewriterType
                || lane->ast_id < 0 || lane->ast_id > 14;   /* (SlotSender allows 0..14 only) */
            if (!python && vp8_mode == 1) {
                Vp8 *v = (Vp8 *)lane->vp8;
                python = v == NULL || Py_TYPE(v) != &Vp8Type || !v->has_source || v->source_ssrc != (uint32_t)ssrc
                    || v->pid_anchor || v->pid_bits != 15;
            }
            if (!python) {
                sender = lane_sender(lane);
                if (sender == NULL) {
                    if (PyErr_Occurred()) {
                        Py_DECREF(out);
                        goto done;
                    }
                    python = 1;
                }
            }
        }
        if (python) {
            PyObject *rc = PyObject_CallMethodObjArgs(out, str_forward_video, frame, now_o, NULL);
            Py_DECREF(out);
            if (rc == NULL)
                goto done;
            Py_DECREF(rc);
            continue;
        }
        if (lane->waiting_keyframe) {
            lane->waiting_keyframe = 0;
            stopped++;
        }
        int ok = 0;
        long pt = lane_pt(lane, codec);
        unsigned long out_ssrc;
        if (pt == -2 || (pt >= 0 && lane_out_ssrc(lane, &out_ssrc) < 0)) {
            Py_DECREF(sender);
            Py_DECREF(out);
            goto done;
        }
        if (pt < 0) {
            lane->dropped++;
        } else {
            const unsigned char *head = h.buf;
            Py_ssize_t head_len = h.len, off = 12;
            if (lane->ast_id) {
                with_ast[16] = (unsigned char)(((unsigned)lane->ast_id << 4) | 2);
                head = with_ast;
                head_len = h.len + 8;
                off = 20;
            }
            uint32_t out_seq, out_ts;
            rw_map((Rewriter *)lane->rewriter, (uint32_t)(seq & 0xFFFF), (uint32_t)ts, (uint32_t)ssrc, 1, now,
                   &out_seq, &out_ts);
            long pid_at = -1;
            long long out_pid = 0;
            if (vp8_mode == 1) {
                out_pid = vp8_picture_id((Vp8 *)lane->vp8, pid, 1, (uint32_t)ssrc);   /* >= 0: checked above */
                pid_at = (long)off + pid_rel;
            }
            unsigned long v[4] = {(marker | (unsigned long)pt) & 0xFF, out_seq, out_ts, out_ssrc};
            ok = sender_send(sender, head, head_len, r.buf, r.len, v, pid_at, (long)out_pid, args[3]);
            if (ok < 0) {
                Py_DECREF(sender);
                Py_DECREF(out);
                goto done;
            }
            if (ok) {
                lane->sent++;
                lane->octets += head_len - off + r.len;
            } else {
                lane->dropped++;
                PyObject *rc = PyObject_CallMethodObjArgs(out, str_wait_for_keyframe, now_o, NULL);
                if (rc == NULL) {
                    Py_DECREF(sender);
                    Py_DECREF(out);
                    goto done;
                }
                Py_DECREF(rc);
            }
        }
        Py_DECREF(sender);
        Py_DECREF(out);
    }
    result = PyLong_FromLong(stopped);
done:
    PyBuffer_Release(&r);
    PyBuffer_Release(&h);
    return result;
}

/* fanout_audio(outs, payload, codec, seq, ts, ssrc, marker, now) -> None: SlotSender.forward_audio
 * for every lane */
static PyObject *
fanout_audio(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "fanout_audio(outs, payload, codec, seq, ts, ssrc, marker, now)");
        return NULL;
    }
    PyObject *outs = args[0], *codec = args[2], *now_o = args[7];
    if (!PyList_Check(outs)) {
        PyErr_SetString(PyExc_TypeError, "outs must be a list");
        return NULL;
    }
    unsigned long seq, ts, ssrc, marker;
    if (masked(args[3], &seq) < 0 || masked(args[4], &ts) < 0 || masked(args[5], &ssrc) < 0
            || masked(args[6], &marker) < 0)
        return NULL;
    double now = PyFloat_AsDouble(now_o);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_buffer p;
    if (PyObject_GetBuffer(args[1], &p, PyBUF_SIMPLE) < 0)
        return NULL;
    static const unsigned char fixed[12] = {0x80};
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(outs); i++) {
        PyObject *out = PyList_GET_ITEM(outs, i);
        Py_INCREF(out);
        Lane *lane = (Lane *)out;
        Sender *sender = NULL;
        if (PyObject_TypeCheck(out, &LaneType) && lane->rewriter != NULL && Py_TYPE(lane->rewriter) == &RewriterType) {
            sender = lane_sender(lane);
            if (sender == NULL && PyErr_Occurred()) {
                Py_DECREF(out);
                goto done;
            }
        }
        if (sender == NULL) {
            PyObject *rc = PyObject_VectorcallMethod(str_forward_audio,
                                                     (PyObject *[]){out, args[1], codec, args[3], args[4], args[5],
                                                                    args[6], now_o},
                                                     8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(out);
            if (rc == NULL)
                goto done;
            Py_DECREF(rc);
            continue;
        }
        long pt = lane_pt(lane, codec);
        unsigned long out_ssrc;
        if (pt == -2 || (pt >= 0 && lane_out_ssrc(lane, &out_ssrc) < 0)) {
            Py_DECREF(sender);
            Py_DECREF(out);
            goto done;
        }
        if (pt < 0) {
            lane->dropped++;
        } else {
            uint32_t out_seq, out_ts;
            rw_map((Rewriter *)lane->rewriter, (uint32_t)(seq & 0xFFFF), (uint32_t)ts, (uint32_t)ssrc, 1, now,
                   &out_seq, &out_ts);
            unsigned long v[4] = {(marker | (unsigned long)pt) & 0xFF, out_seq, out_ts, out_ssrc};
            int ok = sender_send(sender, fixed, 12, p.buf, p.len, v, -1, 0, args[1]);
            if (ok < 0) {
                Py_DECREF(sender);
                Py_DECREF(out);
                goto done;
            }
            if (ok) {
                lane->sent++;
                lane->octets += p.len;
            } else {
                lane->dropped++;
            }
        }
        Py_DECREF(sender);
        Py_DECREF(out);
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&p);
    return result;
}


/* ---------------------------------------------------------------------------------------------
 * The receive side: ``Receive`` and ``Reader``.
 *
 * ``Receive(unprotect, unprotect_rtcp, ctx, session, peer, on_failure)``: what the function of
 * media.rtc_adapter._Srtp.receiver does with one incoming SRTP/SRTCP datagram: unprotect it with
 * libsrtp (function pointers from pylibsrtp's binding, pylibsrtp's session), then RTCP to
 * ``peer._deliver_rtcp(packet)``, RTP to ``peer.on_rtp(packet, mid, arrival)`` with the MID from
 * ``peer._ssrc_mid`` (``peer._learn_mid(packet, ssrc)`` fills a miss) and ``time.monotonic()``'s
 * clock; an exception of on_rtp goes to ``on_failure(exc)`` (logged there) and the packet is
 * dropped.  Counts ``packets`` (RTP unprotected) and ``errors`` (too short or long, failed
 * authentication or replay).  Called with the datagram (bytes-like), or by a Reader on its own
 * buffer (no copy).
 *
 * ``Reader(transport, fd, protocol, max_size)``: asyncio's datagram read callback for one ICE
 * socket, as media.rtc_adapter._drain_reader: up to DRAIN_MAX datagrams per call; SRTP/SRTCP
 * (first byte 128..191, RFC 7983) to ``protocol.peer._receive`` once the peer has one, the rest
 * to ``protocol.datagram_received(data, addr)``; errors to ``protocol.error_received``. */

#define RX_CAPACITY 1500     /* pylibsrtp's Session buffer: longer datagrams are errors there too */
#define DRAIN_MAX 32
#define DATAGRAM_MAX 65536

typedef int (*unprotect_fn)(void *ctx, void *data, int *len);

typedef struct {
    PyObject_HEAD
    unprotect_fn unprotect, unprotect_rtcp;
    void *ctx;
    PyObject *session, *peer, *on_failure;
    unsigned long long packets, errors;
    unsigned char buffer[RX_CAPACITY + 16];
} Receive;

static PyTypeObject ReceiveType;
static PyObject *str_on_rtp, *str_ssrc_mid, *str_learn_mid, *str_deliver_rtcp, *str_peer, *str_receive, *str_closing,
    *str_datagram_received, *str_error_received;

static int
Receive_init(Receive *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"unprotect", "unprotect_rtcp", "ctx", "session", "peer", "on_failure", NULL};
    unsigned long long unprotect, unprotect_rtcp, ctx;
    PyObject *session, *peer, *on_failure;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKKOOO", kwlist, &unprotect, &unprotect_rtcp, &ctx, &session, &peer,
                                     &on_failure))
        return -1;
    if (!unprotect || !unprotect_rtcp || !ctx) {
        PyErr_SetString(PyExc_ValueError, "null libsrtp function or context");
        return -1;
    }
    self->unprotect = (unprotect_fn)(uintptr_t)unprotect;
    self->unprotect_rtcp = (unprotect_fn)(uintptr_t)unprotect_rtcp;
    self->ctx = (void *)(uintptr_t)ctx;
    Py_INCREF(session); Py_XSETREF(self->session, session);
    Py_INCREF(peer); Py_XSETREF(self->peer, peer);
    Py_INCREF(on_failure); Py_XSETREF(self->on_failure, on_failure);
    return 0;
}

#define RECEIVE_OBJECTS(X) X(session) X(peer) X(on_failure)
GC_METHODS(Receive, RECEIVE_OBJECTS)
GC_DEALLOC(Receive)

/* One datagram of n bytes in buf (writable, at least n + 16 bytes): 0 done (delivered or
 * dropped), -1 Python error (from _deliver_rtcp, _learn_mid or on_failure). */
static int
receive_raw(Receive *self, unsigned char *buf, Py_ssize_t n)
{
    if (self->peer == NULL || self->ctx == NULL)
        return 0;
    if (n > RX_CAPACITY || n < 2) {
        self->errors++;
        return 0;
    }
    int len = (int)n;
    if (buf[1] >= 192 && buf[1] <= 223) {
        if (self->unprotect_rtcp(self->ctx, buf, &len) != 0) {
            self->errors++;
            return 0;
        }
        PyObject *packet = PyBytes_FromStringAndSize((const char *)buf, len);
        if (packet == NULL)
            return -1;
        PyObject *rc = PyObject_CallMethodObjArgs(self->peer, str_deliver_rtcp, packet, NULL);
        Py_DECREF(packet);
        Py_XDECREF(rc);
        return rc == NULL ? -1 : 0;
    }
    if (self->unprotect(self->ctx, buf, &len) != 0) {
        self->errors++;
        return 0;
    }
    self->packets++;
    PyObject *handler = PyObject_GetAttr(self->peer, str_on_rtp);
    if (handler == NULL)
        return -1;
    if (handler == Py_None || len < 12) {
        Py_DECREF(handler);
        return 0;
    }
    int result = -1;
    PyObject *packet = NULL, *ssrc = NULL, *table = NULL, *mid = NULL, *arrival = NULL, *rc = NULL;
    struct timespec now;
    if ((packet = PyBytes_FromStringAndSize((const char *)buf, len)) == NULL)
        goto done;
    if ((ssrc = PyLong_FromUnsignedLong(get32(buf + 8))) == NULL)
        goto done;
    if ((table = PyObject_GetAttr(self->peer, str_ssrc_mid)) == NULL)
        goto done;
    if (!PyDict_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "peer._ssrc_mid must be a dict");
        goto done;
    }
    mid = PyDict_GetItemWithError(table, ssrc);   /* borrowed */
    if (mid != NULL) {
        Py_INCREF(mid);
    } else if (PyErr_Occurred() || (mid = PyObject_CallMethodObjArgs(self->peer, str_learn_mid, packet, ssrc, NULL)) == NULL) {
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((arrival = PyFloat_FromDouble((double)now.tv_sec + now.tv_nsec * 1e-9)) == NULL)
        goto done;
    rc = PyObject_CallFunctionObjArgs(handler, packet, mid, arrival, NULL);
    if (rc == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            goto done;       /* KeyboardInterrupt, SystemExit: up, as in Python */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *logged = PyObject_CallFunctionObjArgs(self->on_failure, value ? value : Py_None, NULL);
        Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
        if (logged == NULL)
            goto done;
        Py_DECREF(logged);
    }
    result = 0;
done:
    Py_XDECREF(rc);
    Py_XDECREF(arrival);
    Py_XDECREF(mid);
    Py_XDECREF(table);
    Py_XDECREF(ssrc);
    Py_XDECREF(packet);
    Py_DECREF(handler);
    return result;
}

static PyObject *
Receive_call(Receive *self, PyObject *args, PyObject *kwds)
{
    PyObject *data;
    if (!PyArg_ParseTuple(args, "O", &data))
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len > RX_CAPACITY || b.len < 2) {
        PyBuffer_Release(&b);
        self->errors++;
        Py_RETURN_NONE;
    }
    memcpy(self->buffer, b.buf, b.len);
    Py_ssize_t n = b.len;
    PyBuffer_Release(&b);
    if (receive_raw(self, self->buffer, n) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Receive_close(Receive *self, PyObject *Py_UNUSED(ignored))
{
    self->ctx = NULL;     /* the session may go: drop everything from now on */
    Py_CLEAR(self->session);
    Py_RETURN_NONE;
}

static PyMemberDef Receive_members[] = {
    {"packets", T_ULONGLONG, offsetof(Receive, packets), READONLY, "RTP packets unprotected"},
    {"errors", T_ULONGLONG, offsetof(Receive, errors), READONLY, "datagrams dropped: size, authentication, replay"},
    {NULL}
};

static PyMethodDef Receive_methods[] = {
    {"close", (PyCFunction)Receive_close, METH_NOARGS, "drop every datagram from now on, release the session"},
    {NULL}
};

static PyTypeObject ReceiveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._fastpath.Receive",
    .tp_doc = "unprotect one SRTP/SRTCP datagram and hand it to the PacketPeer (media.rtc_adapter)",
    .tp_basicsize = sizeof(Receive),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Receive_init,
    .tp_dealloc = (destructor)Receive_dealloc,
    .tp_traverse = (traverseproc)Receive_traverse,
    .tp_clear = (inquiry)Receive_clear,
    .tp_call = (ternaryfunc)Receive_call,
    .tp_members = Receive_members,
    .tp_methods = Receive_methods,
};


typedef struct {
    PyObject_HEAD
    PyObject *transport, *protocol;
    int fd;
    Py_ssize_t max_size;
    unsigned char *buffer;
} Reader;

static int
Reader_init(Reader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"transport", "fd", "protocol", "max_size", NULL};
    PyObject *transport, *protocol;
    int fd;
    Py_ssize_t max_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiOn", kwlist, &transport, &fd, &protocol, &max_size))
        return -1;
    if (fd < 0 || max_size < 1 || max_size > DATAGRAM_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad descriptor or max_size");
        return -1;
    }
    if (self->buffer == NULL && (self->buffer = PyMem_Malloc(DATAGRAM_MAX + 16)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->fd = fd;
    self->max_size = max_size;
    Py_INCREF(transport); Py_XSETREF(self->transport, transport);
    Py_INCREF(protocol); Py_XSETREF(self->protocol, protocol);
    return 0;
}

#define READER_OBJECTS(X) X(transport) X(protocol)
GC_METHODS(Reader, READER_OBJECTS)

static void
Reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    PyMem_Free(self->buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* (host, port) or (host, port, flowinfo, scope_id), as Python's socket module builds them */
static PyObject *
address_tuple(const struct sockaddr_storage *addr, socklen_t len)
{
    char host[NI_MAXHOST];
    int rc = getnameinfo((const struct sockaddr *)addr, len, host, sizeof(host), NULL, 0, NI_NUMERICHOST);
    if (rc != 0) {
        PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(rc));
        return NULL;
    }
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        return Py_BuildValue("(siII)", host, ntohs(v6->sin6_port), (unsigned)ntohl(v6->sin6_flowinfo),
                             (unsigned)v6->sin6_scope_id);
    }
    return Py_BuildValue("(si)", host, ntohs(((const struct sockaddr_in *)addr)->sin_port));
}

static PyObject *
Reader_call(Reader *self, PyObject *args, PyObject *kwds)
{
    if (self->transport == NULL || self->protocol == NULL)
        Py_RETURN_NONE;
    for (int i = 0; i < DRAIN_MAX; i++) {
        PyObject *closing = PyObject_GetAttr(self->transport, str_closing);
        if (closing == NULL)
            return NULL;
        int closed = PyObject_IsTrue(closing);
        Py_DECREF(closing);
        if (closed)
            return closed < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
        struct sockaddr_storage addr;
        socklen_t addrlen = sizeof(addr);
        ssize_t n = recvfrom(self->fd, self->buffer, (size_t)self->max_size, MSG_DONTWAIT, (struct sockaddr *)&addr,
                             &addrlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                Py_RETURN_NONE;
            PyObject *type, *value, *tb;
            PyErr_SetFromErrno(PyExc_OSError);
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            PyObject *rc = PyObject_CallMethodObjArgs(self->protocol, str_error_received, value, NULL);
            Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
            if (rc == NULL)
                return NULL;
            Py_DECREF(rc);
            Py_RETURN_NONE;
        }
        if (n > 0 && self->buffer[0] > 127 && self->buffer[0] < 192) {
            PyObject *peer = PyObject_GetAttr(self->protocol, str_peer);
            if (peer == NULL)
                return NULL;
            PyObject *receive = NULL;
            if (peer != Py_None && (receive = PyObject_GetAttr(peer, str_receive)) == NULL) {
                Py_DECREF(peer);
                return NULL;
            }
            Py_DECREF(peer);
            if (receive != NULL && receive != Py_None) {
                int rc;
                if (Py_TYPE(receive) == &ReceiveType) {
                    rc = receive_raw((Receive *)receive, self->buffer, n);
                } else {
                    PyObject *data = PyBytes_FromStringAndSize((const char *)self->buffer, n);
                    PyObject *r = data ? PyObject_CallFunctionObjArgs(receive, data, NULL) : NULL;
                    Py_XDECREF(data);
                    Py_XDECREF(r);
                    rc = r == NULL ? -1 : 0;
                }
                Py_DECREF(receive);
                if (rc < 0)
                    return NULL;
                continue;
            }
            Py_XDECREF(receive);
        }
        PyObject *data = PyBytes_FromStringAndSize((const char *)self->buffer, n);
        if (data == NULL)
            return NULL;
        PyObject *address = address_tuple(&addr, addrlen);
        if (address == NULL) {
            Py_DECREF(data);
            return NULL;
        }
        PyObject *rc = PyObject_CallMethodObjArgs(self->protocol, str_datagram_received, data, address, NULL);
        Py_DECREF(data);
        Py_DECREF(address);
        if (rc == NULL)
            return NULL;
        Py_DECREF(rc);
    }
    Py_RETURN_NONE;
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._fastpath.Reader",
    .tp_doc = "asyncio's read callback for one ICE socket: drains it, SRTP to the peer's Receive",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_call = (ternaryfunc)Reader_call,
};


static PyMethodDef fastpath_functions[] = {
    {"fanout_video", (PyCFunction)(void (*)(void))fanout_video, METH_FASTCALL,
     "fanout_video(outs, frame, head, rest, codec, keyframe, seq, ts, ssrc, marker, vp8_mode, pid, pid_rel, ast, now)"
     " -> int: SlotSender.forward_video for every lane; the number that stopped waiting for a keyframe"},
    {"fanout_audio", (PyCFunction)(void (*)(void))fanout_audio, METH_FASTCALL,
     "fanout_audio(outs, payload, codec, seq, ts, ssrc, marker, now): SlotSender.forward_audio for every lane"},
    {NULL}
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "media._fastpath",
    .m_doc = "The SFU's per-packet fan-out in C: slot rewriters, the loop over a source's slots, SRTP protect "
             "and sendto (media.native; the Python modules are the reference).",
    .m_size = -1,
    .m_methods = fastpath_functions,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&SenderType) < 0 || PyType_Ready(&RewriterType) < 0 || PyType_Ready(&Vp8Type) < 0
            || PyType_Ready(&LaneType) < 0 || PyType_Ready(&ReceiveType) < 0 || PyType_Ready(&ReaderType) < 0)
        return NULL;
    if ((str_send_rewritten = PyUnicode_InternFromString("send_rewritten")) == NULL
            || (str_forward_video = PyUnicode_InternFromString("forward_video")) == NULL
            || (str_forward_audio = PyUnicode_InternFromString("forward_audio")) == NULL
            || (str_wait_for_keyframe = PyUnicode_InternFromString("_wait_for_keyframe")) == NULL
            || (str_on_rtp = PyUnicode_InternFromString("on_rtp")) == NULL
            || (str_ssrc_mid = PyUnicode_InternFromString("_ssrc_mid")) == NULL
            || (str_learn_mid = PyUnicode_InternFromString("_learn_mid")) == NULL
            || (str_deliver_rtcp = PyUnicode_InternFromString("_deliver_rtcp")) == NULL
            || (str_peer = PyUnicode_InternFromString("peer")) == NULL
            || (str_receive = PyUnicode_InternFromString("_receive")) == NULL
            || (str_closing = PyUnicode_InternFromString("_closing")) == NULL
            || (str_datagram_received = PyUnicode_InternFromString("datagram_received")) == NULL
            || (str_error_received = PyUnicode_InternFromString("error_received")) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    struct { const char *name; PyTypeObject *type; } types[] = {
        {"Sender", &SenderType}, {"SlotRewriter", &RewriterType}, {"Vp8Rewriter", &Vp8Type}, {"Lane", &LaneType},
        {"Receive", &ReceiveType}, {"Reader", &ReaderType},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyModule_AddObjectRef(m, types[i].name, (PyObject *)types[i].type) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
