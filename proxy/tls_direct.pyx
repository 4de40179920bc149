# cython: language_level=3, binding=False
"""OpenSSL's ``SSL_read_ex`` / ``SSL_write_ex`` / ``SSL_pending`` called on the ``SSL`` of an ``ssl``
module TLS connection over memory BIOs (uvloop's), from C, while holding the GIL.

Every TLS record in and out of uvloop's ``SSLProtocol`` goes through ``SSLObject.read``/``write``/
``pending`` (``proxy.tls.DirectSSLObject`` already gives uvloop the ``_ssl`` module's C methods rather
than ``ssl.py``'s Python ones). The ``_ssl`` methods still parse their arguments, release and take back
the GIL around each call (memory BIOs never block: nothing to wait for), and a ``read(n)`` allocates an
``n``-byte bytes object (uvloop asks for 256 KiB) then shrinks it. Here a read of up to one record
(16 KiB of plaintext at most) goes to a buffer on the C stack and becomes a bytes object of its exact
size; a write passes the caller's buffer; neither lets go of the GIL.

Only success is handled here. Anything else (``SSL_ERROR_WANT_READ``, a close_notify, a fatal alert,
a zero or negative size) is handed to the ``_ssl`` method itself, which repeats the call — OpenSSL
answers a repeated call in the same state the same way — and returns or raises exactly what the ``ssl``
module does. So the answers are the ``ssl`` module's, and ``tests/proxy/test_direct_ssl_objects.py``
checks the two side by side.

The ``SSL *`` is read from the ``_ssl._SSLSocket`` object: its C layout starts with ``PyObject_HEAD``,
a ``PyObject *`` (the socket's weak reference) and the ``SSL *`` in every CPython from 3.8 to 3.13.
``attach`` uses it only on those versions and only after checking it against OpenSSL itself: the
``SSL_CTX`` it belongs to must be the context object's, and its side (server or client) the object's.
The OpenSSL functions are looked up in the ``libssl`` the ``_ssl`` module loaded (``dlopen`` with
``RTLD_NOLOAD``: the same library, never a second copy); where that fails, or ``_ssl`` has OpenSSL built
in, ``attach`` answers None and ``proxy.tls`` keeps the ``_ssl`` methods.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from libc.limits cimport INT_MAX

import asyncio
import ssl
import sys

import _ssl  # loads libssl (``_libssl_path``); its types are checked in ``_checked_ssl``

cdef extern from *:
    """
    #include <dlfcn.h>
    typedef struct { PyObject_HEAD PyObject *weak_socket; void *ssl; } kg_ssl_socket_head;
    typedef struct { PyObject_HEAD void *ctx; } kg_ssl_context_head;
    typedef int (*kg_rw_ex_fn)(void *, void *, size_t, size_t *);
    typedef int (*kg_of_ssl_fn)(const void *);
    typedef void *(*kg_ctx_of_ssl_fn)(const void *);
    static kg_rw_ex_fn kg_SSL_read_ex = NULL;
    static kg_rw_ex_fn kg_SSL_write_ex = NULL;
    static kg_of_ssl_fn kg_SSL_pending = NULL;
    static kg_of_ssl_fn kg_SSL_is_server = NULL;
    static kg_ctx_of_ssl_fn kg_SSL_get_SSL_CTX = NULL;
    /* for TLSTransport: the connection, its BIOs (below) and the error queue (libcrypto's functions are
       found through libssl) */
    typedef int (*kg_get_error_fn)(const void *, int);
    typedef int (*kg_shutdown_fn)(void *);
    typedef void *(*kg_get_bio_fn)(const void *);
    typedef void (*kg_void_fn)(void);
    static kg_get_error_fn kg_SSL_get_error = NULL;
    static kg_shutdown_fn kg_SSL_shutdown = NULL;
    static kg_get_bio_fn kg_SSL_get_rbio = NULL;
    static kg_get_bio_fn kg_SSL_get_wbio = NULL;
    static kg_void_fn kg_ERR_clear_error = NULL;
    typedef unsigned long (*kg_peek_fn)(void);
    static kg_peek_fn kg_ERR_peek_error = NULL;
    /* The thread's OpenSSL error queue emptied before a read or write (``SSL_get_error`` reads it):
       looked at first, since clearing it walks all its slots even when it is empty (~500 instructions,
       two or three times a request). */
    static void kg_clear_errors(void) {
        if (kg_ERR_peek_error() != 0) kg_ERR_clear_error();
    }
    static kg_of_ssl_fn kg_SSL_has_pending = NULL;
    static int kg_layer_resolved = 0;

    /* TLSTransport's own BIOs (a BIO_METHOD each way): OpenSSL reads the received bytes where they are
       (in the bytes object the TCP transport gave) and every record it writes becomes a bytes object at
       once, appended to the connection's ``sent`` list. A memory BIO copies the bytes in, zero-fills as it
       grows, and copies them out again: two copies and a memset more per byte each way. */
    typedef void *(*kg_meth_new_fn)(int, const char *);
    typedef int (*kg_meth_set_fn)(void *, void *);
    typedef void *(*kg_bio_new_fn)(const void *);
    typedef void (*kg_bio_set_data_fn)(void *, void *);
    typedef void *(*kg_bio_get_data_fn)(void *);
    typedef void (*kg_bio_set_int_fn)(void *, int);
    typedef int (*kg_new_index_fn)(void);
    typedef void (*kg_set_bio_fn)(void *, void *, void *);
    typedef int (*kg_bio_free_fn)(void *);
    static kg_meth_new_fn kg_BIO_meth_new = NULL;
    static kg_meth_set_fn kg_BIO_meth_set_write_ex = NULL;
    static kg_meth_set_fn kg_BIO_meth_set_read_ex = NULL;
    static kg_meth_set_fn kg_BIO_meth_set_ctrl = NULL;
    static kg_bio_new_fn kg_BIO_new = NULL;
    static kg_bio_set_data_fn kg_BIO_set_data = NULL;
    static kg_bio_get_data_fn kg_BIO_get_data = NULL;
    static kg_bio_set_int_fn kg_BIO_set_init = NULL;
    static kg_bio_set_int_fn kg_BIO_set_flags = NULL;
    static kg_bio_set_int_fn kg_BIO_clear_flags = NULL;
    static kg_new_index_fn kg_BIO_get_new_index = NULL;
    static kg_set_bio_fn kg_SSL_set_bio = NULL;
    static kg_bio_free_fn kg_BIO_free = NULL;
    static void *kg_in_method = NULL;
    static void *kg_out_method = NULL;

    /* One connection's side of the BIOs, inside its TLSTransport. ``in_ptr``/``in_len``: the received
       bytes OpenSSL has not read yet (the transport holds the object they are in); ``sent``: the list the
       records go to (the transport's; NULL once it let go of the connection). */
    typedef struct { const char *in_ptr; size_t in_len; PyObject *sent; } kg_tls_io;

    #define KG_BIO_FLAGS_READ 0x01
    #define KG_BIO_FLAGS_SHOULD_RETRY 0x08
    #define KG_BIO_RETRY_FLAGS 0x0f

    static int kg_in_read(void *b, char *buf, size_t size, size_t *got) {
        kg_tls_io *io = (kg_tls_io *)kg_BIO_get_data(b);
        kg_BIO_clear_flags(b, KG_BIO_RETRY_FLAGS);
        *got = 0;
        if (io == NULL || io->in_len == 0) {
            kg_BIO_set_flags(b, KG_BIO_FLAGS_READ | KG_BIO_FLAGS_SHOULD_RETRY);  /* more later */
            return 0;
        }
        size_t n = size < io->in_len ? size : io->in_len;
        memcpy(buf, io->in_ptr, n);
        io->in_ptr += n;
        io->in_len -= n;
        *got = n;
        return 1;
    }

    static int kg_out_write(void *b, const char *data, size_t n, size_t *written) {
        kg_tls_io *io = (kg_tls_io *)kg_BIO_get_data(b);
        int ok = 0;
        kg_BIO_clear_flags(b, KG_BIO_RETRY_FLAGS);
        *written = 0;
        if (io == NULL || io->sent == NULL || n > (size_t)PY_SSIZE_T_MAX) return 0;
        /* The ``_ssl`` module lets go of the GIL around its calls (the handshake's); this side's own
           calls hold it: either way it is held here. */
        PyGILState_STATE gil = PyGILState_Ensure();
        PyObject *chunk = PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
        if (chunk != NULL) {
            ok = PyList_Append(io->sent, chunk) == 0;
            Py_DECREF(chunk);
        }
        if (!ok) PyErr_Clear();  /* out of memory: the write fails, and with it the connection */
        PyGILState_Release(gil);
        if (ok) *written = n;
        return ok;
    }

    static long kg_io_ctrl(int cmd, size_t pending) {
        switch (cmd) {
        case 10: /* BIO_CTRL_PENDING */
            return (long)pending;
        case 11: /* BIO_CTRL_FLUSH: records are handed over as they are written */
        case 12: /* BIO_CTRL_DUP */
            return 1;
        default: /* BIO_CTRL_WPENDING (nothing waits in the BIO), kTLS and the rest: not supported */
            return 0;
        }
    }
    static long kg_in_ctrl(void *b, int cmd, long num, void *ptr) {
        kg_tls_io *io = (kg_tls_io *)kg_BIO_get_data(b);
        return kg_io_ctrl(cmd, io == NULL ? 0 : io->in_len);
    }
    static long kg_out_ctrl(void *b, int cmd, long num, void *ptr) {
        return kg_io_ctrl(cmd, 0);
    }

    /* The two BIO_METHODs, made once when the functions are looked up (``kg_resolve``): 0 where OpenSSL
       refused (then the layer is not used: uvloop's TLS transport is). */
    static int kg_make_methods(void) {
        if (kg_in_method != NULL && kg_out_method != NULL) return 1;  /* looked up again: made already */
        int type = kg_BIO_get_new_index();
        if (type == -1) return 0;
        type |= 0x0400;  /* BIO_TYPE_SOURCE_SINK */
        void *in = kg_BIO_meth_new(type, "kubegate TLS received");
        void *out = kg_BIO_meth_new(type, "kubegate TLS sent");
        if (in == NULL || out == NULL) return 0;  /* (not freed: at most once per process) */
        if (!kg_BIO_meth_set_read_ex(in, (void *)kg_in_read) || !kg_BIO_meth_set_ctrl(in, (void *)kg_in_ctrl)
            || !kg_BIO_meth_set_write_ex(out, (void *)kg_out_write) || !kg_BIO_meth_set_ctrl(out, (void *)kg_out_ctrl))
            return 0;
        kg_in_method = in;
        kg_out_method = out;
        return 1;
    }

    /* Puts the two BIOs on ``ssl`` (in place of the memory BIOs the ``ssl`` module made, which keep only
       the references their Python objects hold); 0 where a BIO could not be made. */
    static int kg_attach_io(void *ssl, kg_tls_io *io) {
        void *rbio = kg_BIO_new(kg_in_method);
        void *wbio = rbio == NULL ? NULL : kg_BIO_new(kg_out_method);
        if (wbio == NULL) {
            if (rbio != NULL) kg_BIO_free(rbio);
            return 0;
        }
        kg_BIO_set_data(rbio, io);
        kg_BIO_set_data(wbio, io);
        kg_BIO_set_init(rbio, 1);
        kg_BIO_set_init(wbio, 1);
        kg_SSL_set_bio(ssl, rbio, wbio);
        return 1;
    }

    /* The connection's BIOs no longer see ``io`` (the ``SSLObject`` may outlive the transport). */
    static void kg_detach_io(void *ssl) {
        void *rbio = kg_SSL_get_rbio(ssl);
        void *wbio = kg_SSL_get_wbio(ssl);
        if (rbio != NULL) kg_BIO_set_data(rbio, NULL);
        if (wbio != NULL) kg_BIO_set_data(wbio, NULL);
    }

    static int kg_resolve(const char *path) {
        void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (lib == NULL) return 0;
        kg_SSL_read_ex = (kg_rw_ex_fn)dlsym(lib, "SSL_read_ex");
        kg_SSL_write_ex = (kg_rw_ex_fn)dlsym(lib, "SSL_write_ex");
        kg_SSL_pending = (kg_of_ssl_fn)dlsym(lib, "SSL_pending");
        kg_SSL_is_server = (kg_of_ssl_fn)dlsym(lib, "SSL_is_server");
        kg_SSL_get_SSL_CTX = (kg_ctx_of_ssl_fn)dlsym(lib, "SSL_get_SSL_CTX");
        kg_SSL_get_error = (kg_get_error_fn)dlsym(lib, "SSL_get_error");
        kg_SSL_shutdown = (kg_shutdown_fn)dlsym(lib, "SSL_shutdown");
        kg_SSL_get_rbio = (kg_get_bio_fn)dlsym(lib, "SSL_get_rbio");
        kg_SSL_get_wbio = (kg_get_bio_fn)dlsym(lib, "SSL_get_wbio");
        kg_ERR_clear_error = (kg_void_fn)dlsym(lib, "ERR_clear_error");
        kg_ERR_peek_error = (kg_peek_fn)dlsym(lib, "ERR_peek_error");
        kg_SSL_has_pending = (kg_of_ssl_fn)dlsym(lib, "SSL_has_pending");
        kg_BIO_meth_new = (kg_meth_new_fn)dlsym(lib, "BIO_meth_new");
        kg_BIO_meth_set_write_ex = (kg_meth_set_fn)dlsym(lib, "BIO_meth_set_write_ex");
        kg_BIO_meth_set_read_ex = (kg_meth_set_fn)dlsym(lib, "BIO_meth_set_read_ex");
        kg_BIO_meth_set_ctrl = (kg_meth_set_fn)dlsym(lib, "BIO_meth_set_ctrl");
        kg_BIO_new = (kg_bio_new_fn)dlsym(lib, "BIO_new");
        kg_BIO_set_data = (kg_bio_set_data_fn)dlsym(lib, "BIO_set_data");
        kg_BIO_get_data = (kg_bio_get_data_fn)dlsym(lib, "BIO_get_data");
        kg_BIO_set_init = (kg_bio_set_int_fn)dlsym(lib, "BIO_set_init");
        kg_BIO_set_flags = (kg_bio_set_int_fn)dlsym(lib, "BIO_set_flags");
        kg_BIO_clear_flags = (kg_bio_set_int_fn)dlsym(lib, "BIO_clear_flags");
        kg_BIO_get_new_index = (kg_new_index_fn)dlsym(lib, "BIO_get_new_index");
        kg_SSL_set_bio = (kg_set_bio_fn)dlsym(lib, "SSL_set_bio");
        kg_BIO_free = (kg_bio_free_fn)dlsym(lib, "BIO_free");
        kg_layer_resolved = kg_SSL_get_error && kg_SSL_shutdown && kg_SSL_get_rbio && kg_SSL_get_wbio
            && kg_ERR_clear_error && kg_ERR_peek_error && kg_SSL_has_pending && kg_BIO_meth_new && kg_BIO_meth_set_write_ex
            && kg_BIO_meth_set_read_ex && kg_BIO_meth_set_ctrl && kg_BIO_new && kg_BIO_set_data
            && kg_BIO_get_data && kg_BIO_set_init && kg_BIO_set_flags && kg_BIO_clear_flags
            && kg_BIO_get_new_index && kg_SSL_set_bio && kg_BIO_free && kg_make_methods();
        return kg_SSL_read_ex && kg_SSL_write_ex && kg_SSL_pending && kg_SSL_is_server && kg_SSL_get_SSL_CTX;
    }
    static void *kg_ssl_of(PyObject *o) { return ((kg_ssl_socket_head *)o)->ssl; }
    static void *kg_ctx_of(PyObject *o) { return ((kg_ssl_context_head *)o)->ctx; }
    """
    int kg_resolve(const char *path)
    void *kg_ssl_of(object o)
    void *kg_ctx_of(object o)
    int kg_SSL_read_ex(void *s, void *buf, size_t num, size_t *done) nogil
    int kg_SSL_write_ex(void *s, const void *buf, size_t num, size_t *done) nogil
    int kg_SSL_pending(const void *s) nogil
    int kg_SSL_is_server(const void *s) nogil
    void *kg_SSL_get_SSL_CTX(const void *s) nogil
    int kg_layer_resolved
    int kg_SSL_get_error(const void *s, int ret) nogil
    int kg_SSL_shutdown(void *s) nogil
    void *kg_SSL_get_rbio(const void *s) nogil
    void *kg_SSL_get_wbio(const void *s) nogil
    ctypedef struct kg_tls_io:
        const char *in_ptr
        size_t in_len
        PyObject *sent
    int kg_attach_io(void *s, kg_tls_io *io)
    void kg_detach_io(void *s)
    void kg_clear_errors() nogil
    int kg_SSL_has_pending(const void *s) nogil

LINGER_SECONDS = 2.0  # how long a closed connection goes on reading (and discarding) the peer's bytes

cdef enum:
    RECORD_PLAINTEXT = 16384  # the most plaintext one TLS record carries (RFC 8446 5.1)
    SSL_ERROR_WANT_READ = 2  # OpenSSL's ssl.h
    SSL_ERROR_ZERO_RETURN = 6

cdef bint _resolved = False


def _libssl_path() -> str | None:
    """The file of the libssl this process loaded for the ``_ssl`` module, or None (built in)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                if path and "/libssl.so" in "/" + path:
                    return "/" + path
    except OSError:
        return None
    return None


