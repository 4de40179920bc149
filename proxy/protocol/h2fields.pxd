# C declarations for h2fields.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. Counters and positions are C
# integers (bounded far below 2^63: lengths of one header block, integers of at most 5 continuation
# bytes); everything else stays a Python object.
cimport cython

cdef object _STATIC
cdef Py_ssize_t _STATIC_SIZE
cdef Py_ssize_t _INTEGER_MAX_BYTES


@cython.locals(shift=Py_ssize_t, end=Py_ssize_t, byte=Py_ssize_t)
cdef tuple _integer(object data, Py_ssize_t i, Py_ssize_t value)


@cython.locals(first=Py_ssize_t, length=Py_ssize_t, end=Py_ssize_t)
cdef tuple _string(object data, Py_ssize_t i)


cdef class FieldDecoder:
    cdef public object table
    cdef public Py_ssize_t max_header_list_size
    cdef public Py_ssize_t max_allowed_table_size

    @cython.locals(offset=Py_ssize_t)
    cdef object _entry(self, Py_ssize_t index)

    cdef tuple _literal(self, object data, Py_ssize_t i, Py_ssize_t index, Py_ssize_t full)

    @cython.locals(size=Py_ssize_t, limit=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t, first=Py_ssize_t,
                   index=Py_ssize_t, new_size=Py_ssize_t)
    cpdef list decode(self, object data)
