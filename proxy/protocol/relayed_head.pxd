# C declarations for relayed_head.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. Positions in the head are C integers
# and its bytes are read in place (``head[i]`` on a ``bytes`` with a C index is a C array read: the .py's
# first line turns bounds checks off, every index being inside the head by construction).
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy

cdef frozenset _REFUSED_NAMES
cdef tuple _REFUSED_LIST
cdef frozenset _PROXY_NAME_BYTES
cdef bytes _PROXY_NAME_TABLE
cdef frozenset _FIRST_LETTERS
cdef bytes _LOOKED_AT
cdef bytes _ID_FIELD
cdef bytes _ID_PREFIX
cdef int _SPACE, _TAB, _COLON, _CR
cdef int _OTHER, _CONTENT_LENGTH, _CONNECTION, _REFUSED


cdef Py_ssize_t _line_end(bytes head, Py_ssize_t start, Py_ssize_t n)
cdef Py_ssize_t _colon(bytes head, Py_ssize_t start, Py_ssize_t end)
@cython.locals(n=Py_ssize_t, i=Py_ssize_t, byte=int)
cdef bint _lower_is(bytes head, Py_ssize_t start, Py_ssize_t stop, bytes word)
@cython.locals(i=Py_ssize_t, byte=int, word=bytes)
cdef int _field_kind(bytes head, Py_ssize_t start, Py_ssize_t stop)
cdef Py_ssize_t _value_start(bytes head, Py_ssize_t start, Py_ssize_t end)
cdef Py_ssize_t _value_end(bytes head, Py_ssize_t start, Py_ssize_t end)
@cython.locals(i=Py_ssize_t, byte=int, length=Py_ssize_t)
cdef Py_ssize_t _length_value(bytes head, Py_ssize_t start, Py_ssize_t end)


@cython.locals(n=Py_ssize_t, at=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, colon=Py_ssize_t,
               stop=Py_ssize_t, keep_alive_at=Py_ssize_t, length=Py_ssize_t, status=Py_ssize_t, kind=int,
               value_start=Py_ssize_t, body_at=Py_ssize_t, cut_from=Py_ssize_t, cut_to=Py_ssize_t,
               relayed=bytes)
cpdef object relayable_head(bytes head, bytes request_id=*)
@cython.locals(n=Py_ssize_t, extra=Py_ssize_t, size=Py_ssize_t, tail=Py_ssize_t, at=Py_ssize_t, out=cython.p_char,
               src=cython.p_char, spliced=bytes)
cdef bytes _spliced(bytes head, Py_ssize_t body_at, Py_ssize_t cut_from, Py_ssize_t cut_to, bytes request_id)

@cython.locals(head_size=Py_ssize_t, fields=list)
cpdef object relayed_fields(bytes data, bytes request_id)
@cython.locals(fields=list, at=Py_ssize_t, end_of_fields=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t,
               colon=Py_ssize_t, stop=Py_ssize_t, value_start=Py_ssize_t)
cdef list _fields(bytes head, Py_ssize_t head_size)
@cython.locals(lowered=bytes, out=cython.p_char, i=Py_ssize_t, byte=cython.uchar)
cdef bytes _lowered(bytes head, Py_ssize_t start, Py_ssize_t stop)

@cython.locals(head_size=Py_ssize_t, block=object, taken=object)
cpdef object relayed_block(bytes data, bytes request_id)
@cython.locals(bound=Py_ssize_t, block=bytes, out=cython.p_char, src=cython.p_char, pos=Py_ssize_t, names=dict,
               counted=bint, at=Py_ssize_t, end_of_fields=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t,
               colon=Py_ssize_t, stop=Py_ssize_t, value_start=Py_ssize_t, value_end=Py_ssize_t, name=bytes,
               prefix=bytes, status_field=bytes, id_prefix=bytes, length_text=bytes)
cdef object _encoded_block(bytes head, Py_ssize_t head_size, Py_ssize_t status, Py_ssize_t length, bytes request_id)
cdef inline Py_ssize_t _put(char* out, Py_ssize_t pos, bytes data)
@cython.locals(size=Py_ssize_t)
cdef inline Py_ssize_t _put_length(char* out, Py_ssize_t pos, Py_ssize_t size)
