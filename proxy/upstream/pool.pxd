# C declarations for pool.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. ClusterPool becomes an extension type whose
# fields are read by C offset (every attribute public: the forwarder, the fast path and the tests read them
# by name); ``idle_http1`` and ``_h1_idle`` are cpdef, C calls from the fast path (proxy/fastpath.pxd).
cimport cython
from proxy.upstream.http1 cimport Http1Upstream


cdef class ClusterPool:
    cdef public object cluster
    cdef public object settings
    cdef public object host
    cdef public object port
    cdef public object authority
    cdef public object server_hostname
    cdef public object _on_error
    cdef public object credentials
    cdef public double _creds_at
    cdef public object _ctx
    cdef public object _ctx_h1
    cdef public object _ctx_key
    cdef public dict _session_sources
    cdef public object h2_mode
    cdef public list h2_conns
    cdef public list h1_idle
    cdef public Py_ssize_t h1_busy
    cdef public object _connecting
    cdef public bint closed
    cdef object __weakref__

    @cython.locals(conn=Http1Upstream, idle=list)
    cpdef Http1Upstream idle_http1(self)
    cpdef _h1_idle(self, Http1Upstream conn)
