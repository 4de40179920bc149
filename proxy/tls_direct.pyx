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

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.limits cimport INT_MAX

import sys

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

    static int kg_resolve(const char *path) {
        void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (lib == NULL) return 0;
        kg_SSL_read_ex = (kg_rw_ex_fn)dlsym(lib, "SSL_read_ex");
        kg_SSL_write_ex = (kg_rw_ex_fn)dlsym(lib, "SSL_write_ex");
        kg_SSL_pending = (kg_of_ssl_fn)dlsym(lib, "SSL_pending");
        kg_SSL_is_server = (kg_of_ssl_fn)dlsym(lib, "SSL_is_server");
        kg_SSL_get_SSL_CTX = (kg_ctx_of_ssl_fn)dlsym(lib, "SSL_get_SSL_CTX");
        return kg_SSL_read_ex && kg_SSL_write_ex && kg_SSL_pending && kg_SSL_is_server && kg_SSL_get_SSL_CTX;
    }
    static void *kg_ssl_of(PyObject *o) { return ((kg_ssl_socket_head *)o)->ssl; }
    static void *kg_ctx_of(PyObject *o) { return ((kg_ssl_context_head *)o)->ctx; }
    """
    int kg_resolve(const char *path)
    void *kg_ssl_of(object o)
    void *kg_ctx_of(object o)
    int kg_SSL_read_ex(void *ssl, void *buf, size_t num, size_t *done) nogil
    int kg_SSL_write_ex(void *ssl, const void *buf, size_t num, size_t *done) nogil
    int kg_SSL_pending(const void *ssl) nogil
    int kg_SSL_is_server(const void *ssl) nogil
    void *kg_SSL_get_SSL_CTX(const void *ssl) nogil

cdef enum:
    RECORD_PLAINTEXT = 16384  # the most plaintext one TLS record carries (RFC 8446 5.1)

cdef bint _resolved = False


def _libssl_path() -> str | None:
    """The file of the libssl this process loaded for the ``_ssl`` module, or None (built in)."""
    import _ssl  # noqa: F401 - loads libssl

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


def attach(inner: object) -> DirectTLS | None:
    """A ``DirectTLS`` for ``inner`` (an ``_ssl._SSLSocket``, before its handshake), or None where the
    OpenSSL functions or its ``SSL *`` cannot be trusted (see the module docstring)."""
    import _ssl

    if not resolve() or type(inner) is not _ssl._SSLSocket:
        return None
    context = inner.context
    if not isinstance(context, _ssl._SSLContext):
        return None
    cdef void *ssl = kg_ssl_of(inner)
    if ssl == NULL or kg_SSL_get_SSL_CTX(ssl) != kg_ctx_of(context):
        return None
    if (kg_SSL_is_server(ssl) != 0) != bool(inner.server_side):
        return None
    return DirectTLS(inner)
