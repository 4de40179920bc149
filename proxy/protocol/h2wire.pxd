# C declarations for h2wire.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. Module constants stay Python
# objects (other modules and tests read them); only the hot functions' counters are C integers.
cimport cython


@cython.locals(i=Py_ssize_t, n=Py_ssize_t, first=Py_ssize_t)
cpdef bint all_indexed(object block)


@cython.locals(size=Py_ssize_t, names=dict, parts=list)
cpdef bytes encode_response_block(object status, object headers, object content_length=*)


@cython.locals(size=Py_ssize_t, regular=bint)
cpdef object request_fields(object fields, object max_head)