def resolve() -> bool:
    """Look the OpenSSL functions up (once); False where they cannot be (``attach`` answers None)."""
    global _resolved
    if not _resolved:
        path = _libssl_path()
        if path is not None and (3, 8) <= sys.version_info[:2] <= (3, 13):
            _resolved = kg_resolve(path.encode()) == 1
    return _resolved


cdef class DirectTLS:
    """``read``, ``write`` and ``pending`` of one ``_ssl._SSLSocket`` over memory BIOs (see the module
    docstring); its own ``_ssl`` methods answer whatever is not a success."""

    cdef void *ssl
    cdef object inner
    cdef object _read
    cdef object _write

    def __cinit__(self, inner: object) -> None:
        self.inner = inner
        self.ssl = kg_ssl_of(inner)
        self._read = inner.read
        self._write = inner.write

    def read(self, Py_ssize_t n=1024, buffer=None):
        cdef char stack[RECORD_PLAINTEXT]
        cdef size_t done = 0
        cdef int ok
        cdef Py_buffer view
        if n <= 0:
            return self._read(n) if buffer is None else self._read(n, buffer)
        if buffer is None:
            if n > RECORD_PLAINTEXT:
                n = RECORD_PLAINTEXT
            if kg_SSL_read_ex(self.ssl, stack, <size_t>n, &done) == 1:
                return PyBytes_FromStringAndSize(stack, <Py_ssize_t>done)
            return self._read(n)
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if n > view.len:
                n = view.len
            ok = 0 if n <= 0 or n > INT_MAX else kg_SSL_read_ex(self.ssl, view.buf, <size_t>n, &done)
        finally:
            PyBuffer_Release(&view)
        if ok == 1:
            return <Py_ssize_t>done
        return self._read(n, buffer)

    def write(self, data):
        cdef size_t done = 0
        cdef int ok
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            ok = 0 if view.len <= 0 or view.len > INT_MAX else kg_SSL_write_ex(self.ssl, view.buf, <size_t>view.len, &done)
        finally:
            PyBuffer_Release(&view)
        if ok == 1:
            return <Py_ssize_t>done
        return self._write(data)

    def pending(self):
        return kg_SSL_pending(self.ssl)


