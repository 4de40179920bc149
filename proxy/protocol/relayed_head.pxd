# C declarations for relayed_head.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. Positions in the head are C integers
# and its bytes are read in place (``head[i]`` on a ``bytes`` with a C index is a C array read).
cimport cython

cdef frozenset _REFUSED_NAMES
cdef frozenset _PROXY_NAME_BYTES
cdef frozenset _FIRST_LETTERS
cdef int _SPACE, _TAB, _COLON, _CR


cdef Py_ssize_t _line_end(bytes head, Py_ssize_t start, Py_ssize_t n)
cdef Py_ssize_t _colon(bytes head, Py_ssize_t start, Py_ssize_t end)


@cython.locals(n=Py_ssize_t, at=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, colon=Py_ssize_t,
               stop=Py_ssize_t, keep_alive_at=Py_ssize_t, length=Py_ssize_t, status=int, name=bytes,
               value=bytes, code=bytes)
cpdef object relayable_head(bytes head)
