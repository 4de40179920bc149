# C declarations for tally.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. The functions are cpdef: C calls from the
# fast path (``fastpath.pxd`` cimports them), Python calls from everywhere else; the two running figures
# are C integers.
cimport cython

cdef tuple _bounds
cdef dict request_counts
cdef dict latency
cdef Py_ssize_t _to_client
cdef Py_ssize_t _in_flight

cpdef request_started()
cpdef request_abandoned()
cpdef request_finished(object cluster, object verb, object code, Py_ssize_t bytes_out, double head_seconds=*)
@cython.locals(bucket=Py_ssize_t, last=Py_ssize_t, bound=double)
cpdef observe_latency(object cluster, object verb, double seconds)
cpdef tuple take_requests()
cpdef tuple take_pending()
