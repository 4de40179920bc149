# C declarations for http2.py, compiled by Cython in pure-Python mode (setup.py); the .py stays the
# one source and runs as it is where no compiled module was built. The codec's classes become extension
# types with typed attributes (read by C offset instead of a slot lookup); windows, sizes, positions and
# counters are C integers (all bounded: windows by 2^31 plus one increment, frame sizes by 2^24);
# stream ids stay Python ints (they are dict keys). Methods the class alone calls are cdef (not
# reachable from Python once compiled); the ServerConnection methods stay Python-callable.
cimport cython

# h2wire's numbers (frame types, flags, error codes, settings, limits), imported as C integers
cdef Py_ssize_t ACK, CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_MAX_FRAME, DEFAULT_WINDOW
cdef Py_ssize_t ENABLE_CONNECT_PROTOCOL, ENABLE_PUSH, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM
cdef Py_ssize_t FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, HEADERS, INITIAL_WINDOW_SIZE
cdef Py_ssize_t MAX_CONCURRENT_STREAMS, MAX_FRAME_CEILING, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE
cdef Py_ssize_t MAX_WINDOW, NO_ERROR, PADDED, PING, PRIORITY, PRIORITY_FLAG, PROTOCOL_ERROR
cdef Py_ssize_t PUSH_PROMISE, REFUSED_STREAM, RST_STREAM, SETTINGS, STREAM_CLOSED, WINDOW_UPDATE
cdef Py_ssize_t _MAX_CONTINUATIONS
cdef Py_ssize_t _MAX_RESET_MEMORY
cdef Py_ssize_t _MEMO_MAX
cdef Py_ssize_t _MEMO_BLOCK_MAX


cdef class _Out:
    cdef public list chunks
    cdef public Py_ssize_t size
    cdef public bint end


cdef class _Stream:
    cdef public object sid
    cdef public Py_ssize_t recv_window
    cdef public Py_ssize_t recv_owed
    cdef public Py_ssize_t send_window
    cdef public bint remote_ended
    cdef public bint local_ended
    cdef public object expected
    cdef public Py_ssize_t received
    cdef public _Out held


cdef class Http2ServerConnection:
    cdef object _limits
    cdef Py_ssize_t _max_head
    cdef object _decoder
    cdef Py_ssize_t _max_block
    cdef dict _memo
    cdef Py_ssize_t _max_streams
    cdef Py_ssize_t _window
    cdef Py_ssize_t _stream_recv_initial
    cdef Py_ssize_t _conn_max
    cdef Py_ssize_t _recv_window
    cdef Py_ssize_t _recv_owed
    cdef Py_ssize_t _send_window
    cdef Py_ssize_t _peer_initial
    cdef Py_ssize_t _max_send_frame
    cdef dict _streams
    cdef dict _holding
    cdef dict _reset_by_us
    cdef object _highest
    cdef object _buf
    cdef bint _preface
    cdef bint _settings_seen
    cdef list _block
    cdef object _block_sid
    cdef Py_ssize_t _block_flags
    cdef bint _block_bad_priority
    cdef Py_ssize_t _block_size
    cdef bint _goaway_sent
    cdef bint _must_close
    cdef bint _terminated
    cdef object _max_body
    cdef Py_ssize_t _reset_quantum
    cdef Py_ssize_t _control_quantum
    cdef Py_ssize_t _resets
    cdef Py_ssize_t _pings
    cdef Py_ssize_t _settings
    cdef list _out

    @cython.locals(pos=Py_ssize_t, end=Py_ssize_t, high=Py_ssize_t, low=Py_ssize_t, kind=Py_ssize_t,
                   flags=Py_ssize_t, length=Py_ssize_t, stop=Py_ssize_t, start=Py_ssize_t, out=list)
    cpdef list receive_data(self, object data)

    @cython.locals(start=Py_ssize_t, stop=Py_ssize_t, bad_priority=bint)
    cdef _headers(self, object sid, Py_ssize_t flags, object payload, list out)

    cdef _continuation(self, Py_ssize_t flags, object payload, list out)
    cdef list _decode(self, object block)

    @cython.locals(stream=_Stream, end_stream=bint)
    cdef _header_block(self, object sid, Py_ssize_t flags, object block, bint bad_priority, list out)

    cdef _refuse_head(self, object sid, bint end_stream, object refusal, list out)

    @cython.locals(expected=object)
    cdef _trailers(self, _Stream stream, Py_ssize_t flags, object fields, list out)

    @cython.locals(size=Py_ssize_t, received=Py_ssize_t, end=Py_ssize_t, stream=_Stream)
    cdef _data(self, object sid, Py_ssize_t flags, object payload, list out)

    cdef _remote_end(self, _Stream stream, list out)

    @cython.locals(stream=_Stream)
    cdef _window_update(self, object sid, Py_ssize_t increment, list out)

    @cython.locals(size=Py_ssize_t, offset=Py_ssize_t, stream=_Stream, window_changed=bint)
    cdef _on_settings(self, object sid, Py_ssize_t flags, object payload, list out)

    cdef _ping(self, object sid, Py_ssize_t flags, object payload, list out)

    @cython.locals(stream=_Stream)
    cdef _rst_stream(self, object sid, object code, list out)

    @cython.locals(stream=_Stream)
    cdef _priority(self, object sid, object payload, list out)

    cdef _on_goaway(self, object sid, object payload, list out)
    cdef _closed_stream(self, object sid, list out)
    cdef _stream_error(self, _Stream stream, object code, list out)
    cdef _count_reset(self, list out)

    @cython.locals(owed=Py_ssize_t)
    cdef _credit(self, Py_ssize_t nbytes, _Stream stream=*)

    cdef _reset(self, object sid, object code)

    @cython.locals(window=Py_ssize_t)
    cdef _answer(self, object sid, bint peer_ended, object status, object message)

    cdef list _connection_error(self, object code, object message)

    @cython.locals(stream=_Stream)
    cdef _Stream _sendable(self, object sid)

    @cython.locals(size=Py_ssize_t, flag=Py_ssize_t, window=Py_ssize_t, max_frame=Py_ssize_t,
                   total=Py_ssize_t, pos=Py_ssize_t, n=Py_ssize_t, last=Py_ssize_t)
    cdef Py_ssize_t _write(self, _Stream stream, object data, bint end_stream) except -1

    @cython.locals(stream=_Stream, held=_Out, sent=Py_ssize_t, last=bint)
    cdef _flush_held(self, object sid, list out)

    cdef _send_block(self, _Stream stream, object block, bint end_stream)
    cdef _local_end(self, _Stream stream)

    @cython.locals(stream=_Stream)
    cdef _Stream _remove(self, object sid)

    cdef _closed_app_stream(self)
    cdef bint _responding(self) except -1

    # ServerConnection methods without keyword-only arguments (cpdef takes none): typed locals
    @cython.locals(stream=_Stream)
    cpdef send_end(self, object stream_id)

    @cython.locals(stream=_Stream)
    cpdef reset_stream(self, object stream_id, object error_code=*)

    cpdef acknowledge_received(self, object stream_id, object nbytes)

    @cython.locals(stream=_Stream)
    cpdef send_window(self, object stream_id)

    cpdef data_to_send(self)
