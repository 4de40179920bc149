# C declarations for http2.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. H2Upstream and H2Exchange become extension
# types whose fields are read by C offset (every attribute public: the pool, the forwarder and the tests
# read them by name); ``data_received`` is cpdef so that its locals are C integers (the frame heads of a
# watch's DATA frames are read in place, issue 9).
cimport cython

# the frame layout's constants as C integers (compared with the frame head's, read in place)
cdef Py_ssize_t _FRAME_HEAD
cdef int _DATA, _HEADERS, _PUSH_PROMISE, _CONTINUATION
cdef int _END_STREAM, _END_HEADERS, _PADDED


cdef class H2Exchange:
    cdef public object conn
    cdef public object stream_id
    cdef public object status
    cdef public object headers
    cdef public object body
    cdef public object _head
    cdef public list _pending
    cdef public bint _end_pending
    cdef public object _drain
    cdef public bint _closed
    cdef public bint direct
    cdef public Py_ssize_t window
    cdef public Py_ssize_t owed
    cdef public Py_ssize_t unannounced


cdef class H2Upstream:
    cdef public object cluster_name
    cdef public object authority
    cdef public object high_water
    cdef public object h2
    cdef public object transport
    cdef public dict streams
    cdef public bytes _inbox
    cdef public bint _header_block
    cdef public Py_ssize_t unannounced
    cdef public bint closed
    cdef public bint retiring
    cdef public bint write_paused
    cdef public object max_streams
    cdef object __weakref__

    @cython.locals(size=Py_ssize_t, length=Py_ssize_t, kind=int, flags=int, stream_id=Py_ssize_t,
                   pos=Py_ssize_t, fed=Py_ssize_t, end=Py_ssize_t, max_frame=Py_ssize_t,
                   exchange=H2Exchange, gathering=H2Exchange, parts=list, streams=dict, body=object)
    cpdef data_received(self, bytes data)