cdef void *_checked_ssl(object inner) except? NULL:
    """The ``SSL *`` of ``inner`` (an ``_ssl._SSLSocket``), or NULL where it cannot be trusted (see the
    module docstring)."""
    import _ssl

    if not resolve() or type(inner) is not _ssl._SSLSocket:
        return NULL
    context = inner.context
    if not isinstance(context, _ssl._SSLContext):
        return NULL
    cdef void *ptr = kg_ssl_of(inner)
    if ptr == NULL or kg_SSL_get_SSL_CTX(ptr) != kg_ctx_of(context):
        return NULL
    if (kg_SSL_is_server(ptr) != 0) != bool(inner.server_side):
        return NULL
    return ptr


def attach(inner: object) -> DirectTLS | None:
    """A ``DirectTLS`` for ``inner`` (an ``_ssl._SSLSocket``, before its handshake), or None where the
    OpenSSL functions or its ``SSL *`` cannot be trusted (see the module docstring)."""
    if _checked_ssl(inner) == NULL:
        return None
    return DirectTLS(inner)


def layer_available() -> bool:
    """True when ``TLSTransport`` can run here: every OpenSSL function it calls was found."""
    return resolve() and kg_layer_resolved != 0


cdef enum:
    HANDSHAKING = 0
    WRAPPED = 1
    SHUTTING_DOWN = 2  # close_notify sent: nothing more to read or write
    CLOSED = 3


