"""The connection edge: how long a client may take to send its request head, and how many may connect.

uvicorn closes a kept-alive connection that stays idle after a response (``timeout_keep_alive``), but
nothing else: a client that connects and sends nothing, or sends its headers a byte at a time
(slowloris), holds its socket for ever, and enough of them exhaust the process's file descriptors,
after which every new client gets an empty reply. Its ``limit_concurrency`` does not help: it answers
503 only once a request head is complete, so idle sockets past the limit still hold descriptors.

``guarded_protocol(limits)`` is uvicorn's httptools protocol with three additions:

- **a deadline for the request head**, from the connection's first moment (or, on a kept-alive
  connection, from the first byte of the next request): past it the client gets ``408`` and is closed;
- **a size limit for the request head** (Go's ``http.DefaultMaxHeaderBytes``, 1 MiB): ``431``;
- **a cap on open connections**: a connection over it is answered ``503`` at once, before its request
  is read, and closed (after a second's linger for the answer to arrive, unless as many as the cap
  linger already), so the descriptors in use stay bounded and new clients get a clear answer.

``raise_open_file_limit()`` lifts the soft ``RLIMIT_NOFILE`` to the hard one at server start (the
soft limit is often 1024; the server needs one descriptor per connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

try:  # POSIX
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = [
    "SYNC_WRITE",
    "ChunkWriter",
    "ConnectionLimits",
    "SocketSink",
    "guarded_protocol",
    "raise_open_file_limit",
    "uvicorn_config",
]

log = logging.getLogger(__name__)

SYNC_WRITE = "nbllm.write"
"""The scope's key for a plain function that writes a chunk of the response body now (``_chunk_writer``):
a token's line written from the event loop's wake-up for it, no coroutine (``server.feed.Feed.attach``)."""
MAX_HEAD_BYTES = 1 << 20
"""Largest request head (request line and headers) in bytes, as Go's net/http allows."""
KEEP_ALIVE_TIMEOUT = 5
"""Seconds a kept-alive connection may stay idle between requests (uvicorn's default)."""
_LINGER = 1.0
"""Seconds a refused connection is kept open for its 503 to reach the client (closing a socket with
unread request bytes sends a reset, which may discard the answer before the client reads it)."""
_FD_RESERVE = 256
"""Descriptors kept for everything but client connections (model files, blobs, the store, logs)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The edge's limits: a request head's deadline in seconds, and the most open connections."""

    head_timeout: float
    max_connections: int


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass
class _Refusals:
    """The refused connections of one server: how many are lingering, when the last warning was logged."""

    lingering: int = 0
    warned_at: float = -math.inf


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, a head size limit and a connection cap."""

    limits: ConnectionLimits = ConnectionLimits(head_timeout=10.0, max_connections=4096)
    refusals: _Refusals = _Refusals()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse a connection over the cap at once; start the clock for the first request's head."""
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse()
            return
        self._arm_head()

    def _refuse(self) -> None:
        """Answer 503 and close; the socket lingers a moment unless as many as the cap already do."""
        self.connections.discard(self)
        self._refused = True
        limit, refusals = self.limits.max_connections, self.refusals
        if self.loop.time() - refusals.warned_at > 1.0:  # (one line a second in a flood)
            refusals.warned_at = self.loop.time()
            log.warning("refusing connections: %d are open, the limit (NBLLM_MAX_CONNECTIONS)", limit)
        message = f"server busy: too many open connections (the limit is {limit}; raise NBLLM_MAX_CONNECTIONS)"
        self.transport.write(_raw_response(503, "Service Unavailable", message))
        if refusals.lingering >= limit or not self.transport.can_write_eof():
            self.transport.close()  # descriptors stay bounded: at most the cap again, lingering
            return
        self.transport.write_eof()
        refusals.lingering += 1
        self._lingering = True
        self.loop.call_later(_LINGER, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the head's timer with the connection."""
        if self._lingering:
            self._lingering = False
            self.refusals.lingering -= 1
        self._disarm_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the bytes of a request head under way; a refused connection's are dropped."""
        if self._refused:
            return
        if self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._reject(431, "Request Header Fields Too Large", f"request head over {MAX_HEAD_BYTES} bytes")
                return
        super().data_received(data)

    def eof_received(self) -> None:
        """A refused client that hung up is closed now, not after the linger."""
        if self._refused:
            self.transport.close()

    def on_message_begin(self) -> None:
        """A request starts: on a kept-alive connection, the clock for its head starts now."""
        super().on_message_begin()
        self._arm_head()

    def on_headers_complete(self) -> None:
        """The head is in: the deadline no longer applies (bodies and responses take what they take). The
        request's scope gets its ``SYNC_WRITE``."""
        self._disarm_head()
        super().on_headers_complete()
        cast("dict[str, Any]", self.scope)[SYNC_WRITE] = _chunk_writer(self.cycle)  # (an extension key)

    def _arm_head(self) -> None:
        if self._head_timer is None and math.isfinite(self.limits.head_timeout):
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        seconds = self.limits.head_timeout
        self._reject(408, "Request Timeout", f"request head not received within {seconds:g}s")

    def _reject(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` (unless a response is under way on this connection) and close."""
        self._disarm_head()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_raw_response(status, reason, message))
        self.transport.close()


_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
"""``send``'s flag that turns a write to a closed connection into ``EPIPE`` alone (Linux; Python ignores
``SIGPIPE`` itself at start, but a process that embeds it may not)."""


def _framed(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk, as uvicorn frames it."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class SocketSink:
    """A response's HTTP/1.1 chunks written by another thread straight to the connection's socket, without
    waiting (``server.feed``: the decode thread, while the event loop writes nothing to that connection).

    It writes through a descriptor of its own (``os.dup``): the connection's descriptor is closed by the event
    loop when the client leaves, and its number may then be given to another connection at once; this one
    stays this socket's until ``close``. The socket is non-blocking (the flag is the socket's, shared by both
    descriptors), so a full socket buffer returns what it did not take instead of waiting."""

    __slots__ = ("_sock",)

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)  # (no timeout set: the descriptor's non-blocking flag stands)

    def write(self, body: bytes) -> bytes:
        """Write ``body`` as one chunk; the framed bytes the socket did not take (empty: all of them). Raises
        ``OSError`` when the connection is gone (``EPIPE``, ``ECONNRESET``; never a ``SIGPIPE``, even in a
        process that did not ignore it)."""
        frame = _framed(body)
        try:
            sent = self._sock.send(frame, _NO_SIGNAL)
        except BlockingIOError:
            return frame
        return frame[sent:]

    def close(self) -> None:
        """Let go of the descriptor (the connection itself is the event loop's)."""
        self._sock.close()


class ChunkWriter:
    """``SYNC_WRITE`` for a request's ``RequestResponseCycle``: its ``send`` of one body chunk, less the ``await``.

    Called, it writes only when that ``send`` would write at once -- the response started with chunked encoding
    and not ended, the client connected and reading (uvicorn's flow control not paused) -- and says False
    otherwise, for the caller to ``await send`` instead (which waits for the client, or drops the chunk of a
    client that left). The framing is HTTP/1.1's chunk (``_framed``). ``sink`` hands another thread a
    way to write the response's chunks itself (``SocketSink``)."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    def _open(self) -> bool:
        cycle = self._cycle
        return not (
            cycle.flow.write_paused
            or cycle.disconnected
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
        )

    def __call__(self, body: bytes) -> bool:
        if not self._open():
            return False
        self._cycle.transport.write(_framed(body))
        return True

    def idle(self) -> bool:
        """A chunk written now would go out at once, and nothing waits in the transport's buffer before it."""
        return self._open() and not self._cycle.transport.get_write_buffer_size()

    def sink(self) -> SocketSink | None:
        """A ``SocketSink`` for the connection's socket, or None where its bytes may not go to the socket as they
        are (TLS) or there is none to write to (a transport without one; not POSIX)."""
        transport = self._cycle.transport
        sock = transport.get_extra_info("socket")
        if os.name != "posix" or sock is None or transport.get_extra_info("sslcontext") is not None:
            return None
        if not self.idle():
            return None
        try:
            return SocketSink(os.dup(sock.fileno()))
        except OSError:  # (out of descriptors: the event loop writes, as it would anyway)
            return None

    def spill(self, data: bytes) -> None:
        """Framed bytes a ``SocketSink`` could not write, written on the event loop before anything else comes
        (the transport keeps what the socket cannot take yet); dropped once the response ended or the client
        left, as ``send`` drops them."""
        cycle = self._cycle
        if not (cycle.disconnected or cycle.response_complete):
            cycle.transport.write(data)


def _chunk_writer(cycle: Any) -> ChunkWriter:
    """``SYNC_WRITE`` for a request's cycle (a function: tests wrap what it makes)."""
    return ChunkWriter(cycle)


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's ``http=`` setting, with these limits."""
    return type("GuardedProtocol", (_GuardedProtocol,), {"limits": limits, "refusals": _Refusals()})


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one; return the soft limit now in force."""
    if resource is None:  # pragma: no cover - Windows
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # macOS caps it below an "unlimited" hard limit
            log.debug("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


def uvicorn_config(app: Any, *, head_timeout: float, max_connections: int, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's configuration for nbllm's server: the guarded protocol, under the open-file limit."""
    files = raise_open_file_limit()
    cap = max(1, min(max_connections, (files - _FD_RESERVE) // 2))  # (refused ones may linger: up to as many)
    if cap < max_connections:
        log.warning("NBLLM_MAX_CONNECTIONS=%d lowered to %d: the open-file limit is %d", max_connections, cap, files)
    protocol = guarded_protocol(ConnectionLimits(head_timeout=head_timeout, max_connections=cap))
    return uvicorn.Config(app, http=protocol, timeout_keep_alive=KEEP_ALIVE_TIMEOUT, **kwargs)
