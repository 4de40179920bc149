# C declarations for http1.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. The codec's classes become extension
# types with typed attributes (read by C offset instead of a slot lookup); flags are C ints, the body
# mode and the head/body counters C integers (bounded by the limits they are checked against; a
# declared content-length stays a Python int: it comes from the app's or the upstream's header). Stream
# ids stay Python ints (dict keys). httptools finds its callbacks (on_url, on_header, ...) by attribute
# name, so they stay def methods; what only the class calls is cdef; the other ServerConnection methods
# are cpdef (Python-callable, a C call inside the class).
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy


cdef object _BIG_WINDOW
cdef bytes _CONTINUE
cdef frozenset _OWNED
cdef dict _CHUNK_HEADS
cdef Py_ssize_t _CHUNK_HEAD_SIZES


@cython.locals(hn=Py_ssize_t, dn=Py_ssize_t, out=bytes, buf=cython.p_char)
cdef bytes _chunk(bytes head, bytes data)


cdef class _Stream:
    cdef public bint keep_alive
    cdef public bint head_request
    cdef public bint http10
    cdef public bint head_sent
    cdef public Py_ssize_t mode
    cdef public object remaining
    cdef public bint ended
    cdef public bint upgrade
    cdef public bint dropped


cdef class Http1ServerConnection:
    cdef object _limits
    cdef Py_ssize_t _max_head
    cdef object _max_body
    cdef object _parser
    cdef list _events
    cdef list _out
    cdef object _next_sid
    cdef object _sid
    cdef bytes _url
    cdef list _headers
    cdef Py_ssize_t _head_bytes
    cdef Py_ssize_t _head_fed
    cdef bint _in_msg
    cdef bint _in_head
    cdef bint _in_body
    cdef Py_ssize_t _body_bytes
    cdef object _pending_upgrade
    cdef dict _streams
    cdef object _resp_sid
    cdef dict _held
    cdef bint _stopped
    cdef bint _closing
    cdef bint _must_close
    cdef bint _eof

    @cython.locals(events=list)
    cpdef list receive_data(self, object data)

    cdef list _on_eof(self)

    @cython.locals(stream=_Stream)
    cdef _fail(self, object status, object message)

    @cython.locals(held=list)
    cdef _write(self, object sid, object data)

    @cython.locals(stream=_Stream, has_length=bint, parts=list)
    cpdef send_response_head(self, object head, bint end_stream=*)

    @cython.locals(stream=_Stream)
    cpdef bint takes_relayed_head(self, object stream_id) except -1

    @cython.locals(stream=_Stream)
    cpdef send_relayed_head(self, object stream_id, object head, object content_length)

    @cython.locals(stream=_Stream, mode=Py_ssize_t, size=Py_ssize_t, head=bytes)
    cpdef send_body(self, object stream_id, object data, bint end_stream=*)

    @cython.locals(stream=_Stream)
    cpdef send_end(self, object stream_id)

    @cython.locals(following=_Stream)
    cdef _finish(self, object sid, _Stream stream)

    @cython.locals(stream=_Stream)
    cpdef reset_stream(self, object stream_id, object error_code=*)

    cpdef acknowledge_received(self, object stream_id, object nbytes)
    cpdef send_window(self, object stream_id)

    @cython.locals(stream=_Stream)
    cpdef close(self)

    @cython.locals(out=list)
    cpdef bytes data_to_send(self)


@cython.locals(fields=list, lines=Py_ssize_t, block=bytes)
cpdef tuple _field_block(object status, object reason, object headers)

@cython.locals(block=bytes)
cpdef tuple response_head_bytes(object status, object headers)
