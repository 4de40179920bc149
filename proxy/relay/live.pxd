# C declarations for live.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. LiveRelay becomes an extension type whose
# fields are read by C offset; the HTTP/1.1 codec's send_body and data_to_send are called through its
# C method table (cpdef in proxy/protocol/http1.pxd).
from proxy.protocol.http1 cimport Http1ServerConnection


cdef class LiveRelay:
    cdef object exchange
    cdef object conn
    cdef object codec
    cdef Http1ServerConnection h1
    cdef object transport
    cdef object sid
    cdef object filter
    cdef object frames
    cdef bint note_lines
    cdef object body
    cdef object credit
    cdef public bint at_line_end
    cdef public Py_ssize_t bytes_out
    cdef public Py_ssize_t held
    cdef public Py_ssize_t owed

    cpdef bint pass_on(self, object data) except -1
    cpdef body_chunk(self, object data)
    cpdef body_ended(self)
    cpdef settle(self)
    cdef _detach(self, Py_ssize_t held)
