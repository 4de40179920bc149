# C declarations for upgrade.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. A relay side's steps run on every read of
# an exec / attach / port-forward stream: ``_RelaySide`` is an extension type (these fields, no others;
# ``_Side``, the protocol the transports see, adds ``asyncio.BufferedProtocol`` to it).


cdef class _RelaySide:
    cdef public object session
    cdef public str name
    cdef public object transport
    cdef public _RelaySide peer
    cdef public Py_ssize_t bytes
    cdef public bint eof
    cdef public bint lost
    cdef public bint peer_may_keep_views
    cdef public object _buffer
