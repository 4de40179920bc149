# C declarations for channels.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. The session tap runs on every read of a
# relayed exec / attach / port-forward stream: its classes are extension types (the attributes below,
# no others), the scan's steps C calls, its positions and counts C integers. Everything stays readable
# (``public``) as the .py's attributes are.
cimport cython


cdef class _WsScan:
    cdef public str side
    cdef public bytearray buf
    cdef public Py_ssize_t remaining  # < 2**63: a longer frame makes the tap give up
    cdef public bytes mask
    cdef public Py_ssize_t mask_offset
    cdef public int opcode
    cdef public bint fin
    cdef public int message_opcode
    cdef public object channel  # int, or None before the message's first payload byte
    cdef public str channel_text
    cdef public bint collect
    cdef public bytes b64_carry
    cdef public Py_ssize_t copied


cdef class ChannelTap:
    cdef public object protocol_name
    cdef public object on_data
    cdef public object spdy_tap
    cdef public bint base64
    cdef public dict _scan
    cdef public dict bytes_from_client
    cdef public dict bytes_from_server
    cdef public bytearray error_data
    cdef public set closed_channels
    cdef public dict close_seen
    cdef public bint _failed
    cdef public str _failure
    cdef public Py_ssize_t _max_error

    cdef _feed(self, _WsScan d, object data)

    @cython.locals(pos=Py_ssize_t, n=Py_ssize_t, take=Py_ssize_t, have=Py_ssize_t, want=Py_ssize_t, skim=bint)
    cdef _scan_bytes(self, _WsScan d, object view)

    @cython.locals(masked=int, b1=int, size=Py_ssize_t, head=Py_ssize_t, start=Py_ssize_t, take=Py_ssize_t,
                   channel=int, counts=dict)
    cdef Py_ssize_t _skim(self, _WsScan d, const unsigned char[:] view, Py_ssize_t pos, Py_ssize_t n) except -1


cdef class SessionTap:
    cdef public str upgrade
    cdef public str protocol
    cdef public object tap
