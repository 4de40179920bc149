# C declarations for connection.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. ClientConnection becomes an extension
# type whose fields are read by C offset (every attribute public: exchanges, the forwarder and the tests
# read them by name); the fast path's types are cimported, so a planned request's check (``usable``) and
# its exchange are C calls. The methods the loop is handed as callbacks stay def.
cimport cython
from proxy.fastpath cimport FastExchange, CodecFastExchange, Plan, usable
from proxy.upstream.http1 cimport Http1Upstream


cdef class ClientConnection:
    cdef public object fwd
    cdef public object peer_ip
    cdef public object transport
    cdef public object codec
    cdef public object identity
    cdef public dict exchanges
    cdef public bint closed
    cdef public bint write_paused
    cdef public bint _read_paused
    cdef public list _drain_waiters
    cdef public dict _window_waiters
    cdef public object _header_timer
    cdef public object _idle_timer
    cdef public bint _closing_after_flush
    cdef public bint upgraded
    cdef public bint detached
    cdef public bint _served
    cdef public double _idle_since
    cdef public object _frame_marks
    cdef public object _max_pipelined
    cdef public dict plans
    cdef public dict h2_plans
    cdef public FastExchange fast
    cdef public list _held_data
    cdef public list _writable_hooks
    cdef public bint _flush_due
    cdef public object _plan_candidate
    cdef object __weakref__

    @cython.locals(plans=dict, plan=Plan, upstream=Http1Upstream)
    cpdef data_received(self, object data)
    @cython.locals(plan=Plan, upstream=Http1Upstream)
    cpdef _dispatch(self, object event)
    cpdef when_writable(self, object hook)
    cpdef remember(self, object key, object plan)
    cpdef fast_done(self)
    cpdef _read_held(self)
    cpdef replay(self, object raw)
    cpdef send_head(self, object head, bint end_stream=*)
    cpdef send_relayed_head(self, object stream_id, object head, object content_length)
    cpdef send_head_block(self, object stream_id, object block, bint end_stream=*)
    cpdef send_body(self, object stream_id, object data, bint end_stream=*)
    cpdef send_end(self, object stream_id)
    cpdef reset(self, object stream_id)
    cpdef acknowledge(self, object stream_id, object nbytes)
    cpdef flush(self)
    cpdef flush_soon(self)
    cpdef bint writable(self, object stream_id) except -1
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    @cython.locals(exchanges=dict)
    cpdef exchange_done(self, object stream_id)
    cpdef close(self)
    cpdef cut(self, object reason)
    cpdef _end(self)
    cpdef abort(self)
    cpdef _flush(self)
    cpdef bint check_write_buffer(self) except -1
    cpdef _close_all(self)
