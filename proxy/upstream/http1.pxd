# C declarations for http1.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. Http1Upstream becomes an extension type
# whose fields are read by C offset (every attribute public: the pool, the exchanges and the tests read
# them by name); httptools finds its callbacks (on_header, ...) by attribute name, so they stay def.
cdef class Http1Upstream:
    cdef public object cluster_name
    cdef public object high_water
    cdef public object transport
    cdef public object parser
    cdef public object exchange
    cdef public bint closed
    cdef public bint reading_paused
    cdef public bint _write_paused
    cdef public object _drain_waiter
    cdef public list _cur_headers
    cdef public bint _message_done
    cdef public bint _keep_alive
    cdef public object _upgrade_data
    cdef public bint _head_request
    cdef public object _on_idle
    cdef public object raw_protocol
    cdef public object loop
    cdef public object _framing
    cdef public object _active
    cdef public bint _fresh
    cdef public Py_ssize_t _left
    cdef object __weakref__

    cpdef start_raw(self, object head, object sink)
    cpdef pause(self)
    cpdef resume(self)
    cpdef close(self)
    cpdef _maybe_idle(self)
    cpdef _fail(self, object error)
    cpdef _wake_drain(self)
