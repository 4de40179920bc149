# C declarations for fastpath.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the one
# source and runs as it is where no compiled module was built. Plan and the fast exchanges become extension
# types whose fields are read by C offset (every attribute public: the forwarder, the client connection
# and the tests read them by name); the upstream connection and the pool are typed, so their methods are C
# calls; the methods an upstream connection or the client connection call are cpdef, the callbacks handed
# to the loop stay def.
cimport cython
from proxy.upstream.http1 cimport Http1Upstream
from proxy.upstream.pool cimport ClusterPool
from proxy.protocol.audit_line cimport request_line
from proxy.protocol.relayed_head cimport relayable_head, relayed_block
from proxy.protocol.http1 cimport response_head_bytes
from proxy.tally cimport request_abandoned, request_finished, request_started


cdef class Plan:
    cdef public object cluster
    cdef public object roles
    cdef public object catalog
    cdef public ClusterPool pool
    cdef public object credentials
    cdef public double usable_until
    cdef public object head
    cdef public object verdict
    cdef public object path
    cdef public object locks_generation
    cdef public object audit_parts
    cdef public object catalog_entry


@cython.locals(pool=ClusterPool, entry=tuple)
cpdef Http1Upstream usable(object fwd, object conn, Plan plan)


cdef class FastExchange:
    cdef public object fwd
    cdef public object conn
    cdef public Plan plan
    cdef public object raw
    cdef public object identity
    cdef public object cluster
    cdef public object verdict
    cdef public object request_id
    cdef public double started
    cdef public object status
    cdef public object bytes_out
    cdef public Http1Upstream upstream
    cdef public bint finished
    cdef public double head_seconds
    cdef public object sid
    cdef public bint _done
    cdef public object _head
    cdef public bint _chunked
    cdef public object _length
    cdef public bint _written
    cdef public object _stop_reason
    cdef public object _stall_timer
    cdef public object _drainer

    cpdef raw_head(self, object data)
    cpdef on_head(self, object status, object headers)
    cpdef _send_head(self, object status, object fields)
    cpdef on_data(self, object data)
    cpdef on_done(self)
    cpdef on_error(self, object error)
    cpdef on_reset(self)
    cpdef stop(self, object reason, object code=*)
    cpdef head_timed_out(self)
    cpdef _status_answer(self, object code, object message)
    cpdef _answer(self, object code, object message)
    cpdef _replay(self)
    cpdef _cut_answer(self)
    cpdef _abandon(self)
    cpdef _forget_client(self)
    @cython.locals(plan=Plan)
    cpdef _finish(self)


cdef class CodecFastExchange(FastExchange):
    cdef public object key
    cdef public object request
    cdef public object _block

    cpdef raw_head(self, object data)
    cpdef _send_relayed_head(self, bint end=*)
    cpdef _send_head(self, object status, object fields)
    cpdef on_data(self, object data)
    cpdef on_done(self)
    cpdef _cut_answer(self)
    cpdef _answer(self, object code, object message)
    cpdef _replay(self)
    cpdef _forget_client(self)