@cython.no_gc_clear  # __dealloc__ needs ssl_socket (see there)
cdef class TLSTransport:
    """A TLS connection between uvloop's TCP transport and a protocol: the TCP transport's protocol on
    one side, the protocol's transport on the other (what ``loop.connect_accepted_socket(..., ssl=...)``
    or ``loop.create_connection(..., ssl=..., server_hostname=...)`` makes with uvloop's ``SSLProtocol``,
    with the records' work done here in C). The server side is the listener's (``server_side=True``);
    the client side, with ``server_hostname`` for SNI and the certificate's name check and ``session``
    to resume an earlier connection's TLS session, the upstream connections' (``proxy.upstream.pool``).

    The connection is an ``ssl`` module ``SSLObject`` whose memory BIOs are replaced at once by the
    layer's own two (``kg_attach_io``); the handshake is run through it (``do_handshake``, in Python: once
    per connection). After that every record is OpenSSL's work called from here: OpenSSL reads the bytes
    received where they are (``io.in_ptr``, in the bytes object the socket's read gave), records come out
    of ``SSL_read_ex`` (into a stack buffer, or straight into a buffered protocol's buffer), a write is
    one ``SSL_write_ex`` whose records become a bytes object each as OpenSSL writes them, handed to the
    TCP transport in one write. uvloop's ``SSLProtocol`` does the same through a dozen Python-level calls
    per record, and memory BIOs copy every byte in and out (and zero-fill as they grow).

    Behaviour, as uvloop's TLS transport: the protocol's ``connection_made`` once the handshake is done
    (``handshake_done``: resolved then, or failed with the handshake's error); ``eof_received`` when the
    peer sends close_notify (then the connection is closed) or its TCP stream ends; ``close()`` sends
    close_notify and ends the TCP transport's sending side once its queued bytes are written (without
    waiting for the peer's close_notify), then reads on, discarding, until the peer ends too or
    ``LINGER_SECONDS`` pass (a lingering close, where uvloop closes at once: a socket closed with unread
    bytes answers with a reset, which can drop our last bytes at the peer); ``abort()`` drops everything; ``pause_writing``/``resume_writing`` are the TCP
    transport's (every record is encrypted at once: what waits is ciphertext in the TCP transport);
    ``pause_reading`` stops reading the socket and the records already received wait (``received``); a
    record that does not decrypt, or an alert, fails the connection (``connection_lost`` with the ``ssl``
    module's own exception, made by asking the ``SSLObject`` again); ``write_eof`` is not supported (TLS
    has no half-close), as there. Writes after ``close()`` are dropped."""

    cdef object context
    cdef object server_hostname
    # The client side's session: before the handshake the one to resume (an earlier connection's), or
    # None; after the connection is lost, the session it ended with (``tls_session``).
    cdef object session
    cdef object loop
    cdef object raw
    cdef object app
    cdef object sslobj
    cdef object ssl_socket  # the ``_ssl._SSLSocket`` whose ``SSL *`` is ``ssl``: the OpenSSL state lives as long
    cdef object received  # the bytes object the unread received bytes (``io.in_ptr``) are in
    cdef list sent  # the records written since the last flush, a bytes object each (``io.sent``)
    cdef kg_tls_io io
    cdef readonly object handshake_done
    cdef object _error
    cdef object _read_soon
    cdef object _linger  # the timer that closes the TCP transport after ``LINGER_SECONDS`` (see ``close``)
    cdef void *ssl
    cdef int state
    cdef bint app_buffered
    cdef bint app_made
    cdef bint eof_told
    cdef bint closing
    cdef bint reading_paused
    cdef bint server_side
    cdef bint eof_pending  # the TCP stream ended while records waited for a paused protocol

    def __init__(self, context: ssl.SSLContext, app: asyncio.BaseProtocol, loop: asyncio.AbstractEventLoop,
                 server_side: bool = True, server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None) -> None:
        if not server_side and server_hostname is None and context.check_hostname:
            raise ValueError("a client TLS connection whose context checks the host name needs server_hostname")
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.session = session
        self.loop = loop
        self.app = app
        self.app_buffered = isinstance(app, asyncio.BufferedProtocol)
        self.handshake_done = loop.create_future()
        self.state = HANDSHAKING

    # ---- the TCP transport's protocol

    def connection_made(self, raw: asyncio.Transport) -> None:
        cdef void *ssl_ptr
        self.raw = raw
        self.sent = []
        try:
            # The memory BIOs only to make the SSLObject: the connection's own BIOs replace them at once.
            sslobj = self.context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=self.server_side,
                                           server_hostname=self.server_hostname, session=self.session)
            self.session = None
            ssl_ptr = _checked_ssl(sslobj._sslobj)
            if ssl_ptr == NULL:
                raise RuntimeError("the TLS connection's OpenSSL object cannot be used directly")
            self.io.sent = <PyObject *>self.sent
            if not kg_attach_io(ssl_ptr, &self.io):
                raise MemoryError("OpenSSL could not make the TLS connection's BIOs")
        except Exception as exc:  # noqa: BLE001 - the handshake fails with it
            self.io.sent = NULL
            self._handshake_failed(exc)
            return
        self.sslobj = sslobj
        self.ssl_socket = sslobj._sslobj
        self.ssl = ssl_ptr
        self._handshake_step()

    def data_received(self, data: bytes) -> None:
        cdef int state = self.state
        if state != HANDSHAKING and state != WRAPPED:
            return  # after close_notify or a failure: nothing more is read
        if type(data) is not bytes:
            data = bytes(data)
        if self.io.in_len > 0:  # bytes not read yet (the protocol paused reading): these come after them
            data = PyBytes_FromStringAndSize(self.io.in_ptr, <Py_ssize_t>self.io.in_len) + data
        self.received = data
        self.io.in_ptr = PyBytes_AS_STRING(data)
        self.io.in_len = <size_t>PyBytes_GET_SIZE(data)
        if state == HANDSHAKING:
            self._handshake_step()
        else:
            self._read_records()
        if self.io.in_len == 0:
            self.received = None  # all read: the bytes object goes now, not with the next one

    def eof_received(self) -> bool:
        if self.closing:
            return False  # the peer ended a connection we are closing (lingering): the TCP transport closes
        if self.state == HANDSHAKING:
            self._handshake_failed(ConnectionResetError("the connection ended during the TLS handshake"))
        elif self.app_made and not self.eof_told:
            if self.reading_paused and self._more_to_read():
                # Records received before the end wait for the protocol to read again: the end is told
                # after them (``_read_records``), and the TCP transport stays open until then.
                self.eof_pending = True
                return True
            self._tell_eof()  # a TLS connection cannot stay half open: closed whatever it answers
        return False

    cdef _tell_eof(self):
        """The protocol's ``eof_received``, once."""
        if self.app_made and not self.eof_told:
            self.eof_told = True
            self.app.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.state = CLOSED
        if self._read_soon is not None:
            self._read_soon.cancel()
            self._read_soon = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if exc is None:
            exc = self._error
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc or ConnectionResetError("the connection ended during the TLS handshake"))
        app = self.app
        made = self.app_made
        if not self.server_side and made and self.sslobj is not None:
            self.session = self.sslobj.session  # kept for a later connection to resume (``tls_session``)
        # Let go of the OpenSSL state and of the objects that refer back to this one (the protocol holds
        # it as its transport, the TCP transport as its protocol) now, not at the next garbage collection:
        # thousands of idle connections closing at once give their memory back (proxy.memory.Trimmer).
        self.app_made = False
        self.app = None
        self.raw = None
        self._let_go_of_ssl()
        if made:
            app.connection_lost(exc)

    cdef _let_go_of_ssl(self):
        """The OpenSSL connection no longer sees this object (its ``SSLObject``, which may live on, was
        handed out as ``ssl_object``); its state and buffers go."""
        if self.ssl != NULL:
            kg_detach_io(self.ssl)
            self.ssl = NULL
        self.io.sent = NULL
        self.io.in_ptr = NULL
        self.io.in_len = 0
        self.sslobj = self.ssl_socket = self.received = self.sent = None

    def __dealloc__(self):
        # Still held here (the class is ``no_gc_clear``, and the ``_SSLSocket``'s own clear leaves its
        # ``SSL *``): ``ssl_socket``, so ``ssl`` is not freed yet, and its BIOs must stop pointing at ``io``.
        if self.ssl != NULL:
            kg_detach_io(self.ssl)

    def pause_writing(self) -> None:
        if self.app_made:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app_made:
            self.app.resume_writing()

    # ---- the handshake

    cdef _handshake_step(self):
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_out()
            return
        except Exception as exc:  # noqa: BLE001 - any failure fails the handshake
            self._flush_out()  # the alert, for the client to see why
            self._handshake_failed(exc)
            return
        self._flush_out()
        self.state = WRAPPED
        if self.handshake_done.done():  # given up on meanwhile (the handshake's time ran out)
            self.abort()
            return
        self.handshake_done.set_result(None)
        self.app_made = True
        self.app.connection_made(self)
        if self.state == WRAPPED:
            self._read_records()  # what came with the handshake's last flight

    cdef _handshake_failed(self, exc):
        self.state = CLOSED
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
        if self.raw is not None:
            self.raw.close()  # after the alert is written

    # ---- records

    cdef _flush_out(self):
        """The records written since the last flush to the TCP transport: one write (several records:
        one ``writelines``, which uvloop sends with one ``writev``)."""
        cdef list sent = self.sent
        if not sent:
            return
        if self.raw is None:
            del sent[:]
        elif len(sent) == 1:
            self.raw.write(sent.pop())
        else:
            records = sent[:]
            del sent[:]
            self.raw.writelines(records)

    cdef _read_records(self):
        """Every whole record received, to the protocol (one ``data_received`` for all of them, as uvloop
        does; a buffered protocol gets each record in its own buffer)."""
        cdef char stack[RECORD_PLAINTEXT]
        cdef size_t done = 0
        cdef int ok = 1
        cdef int error = SSL_ERROR_WANT_READ
        cdef list chunks = None
        cdef object first = None
        if self.reading_paused or self.state != WRAPPED:
            return
        kg_clear_errors()
        if self.app_buffered:
            error = self._read_into_buffers()
        else:
            while True:
                ok = kg_SSL_read_ex(self.ssl, stack, RECORD_PLAINTEXT, &done)
                if ok != 1:
                    error = kg_SSL_get_error(self.ssl, 0)
                    break
                chunk = PyBytes_FromStringAndSize(stack, <Py_ssize_t>done)
                if first is None:
                    first = chunk
                else:
                    if chunks is None:
                        chunks = [first]
                    chunks.append(chunk)
                if not self._more_to_read():
                    break  # error stays WANT_READ: a read now would only say so, at a few hundred instructions
            if chunks is not None:
                self.app.data_received(b"".join(chunks))
            elif first is not None:
                self.app.data_received(first)
        if self.state != WRAPPED:
            return  # the protocol closed or aborted the connection meanwhile
        self._flush_out()  # what reading produced: a key update's answer, an alert
        if error == -1:
            return  # the protocol paused reading
        if error == SSL_ERROR_WANT_READ:
            if self.eof_pending and not self.reading_paused:  # the records before the end are read
                self.eof_pending = False
                self._tell_eof()
                self.close()
            return
        if error == SSL_ERROR_ZERO_RETURN:  # the peer's close_notify
            self._tell_eof()
            self.close()
            return
        self._failed_as_sslobj_says(self.sslobj.read, 1, "read")

    cdef inline bint _more_to_read(self):
        """Whether a read could give anything: bytes received and not yet taken by OpenSSL, or a record
        OpenSSL holds (decrypted or not) — without either, ``SSL_read_ex`` can only want more to read."""
        return self.io.in_len > 0 or kg_SSL_has_pending(self.ssl) != 0

    cdef int _read_into_buffers(self) except -2:
        """Records straight into a buffered protocol's buffers, each buffer filled with as many as fit
        before ``buffer_updated`` (as uvloop does: a relay then writes what one read of the socket
        brought as one write, not a write per 16 KiB record); the error that stopped it (or -1: the
        protocol paused reading)."""
        cdef Py_buffer view
        cdef size_t done = 0
        cdef Py_ssize_t filled
        cdef int error
        cdef long pending
        cdef char *into
        while True:
            if self.reading_paused or self.state != WRAPPED:
                return -1
            if not self._more_to_read():
                return SSL_ERROR_WANT_READ
            pending = <long>self.io.in_len + kg_SSL_pending(self.ssl)
            buffer = self.app.get_buffer(pending + 256)
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
            filled = 0
            error = 0
            try:
                into = <char *>view.buf
                while filled < view.len:
                    if kg_SSL_read_ex(self.ssl, into + filled, <size_t>(view.len - filled), &done) != 1:
                        error = kg_SSL_get_error(self.ssl, 0)
                        break
                    filled += <Py_ssize_t>done
                    if not self._more_to_read():
                        error = SSL_ERROR_WANT_READ
                        break
            finally:
                PyBuffer_Release(&view)
            if filled > 0:
                self.app.buffer_updated(filled)
            elif view.len <= 0:
                raise RuntimeError("the protocol's get_buffer gave an empty buffer")
            if error != 0:
                return error

    cdef _failed_as_sslobj_says(self, method, arg, str what):
        """A read or write OpenSSL refused (a record that does not decrypt, an alert, a protocol error):
        the connection fails with the ``ssl`` module's own exception for it — ``method`` of the
        ``SSLObject``, asked again with ``arg``, raises it."""
        try:
            method(arg)
            error = ssl.SSLError(f"TLS {what} failed")
        except Exception as exc:  # noqa: BLE001 - the exception is the answer
            error = exc
        self._error = error
        self.state = CLOSED
        self.closing = True
        if self.raw is not None:
            self.raw.abort()

    def _read_resumed(self) -> None:
        self._read_soon = None
        self._read_records()

    # ---- the protocol's transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        cdef Py_buffer view
        cdef size_t done = 0
        cdef int ok = 1
        if self.state != WRAPPED:
            return  # closed or closing: dropped, as uvloop drops them
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len > 0:
                kg_clear_errors()
                ok = kg_SSL_write_ex(self.ssl, view.buf, <size_t>view.len, &done)
        finally:
            PyBuffer_Release(&view)
        if ok != 1:
            self._failed_as_sslobj_says(self.sslobj.write, data, "write")
            return
        self._flush_out()

    def writelines(self, list_of_data) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot be half closed")

    def close(self) -> None:
        if self.closing:
            return
        cdef bint wrapped = self.state == WRAPPED
        self.closing = True
        if wrapped:
            self.state = SHUTTING_DOWN
            kg_clear_errors()
            kg_SSL_shutdown(self.ssl)  # our close_notify
            self._flush_out()
        raw = self.raw
        if raw is None:
            return
        if not wrapped or self.eof_told or self.eof_pending or raw.is_closing() or not raw.can_write_eof():
            raw.close()  # (the peer has ended already: nothing more will come to read)
            return
        # A lingering close: the TCP transport ends its sending side once our last bytes are written (a GOAWAY,
        # an error answer, the close_notify) and goes on reading, the reads thrown away, until the peer ends
        # too or ``LINGER_SECONDS`` pass. Closed at once, a socket with unread bytes (a client that keeps
        # sending) answers them with a reset, and the peer's kernel may drop what we wrote before it was read.
        raw.write_eof()
        if self.reading_paused:
            raw.resume_reading()
        self._linger = self.loop.call_later(LINGER_SECONDS, raw.close)

    def abort(self) -> None:
        self.closing = True
        if self.state != CLOSED:
            self.state = SHUTTING_DOWN
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        return self.closing or self.state >= SHUTTING_DOWN

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            if self.raw is not None and not self.raw.is_closing():
                self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.raw is not None and not self.raw.is_closing():
                self.raw.resume_reading()
            if self.state == WRAPPED and self._read_soon is None:
                self._read_soon = self.loop.call_soon(self._read_resumed)  # records received meanwhile

    def is_reading(self) -> bool:
        return not self.reading_paused and not self.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() if self.raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.raw.get_write_buffer_limits() if self.raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.raw is not None:
            self.raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.app = protocol
        self.app_buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.app

    def tls_session(self) -> ssl.SSLSession | None:
        """The client side's TLS session, for a later connection to resume: the connection's own while it
        is open (a TLS 1.3 server's ticket comes after the handshake, with the records read), the one it
        ended with once it is lost — only that small object stays; the OpenSSL connection and its
        buffers are let go of as ever."""
        if self.sslobj is not None and self.state != HANDSHAKING:
            return self.sslobj.session
        return self.session if self.state == CLOSED else None

    def get_extra_info(self, name: str, default: object = None) -> object:
        sslobj = self.sslobj
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return self.context
        if sslobj is not None and self.state != HANDSHAKING:
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        return self.raw.get_extra_info(name, default) if self.raw is not None else default
